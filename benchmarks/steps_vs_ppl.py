"""Sample quality against sampling steps or network evaluations: Gen. PPL and entropy of one or
more checkpoints, swept over steps (or NFE budgets) × sampler (ELF: ODE; SDE with churn γ and its
noise; Euler, Heun or DPM2M steps; × SC-CFG scale ω. MDLM: ancestral sampling. AR: one point,
NFE = length) (docs/method.md#sampling, #metrics, #baselines).

    python benchmarks/steps_vs_ppl.py runs/kjv --judge runs/kjv_judge --reference-data ../shared/data/kjv/valid.jsonl
    python benchmarks/steps_vs_ppl.py embedded-language-flows/ELF-B-owt --num-samples 1000 --reference-data owt_valid.jsonl
    python benchmarks/steps_vs_ppl.py runs/kjv --judge runs/kjv_judge --nfe 4 8 16 32 64 --solvers euler heun dpm2m \
        --sde-noises reference consistent --time-grid logit_normal_quantile
    python benchmarks/steps_vs_ppl.py runs/kjv_elf runs/kjv_mdlm runs/kjv_ar --names ELF MDLM AR --judge runs/kjv_judge

Writes to ``--output-dir``: ``steps_vs_ppl.md`` (a markdown table), ``steps_vs_ppl.csv``,
``steps_vs_ppl.png`` (Gen. PPL and entropy against steps, the judge's figures on held-out real
text as the reference line), ``ppl_vs_nfe.png`` (the same against network evaluations),
``ppl_vs_entropy.png`` (the quality/diversity frontier, real text as a star) and every
configuration's samples as JSONL under ``samples/`` (``python -m elf_eqx.eval`` reads them).
With ``--nfe`` each sampler gets, per budget, the most steps whose NFE fit it. For our training
runs the table also states each model's training compute (steps, tokens, analytic FLOPs of
:mod:`elf_eqx.flops`). The held-out reference text is decoded with the first source's tokenizer.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Literal

import tyro

from elf_eqx.io.storage import local_path
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.data import load_source
from elf_eqx.errors import ConfigError, DataError
from elf_eqx.evaluate.judge import load_judge, load_judge_tokenizer
from elf_eqx.evaluate import evaluate_unconditional
from elf_eqx.io.atomic import refuse_existing, staged_file, write_json_atomic, write_text_atomic
from elf_eqx.sampling.records import write_samples_jsonl
from elf_eqx.sampling.text import TextSampler
from elf_eqx.sampling.sweep import (SweepOptions, compute_table, model_compute, model_entry, sweep_settings,
                                    model_names, nfe_cell, open_models, sampler_columns)

RESULT_FILES = ("steps_vs_ppl.md", "steps_vs_ppl.csv", "steps_vs_ppl.png", "ppl_vs_nfe.png", "ppl_vs_entropy.png")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig(SweepOptions):
    """Sweep sampling steps × sampler × ω for unconditional checkpoints; score with a GPT-2 judge."""

    sources: tyro.conf.Positional[tuple[str, ...]]
    """Training output directories (ELF, MDLM or AR runs), checkpoints, or hub ids org/repo[/subpath]
    (as for elf_eqx.sample); unconditional models."""
    judge: str = "openai-community/gpt2-large"
    """GPT-2-family judge: hub id or a local folder (benchmarks/train_judge.py makes one offline)."""
    reference_data: str | None = None
    """Held-out real text (.jsonl with "text", .txt, folder, save_to_disk, hub id): its judge
    Gen. PPL and entropy, on pieces as long as the samples, are the plot's reference line."""
    reference_split: str = "validation"
    """Split of a hub or DatasetDict reference dataset."""
    num_samples: int = 1000
    """Samples per configuration (the paper uses 1,000)."""
    length: int | None = None
    """Sample length L (default: the model's training length)."""
    judge_batch_size: int = 16
    """Texts per judge call."""
    judge_dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the judge."""
    append_eos: bool = True
    """Score the EOS after each text (the Gen. PPL convention; see elf_eqx.evaluate)."""
    output_dir: str = "runs/steps_vs_ppl"
    """Where the table, CSV, plot and samples go."""


def reference_texts(session: TextSampler, source: str, split: str, count: int) -> list[str]:
    """Up to ``count`` held-out pieces of ``session.spec.max_length`` model tokens each, decoded with
    the model's tokenizer: real text normalised exactly as the samples are (case, spacing)."""
    loaded = load_source(source, split)
    if loaded.kind != "text":
        raise DataError(f"--reference-data {source}: needs plain text records (a 'text' field), got {loaded.kind}")
    length, tok = session.spec.max_length, session.tokenizer
    texts: list[str] = []
    for document in loaded.dataset["text"]:
        ids = tok(document, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - length + 1, length):
            texts.append(tok.decode(ids[start : start + length], skip_special_tokens=True))
            if len(texts) == count:
                return texts
    if not texts:
        raise DataError(f"--reference-data {source}: no document has {length} tokens")
    return texts


