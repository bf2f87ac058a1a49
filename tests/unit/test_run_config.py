import signal
import os

import numpy as np
import pytest

from elf_eqx.training.schedule import make_lr_schedule
from elf_eqx.training.config import TrainConfig, load_yaml_fields, parse_train_config
from elf_eqx.training.metrics_log import MetricsLog, write_text_atomic
from elf_eqx.training.stop_signal import StopRequest


@pytest.mark.parametrize("name, model, batch", [
    ("owt_elf_b", "ELF-B", 512), ("owt_elf_m", "ELF-M", 512), ("owt_elf_l", "ELF-L", 512),
    ("wmt14_de_en", "ELF-B", 512), ("xsum", "ELF-B", 512),
])
def test_reference_presets(name, model, batch):
    cfg = parse_train_config(["--preset", name])
    assert cfg.model == model and cfg.global_batch == batch and cfg.learning_rate == pytest.approx(2e-3)


def test_reference_preset_values():
    wmt = parse_train_config(["--preset", "wmt14_de_en"])
    assert (wmt.max_length, wmt.max_input_length, wmt.pad_mode, wmt.label_drop_prob, wmt.warmup_steps) == (128, 64, "eos", 0.1, 5000)
    assert wmt.decoder_noise_scale == 1.0
    xsum = parse_train_config(["--preset", "xsum"])
    assert (xsum.max_length, xsum.max_input_length) == (1088, 1024)
    owt = parse_train_config(["--preset", "owt_elf_l"])
    assert (owt.epochs, owt.decoder_noise_scale, owt.warmup_epochs) == (3, 5.0, 0.5)


def test_flags_override_presets_and_files(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: ELF-S\nglobal_batch: 32\n")
    cfg = parse_train_config(["--preset", "owt_elf_b", "--config", str(path), "--global-batch", "16"])
    assert cfg.model == "ELF-S" and cfg.global_batch == 16 and cfg.epochs == 5


def test_bad_inputs_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: ELF-B\n")
    with pytest.raises(ValueError, match="modle"):
        load_yaml_fields(bad)
    with pytest.raises(ValueError, match="nope"):
        parse_train_config(["--preset", "nope"])
    with pytest.raises(ValueError, match="--model 'ELF-Q'"):
        TrainConfig(model="ELF-Q")
    with pytest.raises(ValueError, match="--grad-accum 3"):
        TrainConfig(global_batch=8, grad_accum=3)
    with pytest.raises(SystemExit):
        parse_train_config(["--no-such-flag", "1"])
    with pytest.raises(SystemExit):
        parse_train_config(["--global-batch", "-4"])


def test_lr_schedule():
    lr = make_lr_schedule(1.0, 100, 10)
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(0.5) and float(lr(50)) == 1.0
    cos = make_lr_schedule(1.0, 110, 10, "cosine")
    assert float(cos(10)) == pytest.approx(1.0) and float(cos(110)) == pytest.approx(0.0, abs=1e-6)
    assert float(make_lr_schedule(2.0, 10, 0)(0)) == 2.0
    with pytest.raises(ValueError, match="linear"):
        make_lr_schedule(1.0, 10, 1, "linear")


def test_metrics_log_appends_and_atomic_write(tmp_path):
    log = MetricsLog(tmp_path)
    log.write(1, {"loss": np.float32(2.5)})
    log.close()
    log = MetricsLog(tmp_path)
    log.write(2, {"loss": 1.5, "note": "x"})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == ['{"step": 1, "loss": 2.5}', '{"step": 2, "loss": 1.5, "note": "x"}']
    target = tmp_path / "samples" / "a.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_stop_request_catches_sigterm():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_data_mesh_places_batches_and_rejects_uneven_batches():
    from elf_eqx.parallel.mesh import MeshConfig, batch_sharding, check_global_batch, make_mesh, shard_batch

    mesh = make_mesh(MeshConfig(data=1))  # one device, whatever the host exposes
    check_global_batch(4, mesh)
    arrays = shard_batch({"ids": np.arange(8).reshape(4, 2)}, batch_sharding(mesh))
    assert arrays["ids"].shape == (4, 2) and arrays["ids"].sharding == batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(arrays["ids"]), np.arange(8).reshape(4, 2))
    from jax.sharding import AbstractMesh

    with pytest.raises(ValueError, match="--global-batch 4 is not divisible by the 3 devices"):
        check_global_batch(4, AbstractMesh((3,), ("data",)))


def test_metrics_mirror_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, tensorboard=True)
    log.write(3, {"loss": 1.25, "note": "text is not a scalar"})
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(3, 1.25)]


def test_help_documents_every_field(capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        parse_train_config(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name.replace('_', '-')}" in text
    assert "(default: 512)" in text and "Sequences per optimizer step" in text
