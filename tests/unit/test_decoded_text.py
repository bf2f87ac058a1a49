"""Sample rows to text as the reference does it (issue 11): everything from the first EOS on is
dropped, a stray pad inside the text is skipped (not a stop), and a conditional row keeps only
``max_length − max_input_length`` ids after its own condition."""

from __future__ import annotations

import numpy as np
import pytest

from elf_eqx.data import DataSpec
from elf_eqx.encoders import load_tokenizer
from elf_eqx.sampling.records import decode_outputs, output_ids

PAD, EOS = 0, 102  # the offline MiniLM tokenizer's [PAD] and [SEP]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("offline-minilm")


def words(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_pad_inside_the_text_is_dropped_and_the_words_after_it_kept(tokenizer):
    before, after, tail = words(tokenizer, "and god said"), words(tokenizer, "let there be light"), words(tokenizer, "amen")
    row = before + [PAD] + after + [EOS] + tail
    length = len(row) + 2
    tokens = np.full((2, length), PAD, np.int32)
    tokens[0, : len(row)] = row
    tokens[1, :3] = before  # no EOS at all: the row runs to its end, trailing pads skipped
    spec = DataSpec(vocab_size=len(tokenizer), pad_id=PAD, eos_id=EOS, max_length=length)
    texts, ids = decode_outputs(tokenizer, tokens, np.zeros(tokens.shape, bool), spec)
    assert texts == ["and god said let there be light", "and god said"]
    assert ids[0] == before + [PAD] + after  # the record keeps the ids as sampled, up to the first EOS
    assert ids[1] == before + [PAD] * (length - 3)


def test_a_conditional_row_keeps_max_length_minus_max_input_length_ids_after_its_condition(tokenizer):
    spec = DataSpec(vocab_size=len(tokenizer), pad_id=PAD, eos_id=EOS, max_length=12, max_input_length=5,
                    pad_mode="eos")
    tokens = np.arange(1000, 1024, dtype=np.int32).reshape(2, 12)  # no EOS anywhere
    cond_lengths = np.array([2, 4])
    cond_mask = np.arange(12)[None] < cond_lengths[:, None]
    _, ids = decode_outputs(tokenizer, tokens, cond_mask, spec)
    assert ids == [list(range(1002, 1009)), list(range(1016, 1023))]  # 12 − 5 = 7 ids after each condition
    tokens[1, 6] = EOS  # an EOS inside the cap still ends the text there
    assert decode_outputs(tokenizer, tokens, cond_mask, spec)[1][1] == [1016, 1017]


def test_output_ids_refuse_a_condition_that_does_not_lead_the_row():
    cond_mask = np.array([[False, True, False]])
    with pytest.raises(ValueError, match="condition positions do not lead the row"):
        output_ids(np.ones((1, 3), np.int32), cond_mask, eos_id=EOS, max_output_length=3)
