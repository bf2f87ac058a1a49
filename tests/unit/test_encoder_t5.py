"""T5 encoder: the reference fixture, parity with transformers' PyTorch T5, latents and masks."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from elf_eqx.encoders import (
    T5Config,
    T5Encoder,
    denormalize_latents,
    encoder_attention_mask,
    expand_padding_mask,
    load_text_encoder,
    normalize_latents,
)
from elf_eqx.encoders.t5 import relative_position_buckets
from tolerances import assert_reassociated

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA


def _rel_err(out, ref, valid=None):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(out - ref) if valid is None else np.abs(out - ref)[valid]
    return diff.max() / np.abs(ref).max()


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight random and non-trivial (norm scales near 1), so no parameter goes untested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.2 * noise if "norm" in name.lower() else (0.3 if p.ndim > 1 else 0.1) * noise)
    return model.eval()


def _padded_batch(vocab: int, length: int, valid_lengths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (len(valid_lengths), length)).astype(np.int64)
    mask = np.arange(length)[None, :] < np.array(valid_lengths)[:, None]
    return ids, mask


def _cases(reference_dir):
    cases = np.load(reference_dir / "t5_cases.npz")
    return cases["input_ids"], cases["encoder_attention_mask"] > 0, cases["hidden"]


def test_reference_pickle_matches_fixture(reference_dir):
    encoder = load_text_encoder(reference_dir / "t5_encoder.pkl")
    expected = json.loads((reference_dir / "README.json").read_text())["t5"]
    config = encoder.config
    assert {k: getattr(config, k) for k in expected} == expected
    assert (encoder.dim, encoder.max_positions) == (32, None)
    ids, mask, hidden = _cases(reference_dir)
    out = encoder(jnp.asarray(ids), jnp.asarray(mask))
    assert out.shape == hidden.shape and out.dtype == jnp.float32
    assert _rel_err(out, hidden) < 1e-5


def test_reference_mask_follows_the_mask_rule(reference_dir):
    """The fixture's mask is encoder_attention_mask of its valid/condition tokens: condition rows
    see valid condition tokens; target and pad rows see every valid token."""
    _, mask, _ = _cases(reference_dir)
    valid = mask.any(axis=1)
    is_condition = (mask != mask[:, -1:, :]).any(axis=2)  # rows that see less than a pad row does
    assert valid.sum(1).tolist() == [16, 11, 7] and is_condition.sum(1).tolist() == [0, 4, 3]
    rebuilt = encoder_attention_mask(jnp.asarray(valid), jnp.asarray(is_condition))
    np.testing.assert_array_equal(np.asarray(rebuilt), mask)


def test_label_drop_hides_condition_from_target_rows():
    valid = jnp.array([[1, 1, 1, 1, 1, 0]] * 2, bool)
    cond = jnp.array([[1, 1, 0, 0, 0, 0]] * 2, bool)
    kept, dropped = np.asarray(encoder_attention_mask(valid, cond, jnp.array([False, True])))
    assert kept[0].tolist() == [1, 1, 0, 0, 0, 0] and dropped[0].tolist() == [1, 1, 0, 0, 0, 0]
    assert kept[3].tolist() == [1, 1, 1, 1, 1, 0] and dropped[3].tolist() == [0, 0, 1, 1, 1, 0]
    assert dropped[5].tolist() == [0, 0, 1, 1, 1, 0]  # pad rows follow target rows
    unconditional = encoder_attention_mask(valid, jnp.zeros_like(valid))
    np.testing.assert_array_equal(np.asarray(unconditional), np.asarray(expand_padding_mask(valid)))


def test_latent_normalisation_round_trip():
    h = jnp.linspace(-1.0, 1.0, 12).reshape(2, 3, 2)
    x = normalize_latents(h)
    # one or two float32 roundings of each element against the formula
    assert_reassociated(x, np.asarray(h) * 5)
    assert_reassociated(denormalize_latents(x), h, layers=2)
    assert_reassociated(denormalize_latents(normalize_latents(h, 0.3, 2.0), 0.3, 2.0), h, layers=4)


def test_buckets_are_bidirectional_and_saturate():
    buckets = np.asarray(relative_position_buckets(300, 32, 128))
    assert buckets[0, 0] == 0 and buckets[0, 1] == 17 and buckets[1, 0] == 1
    assert buckets[0, 299] == 31 and buckets[299, 0] == 15  # beyond max_distance: last bucket of each half


SMALL = dict(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)


@pytest.mark.parametrize(
    "variant",
    [
        # T5 (ReLU) saved as a whole encoder-decoder: the loader must take just the encoder.
        ("relu", transformers.T5ForConditionalGeneration, {}),
        # T5 v1.1 style: gated tanh GELU, a short max distance so several log buckets are hit.
        ("gated-gelu", transformers.T5EncoderModel, {"relative_attention_max_distance": 20}),
    ],
    ids=["t5-relu-encdec", "t5v1.1-gated-gelu"],
)
def test_matches_transformers_t5(tmp_path, variant):
    proj, cls, extra = variant
    torch.manual_seed(0)
    model = _randomize(cls(transformers.T5Config(**SMALL, feed_forward_proj=proj, **extra)), seed=1)
    model.save_pretrained(tmp_path)
    ids, mask = _padded_batch(50, 40, [40, 25, 3])  # 40 tokens: offsets 16 and 32 sit on bucket edges
    with torch.no_grad():
        stack = model.get_encoder() if hasattr(model, "get_encoder") else model
        ref = stack(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    encoder = load_text_encoder(tmp_path)
    assert isinstance(encoder, T5Encoder) and encoder.config.is_gated_act == (proj == "gated-gelu")
    out = encoder(jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
    assert _rel_err(out, ref.numpy(), mask) < 1e-5
    pair = encoder(jnp.asarray(ids, jnp.int32), expand_padding_mask(jnp.asarray(mask)))
    np.testing.assert_array_equal(np.asarray(pair), np.asarray(out))


def test_bfloat16_option_runs_close(reference_dir):
    ids, mask, hidden = _cases(reference_dir)
    encoder = load_text_encoder(reference_dir / "t5_encoder.pkl", dtype=jnp.bfloat16)
    assert encoder.embedding.dtype == jnp.bfloat16
    out = encoder(jnp.asarray(ids), jnp.asarray(mask))
    assert out.dtype == jnp.bfloat16 and _rel_err(out, hidden) < 5e-2


def test_wrong_config_names_every_mismatch(tmp_path):
    model = transformers.T5EncoderModel(transformers.T5Config(**SMALL))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "d_ff": 48, "num_layers": 3}))
    with pytest.raises(ValueError) as info:
        load_text_encoder(tmp_path)
    message = str(info.value)
    assert "missing encoder.block.2.layer.0.SelfAttention.q.weight" in message
    assert "DenseReluDense.wi.weight: checkpoint (16, 32) vs model (16, 48)" in message


def test_unreachable_hub_id_suggests_a_local_folder():
    with pytest.raises(FileNotFoundError, match=r"google-t5/t5-small.*local folder"):
        load_text_encoder("google-t5/t5-small")


def test_random_init_and_dim():
    config = T5Config(**SMALL)
    import jax

    encoder = T5Encoder(config, key=jax.random.key(0))
    out = encoder(jnp.zeros((2, 5), jnp.int32))
    assert out.shape == (2, 5, encoder.dim) and encoder.vocab_size == 50
