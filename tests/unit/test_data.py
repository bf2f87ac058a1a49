"""The data pipeline on real KJV text and the offline MiniLM tokenizer (elf_eqx.data)."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import datasets
import numpy as np
import pytest
import transformers

from elf_eqx.encoders import offline_minilm_dir

from elf_eqx.data import (
    DataSpec,
    Loader,
    collate,
    embedded_corpus_path,
    load_source,
    prepare_data,
)
from elf_eqx.errors import DataError

SEP = 102  # MiniLM has no EOS token; [SEP] stands in for it


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(str(offline_minilm_dir()))


@pytest.fixture(scope="module")
def kjv(shared_dir: Path) -> Path:
    return shared_dir / "data" / "kjv"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path, n: int) -> list[dict]:
    with path.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def row_list(rows: datasets.Dataset) -> list[list[int]]:
    return rows["input_ids"]


# --- spec and collator, checked by hand -------------------------------------------------------


def test_spec_from_minilm_uses_sep_as_eos(tokenizer):
    spec = DataSpec.from_tokenizer(tokenizer, 16)
    assert (spec.vocab_size, spec.pad_id, spec.eos_id) == (30522, 0, SEP)
    assert json.loads(json.dumps(spec.to_dict()))["eos_id"] == SEP


def test_collate_pad_mode_by_hand():
    spec = DataSpec(vocab_size=50, pad_id=0, eos_id=2, max_length=5)
    batch = collate([[5, 6, 7], [8]], [0, 0], spec)
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]])
    assert batch["input_ids"].dtype == np.int32
    valid = [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    np.testing.assert_array_equal(batch["valid_mask"], valid)
    np.testing.assert_array_equal(batch["cond_mask"], np.zeros((2, 5)))
    np.testing.assert_array_equal(batch["loss_mask"], valid)
    assert all(batch[k].dtype == bool for k in ("valid_mask", "cond_mask", "loss_mask"))


def test_collate_eos_mode_conditional_by_hand():
    spec = DataSpec(vocab_size=50, pad_id=0, eos_id=2, max_length=5, max_input_length=3, pad_mode="eos")
    batch = collate([np.array([11, 12, 13, 14]), np.array([15, 16])], np.array([2, 1]), spec)
    np.testing.assert_array_equal(batch["input_ids"], [[11, 12, 13, 14, 2], [15, 16, 2, 2, 2]])
    np.testing.assert_array_equal(batch["valid_mask"], [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(batch["cond_mask"], [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    # eos mode scores every target position, the EOS padding included, never the condition
    np.testing.assert_array_equal(batch["loss_mask"], [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])


def test_collate_pad_mode_conditional_scores_valid_targets_only():
    spec = DataSpec(vocab_size=50, pad_id=0, eos_id=2, max_length=4, max_input_length=2)
    batch = collate([[11, 12, 13]], [2], spec)
    np.testing.assert_array_equal(batch["input_ids"], [[11, 12, 13, 0]])
    np.testing.assert_array_equal(batch["loss_mask"], [[0, 0, 1, 0]])


# --- sources, tokenization, layout ------------------------------------------------------------


def test_jsonl_text_is_chunked_into_max_length_pieces(tokenizer, kjv, tmp_path):
    chapters = read_jsonl(kjv / "train.jsonl", 4)
    path = write_jsonl(tmp_path / "chapters.jsonl", chapters)
    spec = DataSpec.from_tokenizer(tokenizer, 64)
    data = prepare_data(path, tokenizer, spec, cache_dir=tmp_path / "cache")
    docs = [encode(tokenizer, c["text"]) for c in chapters]
    expected = [doc[i : i + 64] for doc in docs for i in range(0, len(doc), 64)]
    assert len(expected) == sum(math.ceil(len(d) / 64) for d in docs)
    assert row_list(data.rows) == expected
    assert not data.conditional and set(data.rows["cond_length"]) == {0}
    # the last piece of a chapter is padded with the pad id and unscored there
    last = len(expected[: math.ceil(len(docs[0]) / 64)]) - 1
    batch = collate([np.array(expected[last])], [0], spec)
    n = len(expected[last])
    assert n < 64 and batch["valid_mask"][0].sum() == n == batch["loss_mask"][0].sum()
    assert (batch["input_ids"][0, n:] == spec.pad_id).all()


def test_packing_concatenates_documents_with_eos(tokenizer, kjv, tmp_path):
    chapters = read_jsonl(kjv / "train.jsonl", 4)
    path = write_jsonl(tmp_path / "chapters.jsonl", chapters)
    spec = DataSpec.from_tokenizer(tokenizer, 64, packing=True)
    rows = row_list(prepare_data(path, tokenizer, spec, use_cache=False).rows)
    stream = [t for c in chapters for t in (*encode(tokenizer, c["text"]), SEP)]
    assert all(len(r) == 64 for r in rows)
    assert len(rows) == len(stream) // 64
    assert [t for r in rows for t in r] == stream[: len(rows) * 64]
    batch = collate(rows[:3], [0, 0, 0], spec)
    assert batch["valid_mask"].all() and batch["loss_mask"].all() and not batch["cond_mask"].any()


def test_jsonl_pairs_give_conditional_rows_and_eos_masks(tokenizer, kjv, tmp_path):
    path = kjv / "next_verse_valid.jsonl"
    pairs = read_jsonl(path, 50)
    spec = DataSpec.from_tokenizer(tokenizer, 48, max_input_length=20, pad_mode="eos")
    data = prepare_data(path, tokenizer, spec, cache_dir=tmp_path / "cache")
    assert data.conditional and len(data.rows) == 1514
    for pair, row, cond_length in zip(pairs, data.rows[:50]["input_ids"], data.rows[:50]["cond_length"]):
        cond = encode(tokenizer, pair["input"])[:20]
        target = encode(tokenizer, pair["output"])[: 48 - len(cond)]
        assert cond_length == len(cond) and row == cond + target
    loader = Loader(data.rows, spec, 16, shuffle=False)
    batch = next(loader)
    lengths = np.array([len(r) for r in data.rows[:16]["input_ids"]])
    cond_lengths = np.array(data.rows[:16]["cond_length"])
    np.testing.assert_array_equal(batch["valid_mask"].sum(1), lengths)
    np.testing.assert_array_equal(batch["cond_mask"].sum(1), cond_lengths)
    np.testing.assert_array_equal(batch["loss_mask"], ~batch["cond_mask"])
    assert (batch["input_ids"][~batch["valid_mask"]] == SEP).all()


def test_pretokenized_save_to_disk_folder(tokenizer, kjv, tmp_path):
    pairs = read_jsonl(kjv / "next_verse_valid.jsonl", 6)
    conds = [encode(tokenizer, p["input"]) for p in pairs]
    targets = [encode(tokenizer, p["output"]) for p in pairs]
    padded = [t + [0, 0, 0] for t in targets]  # pre-tokenized data may arrive padded
    extra = [str(i) for i in range(6)]
    folder = tmp_path / "pretok"
    datasets.Dataset.from_dict({"input_ids": padded, "condition_input_ids": conds, "id": extra}).save_to_disk(folder)
    spec = DataSpec.from_tokenizer(tokenizer, 40, max_input_length=16)
    data = prepare_data(folder, tokenizer, spec, cache_dir=tmp_path / "cache")
    assert data.conditional and not data.tokens_from_cache
    for c, t, row, n in zip(conds, targets, data.rows["input_ids"], data.rows["cond_length"]):
        assert n == min(len(c), 16) and row == c[:16] + t[: 40 - n]
    # a DatasetDict folder is indexed by split; unconditional pre-tokenized ids are chunked
    dict_folder = tmp_path / "pretok_dict"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"input_ids": targets})}).save_to_disk(dict_folder)
    source = load_source(dict_folder, split="validation")
    assert source.kind == "tokens" and not source.conditional
    rows = prepare_data(source, tokenizer, DataSpec.from_tokenizer(tokenizer, 8), use_cache=False).rows
    assert [t for r in row_list(rows) for t in r] == [t for doc in targets for t in doc]


def test_txt_file_is_split_into_blank_line_separated_documents(tokenizer, kjv, tmp_path):
    chapters = [c["text"] for c in read_jsonl(kjv / "valid.jsonl", 3)]
    path = tmp_path / "kjv.txt"
    path.write_text(f"{chapters[0]}\n\n\n{chapters[1][:200]}\n{chapters[1][200:]}\n  \n{chapters[2]}\n")
    source = load_source(path)
    assert source.kind == "text"
    assert source.dataset["text"] == [chapters[0], f"{chapters[1][:200]}\n{chapters[1][200:]}", chapters[2]]


def test_directory_of_text_files(tokenizer, kjv, tmp_path):
    chapters = read_jsonl(kjv / "valid.jsonl", 3)
    (tmp_path / "corpus" / "more").mkdir(parents=True)
    write_jsonl(tmp_path / "corpus" / "a.jsonl", chapters[:2])
    (tmp_path / "corpus" / "more" / "b.txt").write_text(chapters[2]["text"])
    (tmp_path / "corpus" / "notes.md").write_text("ignored")
    source = load_source(tmp_path / "corpus")
    assert source.dataset["text"] == [c["text"] for c in chapters]


def test_embedded_corpus_is_shipped_and_small():
    train, valid = embedded_corpus_path("train"), embedded_corpus_path("valid")
    assert train.stat().st_size < 1_500_000
    ids = [json.loads(line)["id"] for line in train.open()]
    valid_ids = [json.loads(line)["id"] for line in valid.open()]
    assert 150 <= len(ids) <= 250 and valid_ids and not set(ids) & set(valid_ids)
    assert load_source(train).kind == "text"
    # the name "embedded" (run configs' default) is the same corpus
    assert load_source("embedded").dataset["text"] == load_source(train).dataset["text"]
    assert len(load_source("embedded", split="validation").dataset) == len(valid_ids)


def test_second_call_hits_the_cache_and_does_not_tokenize(tokenizer, kjv, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "chapters.jsonl", read_jsonl(kjv / "valid.jsonl", 5))
    spec = DataSpec.from_tokenizer(tokenizer, 32)
    first = prepare_data(path, tokenizer, spec, cache_dir=tmp_path / "cache")
    assert not first.tokens_from_cache and not first.rows_from_cache

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(type(tokenizer), "__call__", no_tokenizing)
    second = prepare_data(path, tokenizer, spec, cache_dir=tmp_path / "cache")
    assert second.tokens_from_cache and second.rows_from_cache
    assert second.rows["input_ids"] == first.rows["input_ids"]
    # other layout settings reuse the cached token ids
    packed = prepare_data(path, tokenizer, DataSpec.from_tokenizer(tokenizer, 32, packing=True), cache_dir=tmp_path / "cache")
    assert packed.tokens_from_cache and not packed.rows_from_cache


def test_changed_file_is_tokenized_again(tokenizer, kjv, tmp_path):
    chapters = read_jsonl(kjv / "valid.jsonl", 3)
    path = write_jsonl(tmp_path / "chapters.jsonl", chapters[:2])
    spec = DataSpec.from_tokenizer(tokenizer, 32)
    prepare_data(path, tokenizer, spec, cache_dir=tmp_path / "cache")
    write_jsonl(path, chapters)
    assert not prepare_data(path, tokenizer, spec, cache_dir=tmp_path / "cache").tokens_from_cache


# --- loader -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kjv_rows(tokenizer, tmp_path_factory) -> tuple[datasets.Dataset, DataSpec]:
    spec = DataSpec.from_tokenizer(tokenizer, 32)
    source = load_source(embedded_corpus_path("valid"))
    data = prepare_data(source, tokenizer, spec, cache_dir=tmp_path_factory.mktemp("cache"))
    return data.rows, spec


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_loader_shuffles_deterministically_by_seed_and_epoch(kjv_rows):
    rows, spec = kjv_rows
    a, b, c = (Loader(rows, spec, 16, seed=s) for s in (3, 3, 4))
    batches_a = [next(a) for _ in range(5)]
    assert_batches_equal(batches_a, [next(b) for _ in range(5)])
    assert not np.array_equal(batches_a[0]["input_ids"], next(c)["input_ids"])
    expected = np.random.default_rng([3, 1]).permutation(len(rows))[:16]
    np.testing.assert_array_equal(a.batch_indices(1, 0), expected)
    assert batches_a[0]["input_ids"].shape == (16, 32)


def test_loader_epochs_visit_rows_once_and_drop_the_tail(kjv_rows):
    rows, spec = kjv_rows
    loader = Loader(rows, spec, 64)
    assert loader.steps_per_epoch == len(rows) // 64
    seen = np.concatenate([loader.batch_indices(0, s) for s in range(loader.steps_per_epoch)])
    assert len(np.unique(seen)) == len(seen) == loader.steps_per_epoch * 64
    for _ in range(loader.steps_per_epoch):
        next(loader)
    assert loader.state()["epoch"] == 1 and loader.state()["step"] == 0


def test_restored_loader_yields_exactly_the_uninterrupted_batches(kjv_rows):
    rows, spec = kjv_rows
    full = Loader(rows, spec, 24, seed=7)
    steps = full.steps_per_epoch * 2 + 3  # runs through two epoch boundaries
    uninterrupted = [next(full) for _ in range(steps)]
    for cut in (0, 5, full.steps_per_epoch, full.steps_per_epoch + 1):
        first = Loader(rows, spec, 24, seed=7)
        head = [next(first) for _ in range(cut)]
        saved = json.loads(json.dumps(first.state()))
        resumed = Loader(rows, spec, 24, seed=7)
        resumed.restore(saved)
        assert_batches_equal(head + [next(resumed) for _ in range(steps - cut)], uninterrupted)


def test_process_shards_are_disjoint_and_cover_the_global_batch(kjv_rows):
    rows, spec = kjv_rows
    whole = Loader(rows, spec, 32, seed=1)
    shards = [Loader(rows, spec, 32, seed=1, process_index=p, process_count=2) for p in range(2)]
    for step in range(3):
        parts = [shard.batch_indices(0, step) for shard in shards]
        assert not set(parts[0]) & set(parts[1])
        np.testing.assert_array_equal(np.concatenate(parts), whole.batch_indices(0, step))
        global_batch = next(whole)
        local = [next(shard) for shard in shards]
        assert local[0]["input_ids"].shape == (16, 32)
        for key in global_batch:
            np.testing.assert_array_equal(np.concatenate([b[key] for b in local]), global_batch[key])


# --- errors -----------------------------------------------------------------------------------


def test_missing_paths_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="not found: .*nope.jsonl"):
        load_source(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_source(tmp_path / "data.csv")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8"):
        load_source(tmp_path / "latin1.txt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no .txt or .jsonl files"):
        load_source(tmp_path / "empty_dir")


def test_unreachable_hub_dataset_is_a_data_error():
    with pytest.raises(DataError, match="could not load Hugging Face dataset 'embedded-language-flows/"):
        load_source("embedded-language-flows/xsum_validation_t5", split="train")


def test_empty_sources(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty.jsonl: no records"):
        load_source(tmp_path / "empty.jsonl")
    (tmp_path / "blank.txt").write_text("  \n\n \n")
    with pytest.raises(DataError, match="blank.txt: no records"):
        load_source(tmp_path / "blank.txt")
    datasets.Dataset.from_dict({"text": []}).save_to_disk(tmp_path / "empty_saved", num_shards=1)
    with pytest.raises(DataError, match="empty_saved: dataset has no records"):
        load_source(tmp_path / "empty_saved")
    datasets.Dataset.from_dict({"text": []}).save_to_disk(tmp_path / "no_shards")
    with pytest.raises(DataError, match="no_shards: cannot load this save_to_disk folder"):
        load_source(tmp_path / "no_shards")


def test_records_lacking_fields(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", [{"input": "a", "output": "b"}, {"input": "c"}])
    with pytest.raises(DataError, match=r"pairs.jsonl:2: missing field 'output'"):
        load_source(tmp_path / "pairs.jsonl")
    write_jsonl(tmp_path / "other.jsonl", [{"id": 1, "body": "x"}])
    with pytest.raises(DataError, match=r"other.jsonl:1: records need a 'text' field.*found: body, id"):
        load_source(tmp_path / "other.jsonl")
    write_jsonl(tmp_path / "typed.jsonl", [{"text": 3}])
    with pytest.raises(DataError, match=r"typed.jsonl:1: field 'text' must be a string"):
        load_source(tmp_path / "typed.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: not valid JSON"):
        load_source(tmp_path / "broken.jsonl")
    datasets.Dataset.from_dict({"label": [1]}).save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match="saved: records need .*found: label"):
        load_source(tmp_path / "saved")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(tmp_path / "dd")
    with pytest.raises(DataError, match=r"no split 'test' \(has \['train'\]\)"):
        load_source(tmp_path / "dd", split="test")
    (tmp_path / "mixed").mkdir()
    write_jsonl(tmp_path / "mixed" / "a.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "mixed" / "b.jsonl", [{"input": "a", "output": "b"}])
    with pytest.raises(DataError, match="b.jsonl: has fields"):
        load_source(tmp_path / "mixed")


def test_token_ids_outside_the_tokenizer_vocabulary(tokenizer, tmp_path):
    datasets.Dataset.from_dict({"input_ids": [[5, 6, 40000]]}).save_to_disk(tmp_path / "t5ids")
    spec = DataSpec.from_tokenizer(tokenizer, 8)
    with pytest.raises(DataError, match=r"t5ids'.*token id 40000 .*\[0, 30522\) of tokenizer '.*model'"):
        prepare_data(tmp_path / "t5ids", tokenizer, spec, use_cache=False)


def test_layout_settings_that_cannot_apply(tokenizer, kjv, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", read_jsonl(kjv / "next_verse_valid.jsonl", 3))
    for unset in (None, 0):
        with pytest.raises(DataError, match="conditional data needs max_input_length"):
            prepare_data(path, tokenizer, DataSpec.from_tokenizer(tokenizer, 16, max_input_length=unset), use_cache=False)
    packing = DataSpec.from_tokenizer(tokenizer, 16, max_input_length=8, packing=True)
    with pytest.raises(DataError, match="packing applies to unconditional data only"):
        prepare_data(path, tokenizer, packing, use_cache=False)
    with pytest.raises(DataError, match="max_input_length must be in"):
        DataSpec.from_tokenizer(tokenizer, 16, max_input_length=16)
    with pytest.raises(DataError, match="spec.vocab_size=100 but len"):
        prepare_data(path, tokenizer, DataSpec(vocab_size=100, pad_id=0, eos_id=1, max_length=8), use_cache=False)
    no_eos = types.SimpleNamespace(name_or_path="toy", eos_token_id=None, sep_token_id=None, pad_token_id=0)
    with pytest.raises(DataError, match="tokenizer 'toy' has neither an EOS nor a SEP"):
        DataSpec.from_tokenizer(no_eos, 16)


def test_loader_settings_errors(kjv_rows):
    rows, spec = kjv_rows
    with pytest.raises(DataError, match="global batch size 15 must be a positive multiple of process_count 2"):
        Loader(rows, spec, 15, process_count=2)
    with pytest.raises(DataError, match="process_index 2 is not in"):
        Loader(rows, spec, 16, process_index=2, process_count=2)
    with pytest.raises(DataError, match="fewer than one global batch"):
        Loader(rows, spec, len(rows) + 1)
    state = Loader(rows, spec, 16, seed=1).state()
    with pytest.raises(DataError, match="loader state has seed=1, this loader has 2"):
        Loader(rows, spec, 16, seed=2).restore(state)
