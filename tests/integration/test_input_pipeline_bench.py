"""``benchmarks/input_pipeline.py`` end to end on a tiny dataset (numbers not checked, only their shape)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_input_pipeline_benchmark_runs_and_reuses_its_dataset(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("input_pipeline", BENCHMARKS / "input_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["input_pipeline"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    argv = ["--rows", "300", "--length", "16", "--global-batch", "32", "--steps", "3", "--repeats", "1",
            "--workdir", str(tmp_path / "work"), "--json-out", str(tmp_path / "out.json")]
    module.main(argv)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["appetite_rows_per_s"] == {"0.28": 4 / 0.28, "0.07": 4 / 0.07}
    assert [(r["page_cache"], len(r["rows_per_s"])) for r in record["results"]] == [("warm", 1)] * 3 + [("cold", 1)] * 3
    assert set(record["stages_ms"]) >= {"collate", "placement (from_numpy)"}
    assert "| warm | Prefetcher(depth 2) + from_numpy |" in capsys.readouterr().out
    module.main(argv)  # the second run reuses the dataset and its laid-out rows
    assert "from cache: True" in capsys.readouterr().out
    assert not list(Path.cwd().glob("owt_synth*"))