def markdown_table(rows: list[dict], reference: dict | None, models: list[dict] | None = None) -> str:
    """The results as a markdown table, the reference text last; with several models a first
    column names each row's model, and ``models`` (their training compute) comes as a second table."""
    several = len({r.get("model", "") for r in rows}) > 1
    head = "| model " if several else ""
    lines = [f"{head}| sampler | steps | NFE | Gen. PPL ↓ | entropy | samples |",
             f"{'|---' if several else ''}|---|---|---|---|---|---|"]
    for r in rows:
        first = f"| {r['model']} " if several else ""
        lines.append(f"{first}| {r['sampler']} | {r['steps']} | {nfe_cell(r)} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} | "
                     f"{r['num_samples']} |")
    if reference is not None:
        first = "| — " if several else ""
        lines.append(f"{first}| held-out real text | — | — | {reference['gen_ppl']:.2f} | {reference['entropy']:.3f} | "
                     f"{reference['num_samples']} |")
    if models:
        lines += ["", *compute_table(models)]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], reference: dict | None) -> str:
    """The results as CSV (the reference text as a row with sampler ``reference``)."""
    buffer = io.StringIO()
    fields = ["model", "family", "sampler", "method", "solver", "sde_noise", "gamma", "omega", "steps", "nfe",
              "nfe_used", "gen_ppl", "entropy", "num_samples", "num_empty", "train_steps", "tokens", "train_flops"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    if reference is not None:
        writer.writerow({"sampler": "reference", **reference})
    return buffer.getvalue()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit("the plot needs matplotlib: pip install 'elf_eqx[bench]'") from err
    return plt


def _save(plt, fig, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with staged_file(path) as partial:
            fig.savefig(partial, dpi=120)
    finally:
        plt.close(fig)


def plot(rows: list[dict], reference: dict | None, path: Path, title: str, x: str = "steps") -> None:
    """Gen. PPL and entropy against ``x`` (``steps`` or ``nfe``), one curve per sampler, the
    reference as a dashed line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["curve"] for r in rows):
        mine = [r for r in rows if r["curve"] == name]
        for ax, metric in zip(axes, ("gen_ppl", "entropy")):
            ax.plot([r[x] for r in mine], [r[metric] for r in mine], marker="o", label=name)
    ticks = sorted({r[x] for r in rows})
    for ax, metric, name in zip(axes, ("gen_ppl", "entropy"), ("Gen. PPL (judge) ↓", "unigram entropy")):
        if reference is not None:
            ax.axhline(reference[metric], color="black", linestyle="--", linewidth=1, label="held-out real text")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(s) for s in ticks])
        ax.set_xlabel("sampling steps" if x == "steps" else "network evaluations (NFE)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(plt, fig, path, title)


def plot_frontier(rows: list[dict], reference: dict | None, path: Path, title: str) -> None:
    """Gen. PPL against entropy, one curve per sampler (points labelled by NFE), real text as a star."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for name in dict.fromkeys(r["curve"] for r in rows):
        mine = [r for r in rows if r["curve"] == name]
        ax.plot([r["entropy"] for r in mine], [r["gen_ppl"] for r in mine], marker="o", label=name)
        for r in mine:
            ax.annotate(str(r["nfe"]), (r["entropy"], r["gen_ppl"]), fontsize=6, xytext=(2, 2),
                        textcoords="offset points")
    if reference is not None:
        ax.plot([reference["entropy"]], [reference["gen_ppl"]], marker="*", markersize=14, color="black",
                linestyle="none", label="held-out real text")
    ax.set_yscale("log")
    ax.set_xlabel("unigram entropy (higher: more diverse)")
    ax.set_ylabel("Gen. PPL (judge) ↓")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(plt, fig, path, title)


def sweep(cfg: SweepConfig) -> tuple[list[dict], dict | None]:
    """Run the sweep, write the result files, return the rows and the reference figures."""
    out = local_path(cfg.output_dir, "--output-dir")
    for name in RESULT_FILES:
        refuse_existing(out / name, cfg.overwrite, other="--output-dir")
    if cfg.judge_batch_size < 1:
        raise ConfigError(f"--judge-batch-size must be at least 1, got {cfg.judge_batch_size}")
    names = model_names(cfg.sources, cfg.names)
    several = len(cfg.sources) > 1
    sessions = open_models(cfg.sources, cfg, conditional=False, length=cfg.length,
                           hint="Gen. PPL sweeps need an unconditional one (score conditional models with "
                                "benchmarks/conditional_scores.py)")
    import jax.numpy as jnp

    judge = load_judge(cfg.judge)
    judge_tok = load_judge_tokenizer(cfg.judge)
    score = dict(batch_size=cfg.judge_batch_size, append_eos=cfg.append_eos,
                 compute_dtype=jnp.bfloat16 if cfg.judge_dtype == "bfloat16" else jnp.float32)
    reference = None
    if cfg.reference_data:
        texts = reference_texts(sessions[0], cfg.reference_data, cfg.reference_split, cfg.num_samples)
        reference = evaluate_unconditional(texts, judge, judge_tok, **score)
        print(f"held-out real text: Gen. PPL {reference['gen_ppl']:.2f}, entropy {reference['entropy']:.3f}")
    rows, models = [], []
    for name, source, session in zip(names, cfg.sources, sessions):
        family = session.bundle.family
        compute = model_compute(session, source)
        models.append({**model_entry(name, session, compute), "judge": cfg.judge})
        for setting in sweep_settings(session, cfg):
            records = session.draw(setting, seed=cfg.seed, batch_size=cfg.batch_size, num_samples=cfg.num_samples,
                                   extra_settings={"source": source, "weights": cfg.weights}, progress=False)
            stem = f"{name}-{family.sweep_file_stem(setting)}" if several else family.sweep_file_stem(setting)
            write_samples_jsonl(out / "samples" / f"{stem}.jsonl", records)
            figures = evaluate_unconditional([r["text"] for r in records], judge, judge_tok, **score)
            row = {**sampler_columns(name, setting, session, records), **figures, **compute}
            sampler = row["sampler"]
            row["curve"] = f"{name}: {sampler}" if several and not sampler.startswith(name) else sampler
            rows.append(row)
            print(f"{row['curve']:>24} {row['steps']:>4} steps ({nfe_cell(row)} NFE): Gen. PPL {row['gen_ppl']:8.2f}  "
                  f"entropy {row['entropy']:.3f}")
    write_text_atomic(out / "steps_vs_ppl.md", markdown_table(rows, reference, models))
    write_text_atomic(out / "steps_vs_ppl.csv", csv_text(rows, reference))
    write_json_atomic(out / "sweep.json", {"config": dataclasses.asdict(cfg), "models": models,
                                           "rows": rows, "reference": reference})
    title = (sessions[0].bundle.origin if not several else " vs ".join(names)) + f" — judge {cfg.judge}"
    plot(rows, reference, out / "steps_vs_ppl.png", title)
    plot(rows, reference, out / "ppl_vs_nfe.png", title, x="nfe")
    plot_frontier(rows, reference, out / "ppl_vs_entropy.png", title)
    return rows, reference


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry; expected failures end as one line (exit 2, see :mod:`elf_eqx.cli.errors`)."""
    with flag_errors():
        cfg = tyro.cli(SweepConfig, args=argv)
    rows, reference = sweep(cfg)
    print(markdown_table(rows, reference))  # (the compute table is in the written file)
    print(f"wrote {', '.join(RESULT_FILES)} and samples/ to {cfg.output_dir}")


if __name__ == "__main__":
    main()
