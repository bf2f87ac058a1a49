"""``python -m elf_eqx.sample``: draw text from a trained or released ELF (or a baseline run of ours).

    python -m elf_eqx.sample runs/quickstart                                  # a training run (latest EMA)
    python -m elf_eqx.sample embedded-language-flows/ELF-B-owt --preset owt_sde32 --num-samples 64
    python -m elf_eqx.sample runs/wmt --input ../shared/data/kjv/next_verse_valid.jsonl --cfg-weight 2
    python -m elf_eqx.sample runs/wmt --prompt "Ein kleiner Test." --prompt "Noch einer."

Prints the samples and writes them, with every setting, to a JSONL file (see
:mod:`elf_eqx.sampling.records`). The same seed and settings give the same samples.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jax

from elf_eqx.aot.cli import print_dry_run
from elf_eqx.aot.dry_run import dry_run_sample
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.families import ELF_FAMILY, Family
from elf_eqx.errors import ConfigError
from elf_eqx.observe.profiler import traced
from elf_eqx.parallel.supervisor import launch
from elf_eqx.sampling.config import SampleConfig, parse_sample_config
from elf_eqx.sampling.records import ConditionInput, check_writable, read_condition_inputs, write_samples_jsonl
from elf_eqx.sampling.settings_base import SamplerSettingsBase
from elf_eqx.sampling.text import TextSampler

DEFAULT_UNCONDITIONAL_SAMPLES = 8


def default_output(cfg: SampleConfig, settings: SamplerSettingsBase, family: Family = ELF_FAMILY) -> Path:
    """``samples/<source>-<method><steps>-w<omega>-seed<seed>.jsonl`` under the working directory
    (``mdlm<steps>``, ``ar`` for the baselines): ``family``'s tag of its ``settings``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.source.rstrip("/")).strip("_.") or "model"
    return Path("samples") / f"{name[-80:]}-{family.sample_tag(settings)}-seed{cfg.draw.seed}.jsonl"


def require_source(cfg: SampleConfig) -> None:
    """A one-line error when no model source is given."""
    if not cfg.source:
        raise ConfigError("give the model source: a training output directory, a checkpoint, or a hub id")


def sample(cfg: SampleConfig) -> tuple[Any, list[dict[str, Any]]]:
    """Draw the samples ``cfg`` describes, write them to the output JSONL (process 0) and return
    its path and the records."""
    require_source(cfg)
    load, draw, given = cfg.load, cfg.draw, cfg.inputs
    inputs = read_condition_inputs(given.input) if given.input else [ConditionInput(p) for p in given.prompt]
    if inputs and draw.num_samples is not None:
        inputs = inputs[: draw.num_samples]
    session = TextSampler.open(
        cfg.source, weights=load.weights, step=load.step, encoder=load.encoder, tokenizer=load.tokenizer,
        task=load.task, compute_dtype=load.compute_dtype, length=draw.length, mesh=cfg.mesh.config,
        revision=load.revision,
    )
    settings = cfg.settings(session.bundle.sampling)
    output = check_writable(cfg.out.output or default_output(cfg, settings, session.bundle.family), cfg.out.overwrite)
    with traced(cfg.profile.profile_dir, "the sampling call", all_processes=cfg.profile.profile_all_processes):
        records = session.draw(
            settings, seed=draw.seed, batch_size=draw.batch_size,
            num_samples=draw.num_samples or DEFAULT_UNCONDITIONAL_SAMPLES, inputs=inputs or None,
            extra_settings={"weights": load.weights, "source": cfg.source},
        )
    if jax.process_index() == 0:
        write_samples_jsonl(output, records)
    return output, records


def print_samples(records: list[dict[str, Any]]) -> None:
    """``[i] text`` per sample (``input:``/``output:`` lines for conditional samples)."""
    for r in records:
        head = f"[{r['index']}]"
        if "input" in r:
            print(f"{head} input:  {r['input']}\n{' ' * len(head)} output: {r['text']}")
        else:
            print(f"{head} {r['text']}")


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry: parse flags, sample, print; expected failures end as one line (exit 2, see
    :mod:`elf_eqx.cli.errors`; ``--debug`` shows the traceback)."""
    with flag_errors():
        cfg = parse_sample_config(argv)
    if cfg.plan.dry_run:
        require_source(cfg)
        print_dry_run(cfg.plan, lambda: dry_run_sample(cfg, cfg.plan.target, max_batch=cfg.plan.max_batch))
        return
    launch("elf_eqx.sample", argv, lambda: sample_and_print(cfg), flags=cfg.processes, preemption=False)


def sample_and_print(cfg: SampleConfig) -> None:
    """Sample, write the file (process 0) and print the samples and where they went (process 0)."""
    output, records = sample(cfg)
    if jax.process_index() == 0:
        if not cfg.out.quiet:
            print_samples(records)
        print(f"wrote {len(records)} samples to {output}")


if __name__ == "__main__":
    main()
