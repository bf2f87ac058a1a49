"""The baselines through the same entry points as ELF: ``python -m elf_eqx.train --objective mdlm|ar``
(checkpoints, metrics with compute, resume, samples), ``python -m elf_eqx.sample`` (unconditional
and conditional) on their runs. (Bitwise resume is the shared loop's, tested on ELF in test_faults.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from elf_eqx.baselines.network import BidirectionalLM, CausalLM
from elf_eqx.release.model_source import load_model_source
from elf_eqx.sample import main as sample_main
from elf_eqx.train import main as train_main

TINY = [
    "--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
    "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1", "--save-every", "2",
    "--sampling.every", "4", "--sampling.steps", "3", "--sampling.num-samples", "2",
]


def train(corpus: Path, out: Path, *extra: str) -> Path:
    train_main([*TINY, "--data", str(corpus), "--cache-dir", str(out.parent / "cache"), "--output-dir", str(out), *extra])
    return out


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_mdlm_run_resumes_samples_and_refuses_another_family(baseline_runs, corpus, tmp_path):
    run = tmp_path / "mdlm"
    shutil.copytree(baseline_runs["mdlm"], run)
    first = metrics(run)
    assert [r["step"] for r in first] == [1, 2] and first[-1]["tokens"] == 2 * 4 * 16 and first[-1]["train_flops"] > 0
    assert "ce" in first[-1] and "mask_frac" in first[-1]
    assert (run / "samples" / "step_0000002.txt").read_text().startswith("# step 2, mdlm3, 3 NFE")
    train(corpus, run, "--objective", "mdlm", "--max-steps", "3")  # resumes from step 2 (a BidirectionalLM state)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3] and metrics(run)[:2] == first

    bundle = load_model_source(str(run))
    assert type(bundle.model) is BidirectionalLM and bundle.family.name == "mdlm" and "MDLM" in bundle.origin
    out = tmp_path / "s.jsonl"
    sample_main([str(run), "--num-samples", "3", "--batch-size", "2", "--steps", "4", "--output", str(out), "--quiet"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and records[0]["settings"]["family"] == "mdlm" and records[0]["settings"]["nfe"] == 4
    assert records[0]["settings"]["steps"] == 4  # only MDLM's own settings
    assert not {"method", "omega", "top_p", "p_mean"} & set(records[0]["settings"])
    assert 1 <= records[0]["nfe_used"] <= 4

    with pytest.raises(SystemExit) as stop:  # the other family's network does not fit this directory
        train(corpus, run, "--objective", "ar", "--max-steps", "6")
    assert stop.value.code == 2


def test_conditional_ar_run_samples_from_inputs(tmp_path, shared_dir):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join((shared_dir / "data" / "kjv" / "next_verse_valid.jsonl").read_text().splitlines()[:16]) + "\n")
    out = train(pairs, tmp_path / "cond", "--objective", "ar", "--max-steps", "2", "--max-length", "24",
                "--max-input-length", "8", "--pad-mode", "eos", "--no-packing")
    samples = tmp_path / "c.jsonl"
    sample_main([str(out), "--input", str(pairs), "--num-samples", "3", "--batch-size", "2", "--top-p", "0.9",
                 "--output", str(samples), "--quiet"])
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert type(load_model_source(str(out)).model) is CausalLM
    assert len(records) == 3 and records[0]["input"] and "reference" in records[0]
    assert records[0]["settings"]["top_p"] == 0.9 and len(records[0]["token_ids"]) <= 24 - 8
    assert not {"method", "steps", "omega", "p_mean", "encoder"} & set(records[0]["settings"])  # only AR's own
