"""BLEU and ROUGE of conditional models (ELF with classifier-free guidance, MDLM, AR) against
sampling steps and CFG weight, on the {input, output} pairs of a JSONL file: the conditional
counterpart of ``steps_vs_ppl.py`` (docs/method.md#sampling, #metrics, #baselines).

    python benchmarks/conditional_scores.py runs/nv_elf runs/nv_mdlm runs/nv_ar --names ELF MDLM AR \
        --inputs ../shared/data/kjv/next_verse_valid.jsonl --num-inputs 256 --steps 16 32 --cfg-weights 1 2

Every model draws one output per input, under each sampler setting (ELF: samplers × ω × CFG
weight × steps; MDLM: ancestral sampling at each step count; AR: one), scored against the inputs'
``output`` fields. A first row scores the inputs themselves as outputs ("input copied"), the
figure a model must beat to have learnt more than to repeat its condition. Writes to
``--output-dir``: ``conditional_scores.md`` (the table and the models' training compute),
``conditional_scores.csv``, ``sweep.json`` and every configuration's samples under ``samples/``
(``python -m elf_eqx.eval`` reads them).
"""

from __future__ import annotations

import csv
import dataclasses
import io

import tyro

from elf_eqx.io.storage import local_path
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.errors import ConfigError, DataError
from elf_eqx.evaluate import evaluate_conditional
from elf_eqx.io.atomic import refuse_existing, write_json_atomic, write_text_atomic
from elf_eqx.sampling.records import read_condition_inputs, write_samples_jsonl
from elf_eqx.sampling.sweep import (CfgWeights, Methods, Omegas, StepCounts, SweepOptions, compute_table, model_compute,
                                    model_entry, model_names, nfe_cell, open_models, sampler_columns, sweep_settings)

RESULT_FILES = ("conditional_scores.md", "conditional_scores.csv", "sweep.json")
FIELDS = ["model", "family", "sampler", "cfg_weight", "steps", "nfe", "nfe_used", "bleu", "rouge1", "rouge2", "rougeL",
          "mean_words", "num_samples", "train_steps", "tokens", "train_flops"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoresConfig(SweepOptions):
    """Score conditional models' outputs against references, over sampler settings and CFG weights."""

    sources: tyro.conf.Positional[tuple[str, ...]]
    """Training output directories of conditional runs (ELF, MDLM or AR), checkpoints, or hub ids."""
    inputs: str
    """JSONL of {"input", "output"} records: the conditions and their reference outputs."""
    num_inputs: int | None = None
    """Use only the first N records of --inputs (default: all)."""
    # The released conditional tasks sample with ODE, ω 1 and CFG weight 2.
    steps: StepCounts = (16, 32, 64)
    methods: Methods = ("ode",)
    omegas: Omegas = (1.0,)
    cfg_weights: CfgWeights = (1.0, 2.0)
    output_dir: str = "runs/conditional_scores"
    """Where the table, CSV and samples go."""


def mean_words(texts: list[str]) -> float:
    """Mean number of whitespace-separated words per text."""
    return sum(len(t.split()) for t in texts) / max(len(texts), 1)


def markdown_table(rows: list[dict], models: list[dict]) -> str:
    """The scores as a markdown table (the "input copied" row first), then the models' compute."""
    lines = ["| model | sampler | steps | NFE | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L | words | samples |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {nfe_cell(r)} | {r['bleu']:.2f} | {r['rouge1']:.2f} | "
                     f"{r['rouge2']:.2f} | {r['rougeL']:.2f} | {r['mean_words']:.1f} | {r['num_samples']} |")
    return "\n".join(lines + ["", *compute_table(models, judge=False)]) + "\n"


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def score(cfg: ScoresConfig) -> list[dict]:
    """Draw and score every model × configuration, write the result files, return the rows."""
    out = local_path(cfg.output_dir, "--output-dir")
    for name in RESULT_FILES:
        refuse_existing(out / name, cfg.overwrite, other="--output-dir")
    names = model_names(cfg.sources, cfg.names)
    if cfg.num_inputs is not None and cfg.num_inputs < 1:
        raise ConfigError(f"--num-inputs must be positive, got {cfg.num_inputs}")
    inputs = read_condition_inputs(cfg.inputs)[: cfg.num_inputs]
    if not inputs:
        raise DataError(f"--inputs {cfg.inputs}: no records")
    missing = sum(i.reference is None for i in inputs)
    if missing:
        raise DataError(f"--inputs {cfg.inputs}: {missing} of {len(inputs)} records have no \"output\" "
                        "to score against")
    references = [i.reference for i in inputs]
    sessions = open_models(cfg.sources, cfg, conditional=True, hint="score it with benchmarks/steps_vs_ppl.py")
    copied = [i.text for i in inputs]
    rows = [{"model": "—", "family": "", "sampler": "input copied", "cfg_weight": "", "steps": "—", "nfe": 0,
             **evaluate_conditional(copied, references), "mean_words": mean_words(copied)}]
    models = []
    for name, source, session in zip(names, cfg.sources, sessions):
        family = session.bundle.family
        compute = model_compute(session, source)
        models.append(model_entry(name, session, compute))
        for setting in sweep_settings(session, cfg, cfg.cfg_weights):
            records = session.draw(setting, seed=cfg.seed, batch_size=cfg.batch_size, inputs=inputs,
                                   extra_settings={"source": source, "weights": cfg.weights}, progress=False)
            write_samples_jsonl(out / "samples" / f"{name}-{family.sweep_file_stem(setting)}.jsonl", records)
            texts = [r["text"] for r in records]
            row = {**sampler_columns(name, setting, session, records), **evaluate_conditional(texts, references),
                   "mean_words": mean_words(texts), **compute}
            rows.append(row)
            print(f"{name:>8} {row['sampler']:>24} {row['steps']:>4} steps: BLEU {row['bleu']:6.2f}  "
                  f"ROUGE-L {row['rougeL']:6.2f}")
    write_text_atomic(out / "conditional_scores.md", markdown_table(rows, models))
    write_text_atomic(out / "conditional_scores.csv", csv_text(rows))
    write_json_atomic(out / "sweep.json", {"config": dataclasses.asdict(cfg), "models": models, "rows": rows})
    return rows


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry; expected failures end as one line (exit 2, see :mod:`elf_eqx.cli.errors`)."""
    with flag_errors():
        cfg = tyro.cli(ScoresConfig, args=argv)
    score(cfg)
    print((local_path(cfg.output_dir, "--output-dir") / "conditional_scores.md").read_text())
    print(f"wrote {', '.join(RESULT_FILES)} and samples/ to {cfg.output_dir}")


if __name__ == "__main__":
    main()
