"""``python -m elf_eqx.eval``: score samples files written by ``python -m elf_eqx.sample``.

    python -m elf_eqx.eval --samples samples/run.jsonl --judge openai-community/gpt2-large
    python -m elf_eqx.eval --samples cond.jsonl --references ../shared/data/kjv/next_verse_valid.jsonl
    python -m elf_eqx.eval --samples a.jsonl b.jsonl --metrics gen_ppl entropy --judge-dtype bfloat16

Unconditional samples: Gen. PPL under a GPT-2-family judge and mean unigram entropy. Samples
with references (their own ``reference`` field or ``--references``): BLEU and ROUGE-1/2/L.
Conventions: :mod:`elf_eqx.evaluate`. Prints a table and writes every figure, the counts, the
judge, the samples' settings and the files to ``--output`` (JSON). Known failures end with one
line naming the file (and line) at fault.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from elf_eqx.cli.args import ProcessFlags
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.errors import ConfigError
from elf_eqx.evaluate.samples_file import SampleRecord, align_references, own_references, read_references, read_samples
from elf_eqx.io.atomic import refuse_existing, write_json_atomic
from elf_eqx.io.storage import AnyPath, is_remote, user_path
from elf_eqx.parallel.supervisor import launch

Metric = Literal["auto", "gen_ppl", "entropy", "bleu", "rouge"]
JUDGE_METRICS = ("gen_ppl", "entropy")
REFERENCE_METRICS = ("bleu", "rouge")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluate generated samples: Gen. PPL + entropy under a GPT-2 judge, or BLEU + ROUGE against references."""

    samples: tuple[str, ...]
    """Samples JSONL file(s) from python -m elf_eqx.sample: one object per line with a string "text"
    (optional "input", "reference", "settings"). Several files are scored as one set, in order."""
    judge: str = "openai-community/gpt2-large"
    """GPT-2-family judge for Gen. PPL and entropy: a hub id, or a local folder with config.json,
    model.safetensors and the tokenizer files (benchmarks/train_judge.py makes one offline)."""
    references: str | None = None
    """{input, output} JSONL whose "output"s are the gold texts, paired with the samples by order
    (used instead of the samples' own "reference" fields). A longer file is accepted when the
    samples' "input"s match its first records."""
    metrics: tuple[Metric, ...] = ("auto",)
    """What to compute: auto (bleu + rouge when every sample has a reference, else gen_ppl +
    entropy), or any of gen_ppl, entropy, bleu, rouge."""
    batch_size: int = 8
    """Samples per judge forward pass."""
    judge_dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the judge's blocks (logits and the NLL stay float32)."""
    append_eos: bool = True
    """Score the EOS after each sample's text, as the MDLM/Duo evaluation does by padding with EOS;
    --no-append-eos scores the text tokens only."""
    max_samples: int | None = None
    """Score only the first N samples (of all files, in order)."""
    output: str | None = None
    """JSON file for the results (default: <first samples file>.eval.json)."""
    overwrite: bool = False
    """Replace an existing --output file (it is never replaced otherwise)."""
    progress: bool = True
    """Show a progress bar while the judge scores the samples."""
    processes: Annotated[ProcessFlags, tyro.conf.OmitArgPrefixes] = ProcessFlags()


def chosen_metrics(requested: tuple[str, ...], have_references: bool) -> tuple[str, ...]:
    """The metrics to compute, in a fixed order, with ``auto`` resolved."""
    if "auto" in requested:
        if len(requested) > 1:
            raise ConfigError("--metrics auto cannot be combined with other metrics")
        return REFERENCE_METRICS if have_references else JUDGE_METRICS
    return tuple(m for m in JUDGE_METRICS + REFERENCE_METRICS if m in requested)


def output_path(cfg: EvalConfig) -> AnyPath:
    """Where the results go, refused when it would replace a file without ``--overwrite`` or a samples file."""
    out = user_path(cfg.output or f"{cfg.samples[0]}.eval.json", "--output")

    def same(a: AnyPath, b: AnyPath) -> bool:
        return str(a) == str(b) if is_remote(a) or is_remote(b) else a.resolve() == b.resolve()

    if any(same(out, user_path(s, "--samples")) for s in cfg.samples):
        raise ConfigError(f"--output {out} is one of the samples files")
    if out.is_dir():
        raise ConfigError(f"--output {out} is a directory")
    return refuse_existing(out, cfg.overwrite, other="--output")


def settings_summary(records: list[SampleRecord]) -> list[dict[str, Any] | None]:
    """The distinct ``settings`` of ``records``, in order of first appearance."""
    distinct: list[dict[str, Any] | None] = []
    for record in records:
        if record.settings not in distinct:
            distinct.append(record.settings)
    return distinct


