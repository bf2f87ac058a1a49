"""The run record (:class:`elf_eqx.training.run_record.RunRecord`): a record round-trips through its
JSON form, every format stored so far reads (each built here as the code of its time stored it), a
newer version is refused naming both versions, and an entry that does not read is one line."""

from __future__ import annotations

import dataclasses

import pytest
from run_fixtures import OLD_FLAT_RUN_CONFIG

from elf_eqx.config import preset
from elf_eqx.data import DataSpec
from elf_eqx.errors import IncompatibleModelError, UserError
from elf_eqx.flow import FlowConstants
from elf_eqx.sampler import SamplerSettings
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.run_record import RUN_RECORD_VERSION, DistillationRecord, RunRecord

ELF = preset("ELF-T", encoder_dim=16, vocab_size=40, compute_dtype="bfloat16", remat="full")
SPEC = DataSpec(vocab_size=40, pad_id=0, eos_id=1, max_length=16, max_input_length=8, pad_mode="eos")
RUN = TrainConfig.from_dict({"model": "ELF-T", "max_length": 16, "max_input_length": 8, "pad_mode": "eos",
                             "sampling": {"steps": 4, "method": "ode"}})
DISTILLED = DistillationRecord(teacher="runs/t step 7 (ema weights, ELF-T)", from_steps=8, time_grid="uniform",
                               omega=3.0, cfg_weight=2.0, round=2, steps=2, teacher_steps=4, decode_share=0.3)
RECORD = RunRecord(family="elf", elf=ELF, encoder="offline-minilm", tokenizer="tok", data_spec=SPEC, run=RUN)


def test_a_record_round_trips_through_its_json_form():
    for record in (RECORD, dataclasses.replace(RECORD, distillation=DISTILLED, converted_from="release x"),
                   RunRecord(family="mdlm", elf=ELF, encoder="tok", tokenizer="tok", data_spec=SPEC)):
        stored = record.to_dict()
        assert stored["version"] == RUN_RECORD_VERSION == record.version
        assert RunRecord.from_dict(stored) == record
    stored = RECORD.to_dict()
    assert stored["elf"] == dataclasses.asdict(ELF) and stored["data_spec"] == SPEC.to_dict()
    assert stored["run"] == RUN.to_dict() and "distillation" not in stored and "converted_from" not in stored
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECORD.encoder = "other"  # type: ignore[misc]


def test_the_records_of_runs_before_versions_read():
    """Version 0: the first runs (flat run config, no family, no tokenizer), the nested sections
    without a family, and a distilled student stored before its decode share was kept."""
    first = {"elf": dataclasses.asdict(ELF), "encoder": "offline-minilm", "data_spec": SPEC.to_dict(),
             "run": {**OLD_FLAT_RUN_CONFIG, "model": "ELF-T", "sample_steps": 4}}
    record = RunRecord.from_dict(first)
    assert (record.family, record.model_family.name, record.tokenizer) == ("elf", "elf", "offline-minilm")
    assert record.run == TrainConfig.from_dict(first["run"]) and record.run.sampling.steps == 4
    assert record.elf == ELF and record.data_spec == SPEC and record.distillation is None

    nested = {**RECORD.to_dict(), "distillation": {**DISTILLED.to_dict()}}
    del nested["version"], nested["family"], nested["distillation"]["decode_share"]
    record = RunRecord.from_dict(nested)
    assert record == dataclasses.replace(RECORD, distillation=dataclasses.replace(DISTILLED, decode_share=0.2))


def test_partial_records_read_with_the_defaults_of_their_time():
    """Older ELF configs (a boolean remat, no attention/platform/scan_unroll), a data layout without
    the fields added since, no run config at all, a converted release's few sections."""
    elf = {k: v for k, v in dataclasses.asdict(ELF).items() if k not in ("attention", "platform", "scan_unroll")}
    spec = {k: SPEC.to_dict()[k] for k in ("vocab_size", "pad_id", "eos_id", "max_length")}
    record = RunRecord.from_dict({"elf": {**elf, "remat": True}, "encoder": "enc", "data_spec": spec})
    assert record.elf == ELF and record.run == TrainConfig()
    assert record.data_spec == DataSpec(vocab_size=40, pad_id=0, eos_id=1, max_length=16)
    assert RunRecord.from_dict(None) == RunRecord() and RunRecord.from_dict({}) == RunRecord()

    flow = FlowConstants(noise_scale=1.5)
    released = SamplerSettings(method="ode", steps=64, omega=1.0, cfg_weight=2.0)
    converted = {"family": "elf", "elf": dataclasses.asdict(ELF), "encoder": "/x/t5.pkl", "tokenizer": "t5",
                 "data_spec": SPEC.to_dict(), "converted_from": "release y",
                 "run": {"data": {"latent_mean": 0.0, "latent_std": 0.2, "max_length": 16, "max_input_length": 8,
                                  "pad_mode": "eos"},
                         "objective": flow.to_dict(), "sampling": released.to_dict()}}
    record = RunRecord.from_dict(converted)
    assert record.run.objective.flow == flow and record.run.sampling.settings_for(record.model_family) == released
    assert (record.converted_from, record.run.data.max_input_length) == ("release y", 8)


def test_a_newer_record_is_refused_naming_both_versions():
    with pytest.raises(IncompatibleModelError) as err:
        RunRecord.from_dict({**RECORD.to_dict(), "version": RUN_RECORD_VERSION + 1}, where="runs/x step 3")
    message = str(err.value)
    assert "\n" not in message and message.startswith("runs/x step 3")
    assert f"version {RUN_RECORD_VERSION + 1}" in message and f"version {RUN_RECORD_VERSION})" in message


@pytest.mark.parametrize("entry, value, named", [
    ("family", "gpt", "stored family 'gpt'"),
    ("elf", {"depth": 2}, "its elf entry"),
    ("data_spec", {"vocab_size": 40, "colour": 1}, "its data_spec entry"),
    ("data_spec", {**SPEC.to_dict(), "pad_id": 99}, "its data_spec entry"),
    ("elf", {**dataclasses.asdict(ELF), "attn_dropout": 1.5}, "its elf entry"),
    ("distillation", {"teacher": "t"}, "its distillation entry"),
    ("run", {"modle": "ELF-T"}, "modle"),
])
def test_an_entry_that_does_not_read_is_one_line(entry, value, named):
    with pytest.raises(UserError) as err:
        RunRecord.from_dict({**RECORD.to_dict(), entry: value}, where="runs/x step 3")
    assert named in str(err.value) and "runs/x step 3" in str(err.value) and "\n" not in str(err.value)


def test_what_readers_need_is_named_and_the_weights_architecture_has_no_runtime_fields():
    with pytest.raises(IncompatibleModelError, match="runs/x has no 'data_spec' entry; cannot sample from it"):
        RunRecord(elf=ELF).require("elf", "data_spec", where="runs/x")
    assert RECORD.require("elf", "encoder", "data_spec") is RECORD
    assert RECORD.architecture == preset("ELF-T", encoder_dim=16, vocab_size=40)
    assert (ELF.compute_dtype, ELF.remat) == ("bfloat16", "full")  # what the run trained with, kept in elf
