"""``benchmarks/gpu_suite.py``: its FLOP count, and the whole suite run once on the CPU (``--smoke``)."""

from __future__ import annotations

import json

import pytest

from elf_eqx.config import preset
from elf_eqx.objective import FlowObjective

from test_benchmark_tools import load_script


@pytest.fixture(scope="module")
def suite():
    return load_script("gpu_suite")


def test_flop_count_is_six_n_tokens_plus_attention(suite):
    cfg = preset("ELF-B", encoder_dim=512, vocab_size=32100)
    length, n = 1024, 1024 + 12
    block_params = cfg.depth * (4 * 768 * 768 + 3 * 768 * cfg.mlp_hidden)  # matmul weights of the blocks
    fwd = suite.elf_forward_flops(cfg, length)
    attention = cfg.depth * 4 * n * n * 768
    inputs = length * 2 * (2 * 512 * 512 + 512 * 128 + 128 * 768)
    assert fwd["body"] == 2 * block_params * n + attention + inputs
    # Decode-only step (fwd+bwd = 3 passes) with no encoder work: the 6·params·tokens rule plus attention.
    enc = suite.T5Config(vocab_size=8, d_model=8, d_kv=1, d_ff=1, num_layers=0, num_heads=1)
    flops = suite.train_step_flops(cfg, enc, 4, length, FlowObjective(decoder_prob=1.0))
    assert flops == 4 * 3 * (fwd["body"] + fwd["decode_head"])
    assert flops == pytest.approx(4 * (6 * block_params * n + 3 * attention), rel=0.25)


def test_smoke_suite_runs_end_to_end_on_cpu(suite, tmp_path):
    out = tmp_path / "suite.json"
    result = suite.main(suite.Args(smoke=True, out=str(out), steps=1))
    written = json.loads(out.read_text())
    assert written["backend"] == "cpu" and written["train"] and len(written["train"]) == 4
    for row in written["train"]:
        assert row["s_per_step"] > 0 and row["tokens_per_s"] > 0 and row["mfu"] is None, row
    assert [r["batch"] for r in written["sampling"]] == [4, 8] and all(r["samples_per_s"] > 0 for r in written["sampling"])
    assert written["pipeline"]["batches_per_s"] > 0
    assert "input pipeline" in suite.format_table(result)
