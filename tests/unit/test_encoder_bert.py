"""BERT encoder: parity with transformers' BertModel (random and the real all-MiniLM-L6-v2
weights), the offline default, and the tokenizer/encoder/model compatibility check."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from elf_eqx.encoders import (
    BertEncoder,
    IncompatibleEncoderError,
    check_compatible,
    load_text_encoder,
    load_tokenizer,
    offline_minilm_dir,
)

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA


def _rel_err_valid(out, ref, valid):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return np.abs(out - ref)[valid].max() / np.abs(ref[valid]).max()


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight random and non-trivial (norm scales near 1), so no parameter goes untested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.2 * noise if "LayerNorm.weight" in name else (0.3 if p.ndim > 1 else 0.1) * noise)
    return model.eval()


@pytest.fixture(scope="module")
def minilm():
    folder = offline_minilm_dir()
    return folder, load_text_encoder(folder), load_tokenizer(folder)


def test_matches_transformers_bert_random(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64, layer_norm_eps=1e-7)
    model = _randomize(transformers.BertModel(config), seed=3)
    model.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (3, 20))
    mask = np.arange(20)[None] < np.array([[20], [9], [1]])
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    encoder = load_text_encoder(tmp_path)
    assert isinstance(encoder, BertEncoder) and encoder.config.layer_norm_eps == 1e-7
    assert (encoder.dim, encoder.max_positions) == (16, 64)
    out = encoder(jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
    assert _rel_err_valid(out, ref.numpy(), mask) < 1e-5


def test_minilm_matches_transformers_on_kjv(minilm, shared_dir):
    folder, encoder, tokenizer = minilm
    lines = (shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:3]
    texts = [json.loads(line)["text"][:n] for line, n in zip(lines, (400, 150, 60))]
    batch = tokenizer(texts, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"].astype(bool)
    assert mask.sum(1).min() < mask.shape[1]  # a genuinely padded batch
    reference = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    out = encoder(jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
    assert out.shape == (3, ids.shape[1], 384)
    assert _rel_err_valid(out, ref.numpy(), mask) < 1e-5


def test_minilm_is_the_offline_default(minilm):
    folder, encoder, tokenizer = minilm
    assert (folder / "model.safetensors").is_file()
    assert isinstance(load_text_encoder("offline-minilm"), BertEncoder)
    assert (encoder.dim, encoder.vocab_size, encoder.max_positions) == (384, 30522, 512)
    check_compatible(tokenizer, encoder, model_vocab_size=len(tokenizer), model_encoder_dim=384, max_length=512)


def test_mismatches_raise_a_clear_error(minilm, reference_dir):
    _, encoder, tokenizer = minilm
    with pytest.raises(IncompatibleEncoderError) as info:
        check_compatible(tokenizer, encoder, model_vocab_size=32100, model_encoder_dim=512, max_length=1024)
    message = str(info.value)
    assert "vocabulary head has 32100 entries but the tokenizer has 30522" in message
    assert "encoder width 512 but the encoder's width is 384" in message
    assert "max_length 1024 exceeds the encoder's 512 positions" in message
    small = load_text_encoder(reference_dir / "t5_encoder.pkl")  # 60-row embedding table
    with pytest.raises(IncompatibleEncoderError, match="tokenizer has 30522 ids but the encoder's embedding table"):
        check_compatible(tokenizer, small)


def test_pickle_source_needs_a_separate_tokenizer(reference_dir):
    with pytest.raises(ValueError, match="separately"):
        load_tokenizer(reference_dir / "t5_encoder.pkl")
