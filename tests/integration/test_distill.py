"""``python -m elf_eqx.distill``: rounds of progressive distillation as ordinary training runs —
the student samples through the sample CLI at its own step count, a stopped distillation resumes
to the same weights as an uninterrupted one, and bad input is one line naming it."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from run_fixtures import write_run

# One round (4 → 2 steps) of four optimizer steps on the embedded KJV subset, rows of 16 tokens.
ROUND = ["--from-steps", "4", "--to-steps", "2", "--steps-per-round", "4", "--global-batch", "4",
         "--save-every", "2", "--log-every", "1", "--samples-every", "4", "--num-samples", "2", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("teacher") / "run", conditional=False)


def distill(teacher, out, *extra):
    from elf_eqx.distill import main

    main([str(teacher), *ROUND, "--output-dir", str(out), "--cache-dir", str(out.parent / "cache"), *extra])


@pytest.fixture(scope="module")
def students(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("distilled") / "out"
    distill(teacher, out)
    return out


@pytest.mark.slow
def test_a_round_is_a_run_whose_student_samples_at_its_own_steps(students, tmp_path):
    from elf_eqx.sample import main as sample_main

    manifest = json.loads((students / "distillation.json").read_text())
    assert manifest["rounds"]["2"]["complete"] and manifest["distils"]["time_grid"] == "logit_normal_quantile"
    records = [json.loads(line) for line in (students / "steps_2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(np.isfinite(r["distill"]) for r in records)
    assert (students / "steps_2" / "samples" / "step_0000004.txt").read_text().startswith("# step 4, ode2-w3")
    out = tmp_path / "s.jsonl"
    sample_main([str(students), "--num-samples", "2", "--batch-size", "2", "--output", str(out), "--quiet"])
    settings = json.loads(out.read_text().splitlines()[0])["settings"]
    assert (settings["steps"], settings["method"], settings["time_grid"], settings["nfe"]) == (
        2, "ode", "logit_normal_quantile", 2)
    assert "2-step student of round 1" in settings["origin"]


def test_a_sweep_counts_a_student_at_its_distillation_compute(students):
    from elf_eqx.sampling.sweep import model_compute
    from elf_eqx.sampling.text import TextSampler

    source = str(students / "steps_2")
    compute = model_compute(TextSampler.open(source), source)
    last = json.loads((students / "steps_2" / "metrics.jsonl").read_text().splitlines()[-1])
    # The round's own log counts distillation steps (teacher passes included), not training steps.
    assert compute["train_steps"] == last["step"] == 4
    assert compute["train_flops"] == pytest.approx(last["train_flops"], rel=1e-9)


@pytest.mark.slow
def test_a_stopped_distillation_resumes_to_the_uninterrupted_weights(teacher, students, tmp_path, monkeypatch):
    from elf_eqx.training.run_directory import load_model_from_checkpoint
    from elf_eqx.training.hooks import CheckpointHook

    saved = CheckpointHook.__call__

    def stop_after_the_first_save(self, info):
        saved(self, info)
        if info.step == 2:
            signal.raise_signal(signal.SIGTERM)  # finishes step 3, saves it, exits 0

    out = tmp_path / "out"
    monkeypatch.setattr(CheckpointHook, "__call__", stop_after_the_first_save)
    distill(teacher, out)
    assert not json.loads((out / "distillation.json").read_text())["rounds"]["2"]["complete"]
    monkeypatch.setattr(CheckpointHook, "__call__", saved)
    distill(teacher, out)
    resumed, straight = (load_model_from_checkpoint(d / "steps_2", "model") for d in (out, students))
    for a, b in zip(*(jax_leaves(m) for m in (resumed, straight))):
        np.testing.assert_array_equal(a, b)
    logged = lambda d: [json.loads(line)["loss"] for line in (d / "steps_2" / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert logged(out) == logged(students)


def jax_leaves(model):
    import equinox as eqx
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))]


@pytest.mark.parametrize("argv, culprit", [
    (["--from-steps", "32", "--to-steps", "6"], "--to-steps 6"),
    (["--from-steps", "8", "--to-steps", "8"], "--to-steps 8"),
])
def test_steps_that_do_not_halve_are_one_line(teacher, tmp_path, capfd, argv, culprit):
    from elf_eqx.distill import main

    with pytest.raises(SystemExit) as stop:
        main([str(teacher), *argv, "--output-dir", str(tmp_path / "out")])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(err) == 1 and culprit in err[0], err


def test_a_teacher_that_is_not_an_elf_run_is_one_line(baseline_runs, tmp_path, capfd):
    from elf_eqx.distill import main

    with pytest.raises(SystemExit) as stop:
        main([str(baseline_runs["mdlm"]), *ROUND, "--output-dir", str(tmp_path / "out")])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(err) == 1 and "MDLM baseline" in err[0] and "ELF run" in err[0], err
    assert not (tmp_path / "out").exists()
