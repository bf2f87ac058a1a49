"""The pieces of an exported folder: the streaming safetensors writer (one tensor at a time, sharded
with Hugging Face's index, readable by the safetensors library) and lazy reader, ``config.json``'s
one reader (:class:`ExportRecord`), the shard size flag, and the T5 encoder's Hugging Face config."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from elf_eqx.encoders.t5 import T5Config
from elf_eqx.errors import IncompatibleModelError
from elf_eqx.io.safetensors_io import (
    INDEX_NAME,
    SafetensorsFile,
    SafetensorsFolder,
    TensorInfo,
    iter_infos,
    shard_plan,
    write_safetensors,
)
from elf_eqx.sharing.record import EXPORT_FORMAT_VERSION, EncoderEntry, ExportRecord
from elf_eqx.sharing.write import parse_size
from elf_eqx.training.run_record import RunRecord


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a.weight": rng.normal(size=(3, 5)).astype(np.float32), "a.bias": np.arange(5, dtype=np.int32),
            "b": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16), "c.big": rng.normal(size=(40, 10)).astype(np.float32)}


def test_written_one_tensor_at_a_time_and_read_back_lazily(tmp_path):
    values = tensors()
    asked = []

    def read(info: TensorInfo):
        asked.append(info.name)
        return values[info.name]

    files = write_safetensors(tmp_path, list(iter_infos(values)), read, metadata={"format": "elf_eqx"})
    assert files == ["model.safetensors"] and asked == list(values)  # each asked for once, in order
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0  # the data starts 8-byte aligned
    file = SafetensorsFile(tmp_path / "model.safetensors")
    assert file.metadata == {"format": "elf_eqx"} and list(file.info()) == list(values)
    for name, value in values.items():
        got = file.read(name)
        assert got.dtype == value.dtype and np.array_equal(got.view(np.uint8), value.view(np.uint8))

    from safetensors.numpy import load_file  # the reference reader agrees (it has no bfloat16 in NumPy)

    del values["b"]
    write_safetensors(tmp_path / "", list(iter_infos(values)), lambda info: values[info.name])
    for name, value in load_file(str(tmp_path / "model.safetensors")).items():
        assert np.array_equal(value, values[name])


def test_sharded_above_the_size_with_the_index(tmp_path):
    values = tensors()
    infos = list(iter_infos(values))
    assert [[t.name for t in shard] for shard in shard_plan(infos, 90)] == [["a.weight", "a.bias"], ["b"], ["c.big"]]
    files = write_safetensors(tmp_path, infos, lambda info: values[info.name], max_shard_bytes=90)
    assert files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors", INDEX_NAME]
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in infos)
    assert index["weight_map"]["c.big"] == "model-00003-of-00003.safetensors"
    folder = SafetensorsFolder(tmp_path)
    assert {n: (i.shape, i.dtype) for n, i in folder.info().items()} == {t.name: (t.shape, t.dtype) for t in infos}
    assert np.array_equal(folder.read("c.big"), values["c.big"])
    with pytest.raises(ValueError, match=r"tensor a.bias is int32\[4\], expected int32\[5\]"):
        write_safetensors(tmp_path / "", infos, lambda info: values[info.name][:4] if info.name == "a.bias"
                          else values[info.name])


def test_shard_sizes():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("1000") == 1000
    assert parse_size("1.5 MB") == 1_500_000
    with pytest.raises(ValueError, match="is not a size"):
        parse_size("big")


def test_the_export_record_reads_what_it_writes_and_refuses_newer():
    from elf_eqx.config import preset
    from elf_eqx.data.spec import DataSpec

    run = RunRecord(elf=preset("ELF-T", encoder_dim=16, vocab_size=40), encoder="offline-minilm",
                    tokenizer="offline-minilm", data_spec=DataSpec(max_length=8, vocab_size=40, pad_id=0, eos_id=1))
    record = ExportRecord(run=run, weights="ema", step=3, origin="x", encoder=EncoderEntry("offline-minilm"),
                          tokenizer_files=("tokenizer.json",), weights_files=("model.safetensors",), parameters=10,
                          dtype="float32", provenance={"tokens": 5.0})
    values = json.loads(json.dumps(record.to_dict()))
    assert values["format"] == "elf_eqx" and values["family"] == "elf" and values["elf"]["depth"] == 2
    assert ExportRecord.from_dict(values) == record
    assert RunRecord.from_dict(values) == run  # the run record's own reader reads the same file
    with pytest.raises(IncompatibleModelError, match=f"format version {EXPORT_FORMAT_VERSION + 1}, newer than this "
                       f"elf_eqx reads \\(version {EXPORT_FORMAT_VERSION}\\)"):
        ExportRecord.from_dict({**values, "format_version": EXPORT_FORMAT_VERSION + 1}, where="x/config.json")
    with pytest.raises(IncompatibleModelError, match="is not an elf_eqx export"):
        ExportRecord.from_dict({"model_type": "t5"})
    with pytest.raises(IncompatibleModelError, match="its export entry cannot be read"):
        ExportRecord.from_dict({**values, "export": {**values["export"], "weights": "best"}})


@pytest.mark.parametrize("config", [T5Config(32128, 512, 64, 2048, 6, 8),
                                    T5Config(250112, 512, 64, 1024, 8, 6, dense_act_fn="gelu_new", is_gated_act=True)])
def test_t5_config_round_trips_through_hugging_face(config):
    assert T5Config.from_hf(config.to_hf()) == config