def judge_figures(cfg: EvalConfig, texts: list[str], wanted: tuple[str, ...]) -> dict[str, Any]:
    """Gen. PPL and/or entropy of ``texts``; entropy alone loads only the judge's tokenizer."""
    import jax.numpy as jnp

    from elf_eqx.evaluate.judge import load_judge, load_judge_tokenizer
    from elf_eqx.evaluate import evaluate_entropy, evaluate_unconditional

    judge = load_judge(cfg.judge) if "gen_ppl" in wanted else None  # first: it names a non-GPT-2 folder
    tokenizer = load_judge_tokenizer(cfg.judge)
    about = {"judge": cfg.judge}
    if judge is None:
        return {**evaluate_entropy(texts, tokenizer), **about}
    figures = evaluate_unconditional(
        texts, judge, tokenizer, batch_size=cfg.batch_size, append_eos=cfg.append_eos,
        compute_dtype=jnp.bfloat16 if cfg.judge_dtype == "bfloat16" else jnp.float32, progress=cfg.progress,
    )
    if "entropy" not in wanted:
        del figures["entropy"]
    return {**figures, **about, "judge_dtype": cfg.judge_dtype, "append_eos": cfg.append_eos}


def reference_figures(texts: list[str], gold: list[str], wanted: tuple[str, ...]) -> dict[str, Any]:
    """BLEU and/or ROUGE-1/2/L of ``texts`` against ``gold``."""
    from elf_eqx.evaluate import rouge_scores, scored_bleu

    figures: dict[str, Any] = {}
    if "bleu" in wanted:
        score, signature = scored_bleu(texts, gold)
        figures.update(bleu=score, bleu_signature=signature)
    if "rouge" in wanted:
        figures.update(rouge_scores(texts, gold))
    return figures


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def evaluate(cfg: EvalConfig) -> tuple[Path, dict[str, Any]]:
    """Compute what ``cfg`` asks for and write it to the output JSON; returns its path and contents."""
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise ConfigError(f"--max-samples must be at least 1, got {cfg.max_samples}")
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    out = output_path(cfg)
    per_file = [(name, read_samples(name)) for name in cfg.samples]
    records = [record for _, file_records in per_file for record in file_records]
    may_need_references = any(m == "auto" or m in REFERENCE_METRICS for m in cfg.metrics)
    if cfg.references is not None:
        gold = align_references(records, read_references(cfg.references), cfg.references)
    else:
        gold = own_references(records) if may_need_references else None
    records = records[: cfg.max_samples]
    gold = None if gold is None else gold[: len(records)]
    wanted = chosen_metrics(cfg.metrics, gold is not None)
    if gold is None and any(m in REFERENCE_METRICS for m in wanted):
        raise ConfigError("BLEU/ROUGE need references: samples with a 'reference' field, or --references FILE")
    texts = [record.text for record in records]
    distinct = settings_summary(records)
    result: dict[str, Any] = {
        "metrics": list(wanted),
        "num_samples": len(texts),
        "samples": [{"path": name, "num_records": len(file_records), "settings": settings_summary(file_records)}
                    for name, file_records in per_file],
        "settings": distinct[0] if len(distinct) == 1 else None,
        "max_samples": cfg.max_samples,
    }
    if gold is not None and any(m in REFERENCE_METRICS for m in wanted):
        result["references"] = cfg.references or "the samples' 'reference' fields"
        result.update(reference_figures(texts, gold, wanted))
    if any(m in JUDGE_METRICS for m in wanted):
        result.update(judge_figures(cfg, texts, wanted))
    result = json_safe(result)
    if _process_index() == 0:  # several processes (jax.distributed) score alike; one writes
        write_json_atomic(out, result)
    return out, result


def _process_index() -> int:
    from elf_eqx.parallel.distributed import process_index_started  # no backend started for it

    return process_index_started()


def results_table(result: dict[str, Any]) -> str:
    """A two-column text table of the figures and counts in ``result``."""
    names = ("gen_ppl", "entropy", "bleu", "rouge1", "rouge2", "rougeL", "num_samples", "num_empty",
             "num_truncated", "num_scored_tokens")
    lines = []
    for name in names:
        if name in result:
            value = result[name]
            lines.append(f"{name:>17}  {value:.3f}" if isinstance(value, float) else f"{name:>17}  {value}")
    return "\n".join(lines)


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry: parse flags, evaluate, print the table; expected failures end as one line (exit
    2, see :mod:`elf_eqx.cli.errors`; ``--debug`` shows the traceback)."""
    with flag_errors():
        cfg = tyro.cli(EvalConfig, args=argv)
    launch("elf_eqx.eval", argv, lambda: evaluate_and_print(cfg), flags=cfg.processes, preemption=False)


def evaluate_and_print(cfg: EvalConfig) -> None:
    """Evaluate; process 0 prints the table and where the results went."""
    out, result = evaluate(cfg)
    if _process_index() == 0:
        print(results_table(result))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
