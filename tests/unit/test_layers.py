"""Shapes, dtypes and small identities of every building block (beartype checks the annotations)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elf_eqx.baselines.network import BidirectionalLM, CausalLM
from elf_eqx.config import preset
from elf_eqx.nn import Linear, RMSNorm
from elf_eqx.nn.attention import SelfAttention
from elf_eqx.nn.dropout import Dropout, dropout, inference_mode
from elf_eqx.nn.transformer import Block, run_blocks
from elf_eqx.nn.rope import apply_rope, rope_angles
from elf_eqx.nn.scalar_embed import ScalarEmbedder, sinusoidal_features
from elf_eqx.nn.swiglu import SwiGLU

from helpers import TINY_D, TINY_V, tiny_model
from tolerances import assert_reassociated

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

KEY = jax.random.key(0)


def test_linear_shapes_and_dtype():
    layer = Linear(8, 5, key=KEY)
    assert layer(jnp.ones((2, 3, 8))).shape == (2, 3, 5)
    assert layer(jnp.ones((4, 8), jnp.bfloat16)).dtype == jnp.bfloat16
    assert Linear(8, 5, use_bias=False, key=KEY).bias is None
    assert not np.any(np.asarray(Linear(8, 5, key=KEY, init="zeros").weight))
    with pytest.raises(ValueError, match="bogus"):
        Linear(8, 5, key=KEY, init="bogus")


def test_rmsnorm_runs_in_float32_and_returns_input_dtype():
    norm = RMSNorm(6)
    x = jnp.arange(12.0).reshape(2, 6).astype(jnp.bfloat16)
    y = norm(x)
    assert y.dtype == jnp.bfloat16
    x32 = np.arange(12.0).reshape(2, 6)
    expected = x32 / np.sqrt(np.mean(x32**2, -1, keepdims=True) + 1e-6)
    assert_reassociated(norm(jnp.asarray(x32, jnp.float32)), expected, terms=6)  # float32 against the formula


def test_rope_prefix_unrotated_and_interleaved_pairs():
    cos, sin = rope_angles(3, 5, 8)
    assert cos.shape == (8, 4)
    np.testing.assert_array_equal(np.asarray(cos[:3]), 1.0)
    np.testing.assert_array_equal(np.asarray(sin[:3]), 0.0)
    x = jax.random.normal(KEY, (2, 8, 1, 8))
    y = apply_rope(x, cos, sin)
    np.testing.assert_array_equal(np.asarray(y[:, :3]), np.asarray(x[:, :3]))  # cos 1, sin 0: untouched
    # text position 2, pair 1: frequency 10000^(-2/8), dims (2, 3) rotate together
    angle = 2 * 10000 ** (-2 / 8)
    a, b = x[0, 3 + 2, 0, 2], x[0, 3 + 2, 0, 3]
    # float32 against the formula in float64; the angle itself is a float32 power
    assert_reassociated(y[0, 5, 0, 2:4], [a * np.cos(angle) - b * np.sin(angle), b * np.cos(angle) + a * np.sin(angle)],
                        terms=2, layers=2)
    assert_reassociated(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), terms=8, layers=2)


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="head_dim=7"):
        rope_angles(0, 4, 7)


def test_attention_swiglu_embedder_shapes():
    attn = SelfAttention(32, 4, key=KEY)
    cos, sin = rope_angles(2, 6, 8)
    assert attn(jnp.ones((3, 8, 32)), cos, sin).shape == (3, 8, 32)
    assert SwiGLU(32, 40, key=KEY)(jnp.ones((3, 8, 32))).shape == (3, 8, 32)
    emb = ScalarEmbedder(32, key=KEY)
    assert emb(jnp.array([0.0, 0.5])).shape == (2, 32)
    feats = sinusoidal_features(jnp.array([0.0, 1.0]))
    assert feats.shape == (2, 256)
    np.testing.assert_array_equal(np.asarray(feats[0, :128]), 1.0)  # cos(0)
    assert_reassociated(feats[1, 0], np.cos(1.0))  # raw scalar, not ×1000


def test_dropout():
    x = jnp.ones((1000,))
    assert dropout(x, 0.5, None) is x
    y = np.asarray(dropout(x, 0.5, KEY))
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6


def test_elf_modes_shapes_and_dtypes():
    model = tiny_model()
    b, length = 3, 8
    z = jax.random.normal(KEY, (b, length, TINY_D))
    t, omega = jnp.full((b,), 0.3), jnp.full((b,), 2.0)
    x_pred = model(z, t, omega)
    assert x_pred.shape == (b, length, TINY_D) and x_pred.dtype == jnp.float32
    x_sc = model(jnp.concatenate([z, z], -1), t, omega)
    assert x_sc.shape == (b, length, TINY_D)
    logits = model.decode(jnp.concatenate([z, jnp.zeros_like(z)], -1), omega)
    assert logits.shape == (b, length, TINY_V) and logits.dtype == jnp.float32
    h_denoise = model.hidden(z, t, omega, False)
    h_decode = model.hidden(z, t, omega, True)
    assert h_denoise.shape == (b, length, 64)
    assert not np.allclose(np.asarray(h_denoise), np.asarray(h_decode))  # mode tokens matter


def test_elf_bfloat16_compute_keeps_float32_outputs_and_params():
    model = tiny_model(compute_dtype="bfloat16")
    z = jax.random.normal(KEY, (2, 8, TINY_D))
    out = model(z, jnp.full((2,), 0.5), jnp.full((2,), 1.0))
    assert out.dtype == jnp.float32
    assert model.blocks.attn.qkv.weight.dtype == jnp.float32
    ref = tiny_model()(z, jnp.full((2,), 0.5), jnp.full((2,), 1.0))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=5e-2)  # bf16's 8-bit mantissa on O(1) outputs


def test_remat_gives_same_values_and_grads():
    z = jax.random.normal(KEY, (2, 8, TINY_D))
    loss = lambda m: jnp.sum(m(z, jnp.full((2,), 0.5), jnp.full((2,), 1.0)) ** 2)
    g1 = jax.grad(loss)(tiny_model())
    g2 = jax.grad(loss)(tiny_model(remat=True))
    # remat recomputes the forward inside the backward: another program, 2 blocks forward and back
    assert_reassociated(g2.blocks.mlp.w3.weight, g1.blocks.mlp.w3.weight, terms=preset("ELF-T").mlp_hidden, layers=4)


def test_dropout_only_with_key_and_only_in_middle_blocks():
    model = tiny_model(proj_dropout=0.5)
    z = jax.random.normal(KEY, (2, 8, TINY_D))
    args = (z, jnp.full((2,), 0.5), jnp.full((2,), 1.0))
    np.testing.assert_array_equal(np.asarray(model(*args)), np.asarray(model(*args)))
    assert not np.allclose(np.asarray(model(*args, key=jax.random.key(1))), np.asarray(model(*args)))
    assert model.config.dropout_layers() == (True, False)  # depth 2: 2//4 = 0 <= i < 3·2//4 = 1


# -- dropout layers, causal blocks and the compute dtype (the blocks' own static fields) ----------

def test_dropout_module_is_the_identity_in_inference_mode_or_without_a_key():
    x = jnp.ones((1000,))
    layer = Dropout(0.5)
    assert layer(x) is x and Dropout(0.0)(x, key=KEY) is x
    assert inference_mode(layer).inference and inference_mode(layer)(x, key=KEY) is x
    y = layer(x, key=KEY)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(dropout(x, 0.5, KEY)))  # the same draw
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0} and 0.4 < float((y == 0).mean()) < 0.6
    np.testing.assert_array_equal(np.asarray(layer(x, key=KEY, scale=jnp.float32(0.0))), np.asarray(x))  # band off
    assert not inference_mode(inference_mode(layer), False).inference


def test_inference_mode_switches_every_dropout_of_a_model_and_keeps_its_arrays():
    model = tiny_model(attn_dropout=0.3, proj_dropout=0.5)
    z = jax.random.normal(KEY, (2, 8, TINY_D))
    args = (z, jnp.full((2,), 0.5), jnp.full((2,), 1.0))
    frozen = inference_mode(model)
    assert frozen.blocks.proj_dropout.inference and frozen.blocks.attn.attn_dropout.inference
    assert frozen.blocks.attn.attn_dropout.rate == 0.3 and not frozen.blocks.uses_dropout
    np.testing.assert_array_equal(np.asarray(frozen(*args, key=jax.random.key(1))), np.asarray(model(*args)))
    same = lambda a, b: all(x is y for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))  # noqa: E731
    assert same(frozen, model)
    again = inference_mode(frozen, False)
    np.testing.assert_array_equal(np.asarray(again(*args, key=jax.random.key(1))),
                                  np.asarray(model(*args, key=jax.random.key(1))))


def test_dropout_acts_only_in_the_band_of_middle_blocks():
    model = tiny_model(proj_dropout=0.5, attn_dropout=0.2, depth=4)
    assert model.config.dropout_layers() == (False, True, True, False)
    x = jax.random.normal(KEY, (2, 12 + 8, 64))
    cos, sin = rope_angles(12, 8, model.config.head_dim)
    key = jax.random.key(3)
    layer_keys = jax.random.split(key, 4)
    layers = [jax.tree_util.tree_map(lambda a, i=i: a[i], model.blocks) for i in range(4)]
    expected = x
    for i, (block, in_band) in enumerate(zip(layers, model.config.dropout_layers())):
        out = block(expected, cos, sin, key=layer_keys[i], dropout_scale=float(in_band))
        if not in_band:  # an outer block given a key computes exactly what it computes without one
            np.testing.assert_array_equal(np.asarray(out), np.asarray(block(expected, cos, sin)))
        expected = out
    got = run_blocks(model.blocks, model.config, x, cos, sin, key)
    # lax.scan against a loop of layers: two programs, so float32 reassociation over 4 layers whose
    # widest sum is the MLP's fan-in (tests/tolerances.py); seen 1.4e-6 on an AVX-512 CPU.
    assert_reassociated(got, expected, terms=model.config.mlp_hidden, layers=4)
    assert not np.allclose(np.asarray(got), np.asarray(run_blocks(model.blocks, model.config, x, cos, sin, None)))


def test_a_causal_block_attends_causally_without_a_call_time_flag():
    config = preset("ELF-T", encoder_dim=TINY_D, vocab_size=TINY_V)
    causal, bidirectional = Block(config, causal=True, key=KEY), Block(config, key=KEY)
    assert causal.attn.causal and not bidirectional.attn.causal
    cos, sin = rope_angles(0, 6, config.head_dim)
    x = jax.random.normal(KEY, (1, 6, config.hidden_size))
    later = x.at[:, 4:].set(jax.random.normal(jax.random.key(9), (1, 2, config.hidden_size)))
    np.testing.assert_array_equal(np.asarray(causal(x, cos, sin)[:, :4]), np.asarray(causal(later, cos, sin)[:, :4]))
    assert not np.allclose(np.asarray(bidirectional(x, cos, sin)[:, :4]), np.asarray(bidirectional(later, cos, sin)[:, :4]))
    assert CausalLM(config, key=KEY).blocks.attn.causal
    assert not BidirectionalLM(config, key=KEY).blocks.attn.causal


def test_a_block_computes_in_the_dtype_of_its_input():
    config = preset("ELF-T", encoder_dim=TINY_D, vocab_size=TINY_V)
    block = Block(config, key=KEY)
    cos, sin = rope_angles(0, 6, config.head_dim)
    for dtype in (jnp.float32, jnp.bfloat16):
        assert block(jnp.ones((2, 6, config.hidden_size), dtype), cos, sin).dtype == dtype


def test_attention_kernel_follows_the_layers_dropout(monkeypatch):
    """On a (pretended) NVIDIA GPU with bf16 input, ``auto`` takes the fused kernel unless the
    layer's own attention dropout is live and a key is given."""
    import elf_eqx.nn.attention as attention

    calls = []
    monkeypatch.setattr(attention, "accelerator_platform", lambda: "cuda")
    monkeypatch.setattr(attention, "fused_attention", lambda q, k, v, scale, causal=False: calls.append(causal) or v)
    x = jnp.ones((1, 4, 32), jnp.bfloat16)
    cos, sin = rope_angles(0, 4, 8)
    layer = SelfAttention(32, 4, attn_dropout=0.1, causal=True, key=KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer(x, cos, sin, key=KEY)
    assert calls == []  # probability dropout: the explicit path
    layer(x, cos, sin)
    inference_mode(layer)(x, cos, sin, key=KEY)
    SelfAttention(32, 4, key=KEY)(x, cos, sin, key=KEY)
    assert calls == [True, True, False]  # no key, inference mode, rate 0: fused, causal from the layer


def test_the_kernel_a_dry_run_reports_is_the_one_its_layers_run():
    """``ELFConfig.attention_kernel`` applies the layers' rule: with attention dropout, training
    steps take the explicit path and a sampler (no dropout) the fused kernel."""
    config = dataclasses.replace(preset("ELF-T", encoder_dim=TINY_D, vocab_size=TINY_V), platform="cuda",
                                 compute_dtype="bfloat16", attn_dropout=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert config.attention_kernel(training=True) == "xla"
    assert config.attention_kernel(training=False) == "cudnn"
    assert dataclasses.replace(config, attn_dropout=0.0).attention_kernel(training=True) == "cudnn"
    assert dataclasses.replace(config, platform="cpu").attention_kernel(training=False) == "xla"
