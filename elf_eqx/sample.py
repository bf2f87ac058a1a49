"""``python -m elf_eqx.sample``: draw text from a trained or released ELF.

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

from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.parallel.mesh import MeshConfig
from elf_eqx.release.model_source import ModelBundle
from elf_eqx.sampling.config import SampleConfig, parse_sample_config
from elf_eqx.sampling.records import ConditionInput, check_writable, read_condition_inputs, write_samples_jsonl
from elf_eqx.sampling.text import TextSampler

DEFAULT_UNCONDITIONAL_SAMPLES = 8


def sampler_settings(cfg: SampleConfig, bundle: ModelBundle) -> dict[str, Any]:
    """The sampler's settings: flags (and presets) over the source's own defaults."""
    own = bundle.sampling
    return {
        "method": cfg.method or own.get("method", "sde"),
        "num_steps": cfg.steps or own.get("num_steps", 32),
        "gamma": own.get("gamma", 1.5) if cfg.gamma is None else cfg.gamma,
        "omega": own.get("omega", 3.0) if cfg.omega is None else cfg.omega,
        "cfg_weight": own.get("cfg_weight", 1.0) if cfg.cfg_weight is None else cfg.cfg_weight,
        "time_grid": cfg.time_grid or own.get("time_grid", "logit_normal"),
        "self_condition": cfg.self_condition,
    }


def default_output(cfg: SampleConfig, settings: dict[str, Any]) -> Path:
    """``samples/<source>-<method><steps>-w<omega>-seed<seed>.jsonl`` under the working directory."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.source.rstrip("/")).strip("_.") or "model"
    tag = f"{settings['method']}{settings['num_steps']}-w{settings['omega']:g}-seed{cfg.seed}"
    return Path("samples") / f"{name[-80:]}-{tag}.jsonl"


def sample(cfg: SampleConfig) -> tuple[Path, list[dict[str, Any]]]:
    """Draw the samples ``cfg`` describes, write them to the output JSONL (process 0) and return
    its path and the records."""
    if not cfg.source:
        raise ValueError("give the model source: a training output directory, a checkpoint, or a hub id")
    inputs = read_condition_inputs(cfg.input) if cfg.input else [ConditionInput(p) for p in cfg.prompt]
    if inputs and cfg.num_samples is not None:
        inputs = inputs[: cfg.num_samples]
    session = TextSampler.open(
        cfg.source, weights=cfg.weights, step=cfg.step, encoder=cfg.encoder, tokenizer=cfg.tokenizer,
        task=cfg.task, compute_dtype=cfg.compute_dtype, length=cfg.length,
        mesh=MeshConfig(cfg.mesh_data, cfg.mesh_fsdp, cfg.mesh_tensor),
    )
    settings = sampler_settings(cfg, session.bundle)
    output = check_writable(cfg.output or default_output(cfg, settings), cfg.overwrite)
    records = session.draw(
        settings, seed=cfg.seed, batch_size=cfg.batch_size,
        num_samples=cfg.num_samples or DEFAULT_UNCONDITIONAL_SAMPLES, inputs=inputs or None,
        extra_settings={"weights": cfg.weights, "source": cfg.source},
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
    output, records = sample(cfg)
    if jax.process_index() == 0:
        if not cfg.quiet:
            print_samples(records)
        print(f"wrote {len(records)} samples to {output}")


if __name__ == "__main__":
    main()
