"""``python -m elf_eqx.train`` end to end on a tiny model: the offline MiniLM encoder, real KJV
text, orbax checkpoints, SIGTERM, resume, NaN stop and the one-line errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elf_eqx.train import main

TINY = [
    "--preset", "quickstart", "--model", "ELF-T", "--global-batch", "4", "--max-length", "16",
    "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1", "--save-every", "1000",
    "--sample-every", "1000", "--sample-steps", "2", "--num-samples", "2",
]


def tiny_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [*TINY, "--data", str(corpus), "--cache-dir", str(out.parent / "cache"), "--output-dir", str(out), *extra]


def losses(out: Path) -> dict[int, float]:
    """Logged loss per step; a step is logged once (a resume drops the records past its checkpoint)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate metrics records: {steps}"
    return {r["step"]: r["loss"] for r in records}


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


def test_train_writes_checkpoints_metrics_and_samples(corpus, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(corpus, out, "--max-steps", "4", "--save-every", "2", "--sample-every", "4"))
    assert checkpoint_steps(out) == [2, 4]
    assert sorted(losses(out)) == [1, 2, 3, 4]
    sample_file = out / "samples" / "step_0000004.txt"
    text = sample_file.read_text()
    assert text.startswith("# step 4") and "[1]" in text


@pytest.mark.slow
def test_sigterm_saves_and_resume_reproduces_the_uninterrupted_run(corpus, tmp_path):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "elf_eqx.train", *tiny_args(corpus, killed, "--max-steps", "100000")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (killed / "metrics.jsonl").is_file() and len(losses(killed)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    stopped_at = checkpoint_steps(killed)[-1]
    assert stopped_at >= 2 and stopped_at == max(losses(killed))

    total = stopped_at + 3
    main(tiny_args(corpus, killed, "--max-steps", str(total)))
    fresh = tmp_path / "fresh"
    main(tiny_args(corpus, fresh, "--max-steps", str(total)))
    resumed, reference = losses(killed), losses(fresh)
    assert sorted(resumed) == list(range(1, total + 1))
    assert resumed == reference  # the same program on the same rows and keys: bitwise


@pytest.mark.slow
def test_nan_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(corpus, out, "--max-steps", "2", "--save-every", "2"))
    with pytest.raises(SystemExit, match="loss is (nan|inf) at step 3"):
        main(tiny_args(corpus, out, "--max-steps", "4", "--save-every", "1", "--latent-std", "1e-30"))
    assert checkpoint_steps(out) == [2]


@pytest.mark.slow
def test_different_model_in_output_directory(corpus, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(corpus, out, "--max-steps", "1", "--save-every", "1"))
    main(tiny_args(corpus, out, "--max-steps", "2", "--save-every", "1", "--remat", "full"))  # same weights, run differently
    assert checkpoint_steps(out) == [1, 2]
    with pytest.raises(SystemExit, match="different model.*elf"):
        main(tiny_args(corpus, out, "--max-steps", "3", "--model", "ELF-XS"))
    assert checkpoint_steps(out) == [1, 2]


def test_one_line_errors(corpus, tmp_path):
    with pytest.raises(SystemExit, match="nowhere.jsonl"):
        main(tiny_args(tmp_path / "nowhere.jsonl", tmp_path / "a"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit, match="empty.jsonl"):
        main(tiny_args(empty, tmp_path / "b"))
    with pytest.raises(SystemExit, match="max_length 1024 exceeds the encoder's 512 positions"):
        main(tiny_args(corpus, tmp_path / "c", "--max-length", "1024"))


def test_tokenizer_that_does_not_match_the_encoder(corpus, tmp_path):
    from transformers import AutoTokenizer

    from elf_eqx.encoders import offline_minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_dir()))
    tokenizer.add_tokens([f"newword{i}" for i in range(5)])
    tokenizer.save_pretrained(tmp_path / "bigger_tokenizer")
    with pytest.raises(SystemExit, match="tokenizer has 30527 ids but the encoder's embedding table has only 30522"):
        main(tiny_args(corpus, tmp_path / "d", "--tokenizer", str(tmp_path / "bigger_tokenizer")))


@pytest.mark.slow
def test_conditional_run_with_label_drop_and_cfg_samples(tmp_path, shared_dir):
    pairs = tmp_path / "pairs.jsonl"
    lines = (shared_dir / "data" / "kjv" / "next_verse_valid.jsonl").read_text().splitlines()[:16]
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cond"
    main(tiny_args(pairs, out, "--max-steps", "2", "--max-length", "24", "--max-input-length", "8",
                   "--pad-mode", "eos", "--no-packing", "--label-drop-prob", "0.5", "--sample-cfg-weight", "2", "--sample-every", "2"))
    assert sorted(losses(out)) == [1, 2]
    text = (out / "samples" / "step_0000002.txt").read_text()
    assert text.startswith("# step 2") and "[1]" in text
