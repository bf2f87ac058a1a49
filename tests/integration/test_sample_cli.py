"""``python -m elf_eqx.sample`` on training output directories: unconditional and conditional
(the offline MiniLM encoder), presets, determinism, the JSONL record, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_fixtures import write_run

from elf_eqx.sample import main
from elf_eqx.sampling.config import parse_sample_config

@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("uncond") / "run", conditional=False)


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("cond") / "run", conditional=True)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unconditional_samples_are_written_printed_and_reproducible(uncond_run, tmp_path, capsys):
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    args = [str(uncond_run), "--num-samples", "3", "--batch-size", "2", "--steps", "3"]
    main([*args, "--output", str(first)])
    printed = capsys.readouterr().out
    main([*args, "--output", str(again), "--quiet"])
    main([*args, "--output", str(other), "--seed", "1", "--quiet"])
    records = read(first)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert "[2]" in printed and f"wrote 3 samples to {first}" in printed
    r = records[0]
    assert isinstance(r["text"], str) and all(isinstance(t, int) for t in r["token_ids"])
    settings = r["settings"]
    # the run's own sampler defaults (sde, ω 3) with the --steps flag on top
    assert (settings["method"], settings["steps"], settings["omega"], settings["seed"]) == ("sde", 3, 3.0, 0)
    assert settings["step"] == 7 and settings["length"] == 16 and settings["weights"] == "ema"
    assert [x["token_ids"] for x in read(again)] == [x["token_ids"] for x in records]
    assert [x["token_ids"] for x in read(other)] != [x["token_ids"] for x in records]


def test_presets_and_length(uncond_run, tmp_path):
    out = tmp_path / "p.jsonl"
    main([str(uncond_run), "--preset", "owt_sde64", "--steps", "2", "--num-samples", "1", "--length", "8",
          "--output", str(out), "--quiet"])
    settings = read(out)[0]["settings"]
    assert (settings["method"], settings["gamma"], settings["steps"], settings["length"]) == ("sde", 1.0, 2, 8)
    cfg = parse_sample_config(["x", "--preset", "conditional_ode64"])
    s = cfg.sampler
    assert (s.method, s.steps, s.cfg_weight, s.omega, s.gamma) == ("ode", 64, 2.0, 1.0, None)


def test_conditional_samples_from_prompts_and_input_file(cond_run, tmp_path):
    inputs = tmp_path / "pairs.jsonl"
    inputs.write_text('{"input": "in the beginning", "output": "and the earth"}\n{"input": "let there be light"}\n')
    out = tmp_path / "cond.jsonl"
    main([str(cond_run), "--input", str(inputs), "--batch-size", "2", "--steps", "2", "--output", str(out), "--quiet"])
    records = read(out)
    assert [r["input"] for r in records] == ["in the beginning", "let there be light"]
    assert records[0]["reference"] == "and the earth" and "reference" not in records[1]
    settings = records[0]["settings"]
    assert (settings["method"], settings["cfg_weight"], settings["encoder"]) == ("ode", 2.0, "offline-minilm")
    prompted = tmp_path / "prompt.jsonl"
    main([str(cond_run), "--prompt", "in the beginning", "--steps", "2", "--output", str(prompted), "--quiet"])
    assert [r["input"] for r in read(prompted)] == ["in the beginning"]


def test_errors_are_one_line_and_nothing_is_overwritten(uncond_run, cond_run, tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main([str(uncond_run), "--output", str(out)])
    assert out.read_text() == "precious\n"
    with pytest.raises(SystemExit, match="conditional: give conditions"):
        main([str(cond_run), "--output", str(tmp_path / "x.jsonl")])
    with pytest.raises(SystemExit, match="unconditional"):
        main([str(uncond_run), "--prompt", "hello", "--output", str(tmp_path / "y.jsonl")])
    with pytest.raises(SystemExit, match="pairs.jsonl:1"):
        bad = tmp_path / "pairs.jsonl"
        bad.write_text('{"text": "no input field"}\n')
        main([str(cond_run), "--input", str(bad), "--output", str(tmp_path / "z.jsonl")])
    with pytest.raises(SystemExit):  # tyro prints the __post_init__ message
        main([str(uncond_run), "--steps", "0"])
    with pytest.raises(SystemExit, match="model source"):
        main([])


def test_sampler_settings_are_one_spelling():
    """Every family's settings field is a sample flag, a training flag; ELF's are Sampler keywords."""
    import dataclasses

    from elf_eqx.cli.args import flag_table
    from elf_eqx.flow import FlowConstants
    from elf_eqx.sampling.config import SampleConfig
    from elf_eqx.sampler import SamplerSettings
    from elf_eqx.sampling.settings import FAMILY_SETTINGS
    from elf_eqx.solvers import NoChurn, UniformGrid
    from elf_eqx.training.config import TrainConfig

    names = {name for settings in FAMILY_SETTINGS for name in settings.names()}
    assert "top_p" in names and "top_p" not in SamplerSettings.names()
    assert names <= set(flag_table(SampleConfig))
    assert {f"sampling.{n}" for n in names} <= set(flag_table(TrainConfig))
    settings = SamplerSettings(method="ode", steps=5, omega=2.0, time_grid="uniform", self_condition=False)
    sampler = settings.sampler(FlowConstants(noise_scale=1.5))
    assert (sampler.steps, sampler.churn_rule, sampler.omega, sampler.time_grid, sampler.flow.noise_scale,
            sampler.self_condition) == (5, NoChurn(), 2.0, UniformGrid(), 1.5, False)
    assert SamplerSettings.from_dict(settings.to_dict()) == settings
    assert settings.replace(steps=None, gamma=0.5) == dataclasses.replace(settings, gamma=0.5)
    cfg = parse_sample_config(["x", "--omega", "4", "--self-condition", "False"])
    assert cfg.settings(settings) == dataclasses.replace(settings, omega=4.0)
    with pytest.raises(SystemExit):
        parse_sample_config(["x", "--gamma", "-1"])
