"""The judge's byte-level BPE tokenizer: trained on a few KJV chapters, loaded by
``AutoTokenizer`` as a GPT-2-style tokenizer with ``<|endoftext|>`` as EOS, lossless round trip."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from judge.bpe_tokenizer import EOS_TOKEN, train_bpe_tokenizer

VOCAB = 400


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, shared_dir):
    lines = (shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:4]
    folder = train_bpe_tokenizer([json.loads(line)["text"] for line in lines], VOCAB,
                                 tmp_path_factory.mktemp("bpe"))
    return AutoTokenizer.from_pretrained(str(folder))


def test_eos_is_endoftext_and_vocab_is_the_requested_size(tokenizer):
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.bos_token == EOS_TOKEN
    assert tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(EOS_TOKEN) == 0
    assert len(tokenizer) == VOCAB
    assert tokenizer(EOS_TOKEN, add_special_tokens=False)["input_ids"] == [0]
    assert tokenizer("and god said", add_special_tokens=False)["input_ids"][-1] != 0  # no EOS appended


@pytest.mark.parametrize("text", ["And God said, Let there be light: and there was light.",
                                  "  two  spaces,\ttab\nnewline", "unseen bytes: ñ 東京 ✓ 🙂", ""])
def test_round_trip_is_lossless(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < VOCAB for i in ids)


def test_merges_were_learned(tokenizer):
    assert len(tokenizer(" and the Lord", add_special_tokens=False)["input_ids"]) <= len(" and the Lord") // 2


def test_too_small_a_vocabulary_is_refused(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        train_bpe_tokenizer(["a b c"], 100, tmp_path)
