"""``python -m elf_eqx.eval``: score a samples file written by ``python -m elf_eqx.sample``.

    python -m elf_eqx.eval --samples samples/run.jsonl --judge openai-community/gpt2-large
    python -m elf_eqx.eval --samples cond.jsonl --references ../shared/data/kjv/next_verse_valid.jsonl

Unconditional samples: Gen. PPL under a GPT-2-family judge and mean unigram entropy. Samples
with references (their own ``reference`` field or ``--references``): BLEU and ROUGE-1/2/L.
Conventions: :mod:`elf_eqx.metrics`. Prints a table and writes every figure to ``--output``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import jax.numpy as jnp
import tyro

from elf_eqx.metrics import evaluate_conditional, evaluate_unconditional
from elf_eqx.run_log import write_text_atomic
from elf_eqx.sample_io import read_condition_inputs


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluate generated samples: Gen. PPL + entropy, or BLEU + ROUGE against references."""

    samples: tuple[str, ...]
    """Samples JSONL file(s) from python -m elf_eqx.sample (records with a "text" field)."""
    judge: str = "openai-community/gpt2-large"
    """GPT-2-family judge for Gen. PPL: hub id or local folder (benchmarks/train_judge.py makes one offline)."""
    references: str | None = None
    """{input, output} JSONL aligned with the samples by order, for samples without a "reference" field."""
    metrics: Literal["auto", "ppl", "overlap", "all"] = "auto"
    """auto: BLEU/ROUGE when references exist, else Gen. PPL + entropy; ppl; overlap; all."""
    batch_size: int = 8
    """Texts per judge call."""
    judge_dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the judge."""
    append_eos: bool = True
    """Score the EOS after each text (the Gen. PPL convention); --no-append-eos scores text tokens only."""
    max_samples: int | None = None
    """Score only the first N samples."""
    output: str | None = None
    """JSON file for the figures (default: <first samples file>.eval.json)."""
    overwrite: bool = False
    """Replace an existing output file."""


def read_samples(paths: tuple[str, ...]) -> list[dict]:
    """Every record of the samples files; errors name the file and line."""
    records = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"samples file not found: {path}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{number}: a sample needs a string 'text' field")
            records.append(record)
    if not records:
        raise ValueError(f"no samples in {', '.join(paths)}")
    return records


def references_for(records: list[dict], references: str | None) -> list[str] | None:
    """The reference of each sample: its own ``reference`` field, else ``--references`` by order."""
    if references is not None:
        gold = [c.reference for c in read_condition_inputs(references)]
        if len(gold) < len(records):
            raise ValueError(f"--references {references} has {len(gold)} records but there are {len(records)} samples")
        if any(g is None for g in gold[: len(records)]):
            raise ValueError(f"--references {references}: every record needs an 'output' field")
        return gold[: len(records)]
    own = [r.get("reference") for r in records]
    return own if all(isinstance(g, str) for g in own) else None


def evaluate(cfg: EvalConfig) -> dict:
    """The figures ``cfg`` asks for, with counts and provenance; written to the output JSON."""
    out = Path(cfg.output or f"{cfg.samples[0]}.eval.json")
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite or another --output")
    records = read_samples(cfg.samples)[: cfg.max_samples]
    texts = [r["text"] for r in records]
    gold = references_for(records, cfg.references)
    wanted = {"auto": "overlap" if gold else "ppl"}.get(cfg.metrics, cfg.metrics)
    result: dict = {"samples": list(cfg.samples), "num_samples": len(texts), "settings": records[0].get("settings")}
    if wanted in ("overlap", "all"):
        if gold is None:
            raise ValueError("BLEU/ROUGE need references: samples with a 'reference' field or --references FILE")
        result.update(evaluate_conditional(texts, gold))
    if wanted in ("ppl", "all"):
        from elf_eqx.judge import load_judge, load_judge_tokenizer

        judge, tokenizer = load_judge(cfg.judge), load_judge_tokenizer(cfg.judge)
        dtype = jnp.bfloat16 if cfg.judge_dtype == "bfloat16" else jnp.float32
        result.update(evaluate_unconditional(texts, judge, tokenizer, batch_size=cfg.batch_size,
                                             append_eos=cfg.append_eos, compute_dtype=dtype))
        result.update(judge=cfg.judge, append_eos=cfg.append_eos)
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    result["output"] = str(out)
    return result


def main(argv: list[str] | None = None) -> None:
    """CLI entry; known failures end as one line naming the culprit."""
    cfg = tyro.cli(EvalConfig, args=argv)
    try:
        result = evaluate(cfg)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"error: {err}") from None
    names = ("gen_ppl", "entropy", "bleu", "rouge1", "rouge2", "rougeL", "num_samples", "num_empty")
    for name in names:
        if name in result:
            value = result[name]
            print(f"{name:>12}  {value:.3f}" if isinstance(value, float) else f"{name:>12}  {value}")
    print(f"wrote {result['output']}")


if __name__ == "__main__":
    main()
