"""``benchmarks/gpu_suite.py``: the whole suite run once on the CPU (``--smoke``)."""

from __future__ import annotations

import json

import pytest

from test_benchmark_tools import load_script


@pytest.fixture(scope="module")
def suite():
    return load_script("gpu_suite")


@pytest.mark.slow
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
