"""GPT-2 judge: parity with transformers' GPT2LMHeadModel, the generative-perplexity scoring
rule, corpus perplexity, the judge rows' EOS and padding, and loading without the ``transformer.`` prefix."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import load_file, save_file

from elf_eqx.evaluate import corpus_gen_ppl, scored_rows
from elf_eqx.evaluate.gen_ppl import padded_batch
from elf_eqx.evaluate.judge import judge_nll, load_judge, scoring_mask

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

EOS, VOCAB, LENGTH = 7, 50, 24


@pytest.fixture(scope="module")
def hf_judge(tmp_path_factory):
    """A small random GPT2LMHeadModel saved as safetensors, and the folder."""
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=64,
                                     eos_token_id=EOS, bos_token_id=EOS)
    model = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    return model, folder


def _batch():
    """Right-padded rows with EOS in the middle, at the start, and (as padding) at the end."""
    rng = np.random.default_rng(0)
    ids = rng.integers(8, VOCAB, (4, LENGTH))  # no accidental EOS
    ids[0, [5, 9, 10]] = EOS  # first EOS counts, later ones not
    ids[1, 0] = EOS  # an EOS at position 0 is the row's first: later EOS do not count
    ids[1, 6] = EOS
    lengths = np.array([LENGTH, LENGTH, 13, 2])
    mask = np.arange(LENGTH)[None] < lengths[:, None]
    ids[~mask] = EOS
    return ids, mask


def _torch_reference(model, ids, mask):
    """Per-token NLL and the counted mask as the MDLM-style gen-PPL code computes them, plus padding."""
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()).logits
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), torch.from_numpy(ids[:, 1:]), reduction="none").numpy()
    is_eos = ids == EOS
    first_eos = np.cumsum(is_eos, axis=-1) == 1
    counted = (first_eos[:, 1:] | ~is_eos[:, 1:]) & mask[:, 1:]
    return nll, counted


def test_nll_and_mask_match_torch(hf_judge):
    model, folder = hf_judge
    judge = load_judge(folder)
    ids, mask = _batch()
    nll, counted = judge_nll(judge, jnp.asarray(ids, jnp.int32), jnp.asarray(mask), EOS)
    nll, counted = np.asarray(nll), np.asarray(counted)
    ref_nll, ref_counted = _torch_reference(model, ids, mask)
    assert nll.shape == ids.shape and not counted[:, 0].any()
    np.testing.assert_array_equal(counted[:, 1:], ref_counted)
    assert counted[0, 5] and not counted[0, 9] and not counted[0, 10]
    assert not counted[1, 6] and counted[2, :13].sum() == 12 and counted[3].sum() == 1
    valid = mask[:, 1:]
    assert np.abs(nll[:, 1:] - ref_nll)[valid].max() / np.abs(ref_nll).max() < 1e-5


def test_corpus_perplexity_matches_torch(hf_judge):
    model, folder = hf_judge
    judge = load_judge(folder)
    ids, mask = _batch()
    ref_nll, ref_counted = _torch_reference(model, ids, mask)
    expected = math.exp(ref_nll[ref_counted].sum() / ref_counted.sum())
    rows = [r[m].tolist() for r, m in zip(ids, mask)]
    got = corpus_gen_ppl(judge, rows, eos_id=EOS, batch_size=3)  # last batch padded with empty rows
    assert got.gen_ppl == pytest.approx(expected, rel=1e-5) and got.num_scored_tokens == ref_counted.sum()
    bf16 = corpus_gen_ppl(judge, rows, eos_id=EOS, batch_size=4, compute_dtype=jnp.bfloat16)
    assert bf16.gen_ppl == pytest.approx(expected, rel=2e-2)
    nothing = corpus_gen_ppl(judge, [[], [EOS]], eos_id=EOS)  # no token after a first one: NaN, counted 0
    assert math.isnan(nothing.gen_ppl) and nothing.num_scored_tokens == 0


def test_loads_without_transformer_prefix(hf_judge, tmp_path):
    _, folder = hf_judge
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    ids, mask = _batch()
    a = judge_nll(load_judge(folder), jnp.asarray(ids, jnp.int32), jnp.asarray(mask), EOS)[0]
    b = judge_nll(load_judge(tmp_path), jnp.asarray(ids, jnp.int32), jnp.asarray(mask), EOS)[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_judge_rejects_other_model_types(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="must be a GPT-2 checkpoint"):
        load_judge(tmp_path)


def test_judge_rows_truncate_and_pad():
    rows = scored_rows([[9, 10, 11], [], [8] * 70], eos_id=EOS, max_length=64, append_eos=False)
    ids, mask = padded_batch(rows, batch_size=4, eos_id=EOS, max_length=64)
    assert ids.shape == (4, 64) and ids.dtype == np.int32
    assert ids[0, :3].tolist() == [9, 10, 11] and mask.sum(1).tolist() == [3, 0, 64, 0]
    assert (ids[~mask] == EOS).all()
    ids, mask = padded_batch(scored_rows([[9, 10]], eos_id=EOS, max_length=64), batch_size=1, eos_id=EOS, max_length=64)
    assert ids.shape == (1, 64) and ids[0, :3].tolist() == [9, 10, EOS] and mask.sum() == 3
    np.testing.assert_array_equal(np.asarray(scoring_mask(jnp.asarray(ids), jnp.asarray(mask), EOS))[0, :4],
                                  [False, True, True, False])
