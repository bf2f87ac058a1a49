"""The accelerator fast path, checked on the CPU: attention selection, bf16 compute, remat
policies, Muon's Newton–Schulz dtype and Adam defaults, the encoder's compute dtype."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elf_eqx.config import ELFConfig, preset, resolve_compute_dtype
from elf_eqx.encoders.latent_encoder import LatentEncoder, TokenBatch
from elf_eqx.encoders.t5 import T5Config, T5Encoder
from elf_eqx.nn.attention import SelfAttention, choose_attention, explicit_attention, fused_attention
from elf_eqx.nn.rope import rope_angles
from elf_eqx.objective import FlowObjective
from elf_eqx.training.optim import make_optimizer, muon, muon_dimension_numbers

from helpers import random_batch, tiny_model
from tolerances import assert_reassociated, reassociation

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

FAN_IN = preset("ELF-T").mlp_hidden  # the widest sum of the tiny model's blocks

KEY = jax.random.key(5)
BF16 = jnp.bfloat16


# -- precision and remat settings ----------------------------------------------------------------

def test_compute_dtype_auto_is_float32_on_cpu_and_bf16_on_accelerators():
    assert jax.default_backend() == "cpu"
    assert resolve_compute_dtype("auto") == jnp.float32
    assert tiny_model().compute_dtype == jnp.float32 and tiny_model().config.compute_dtype == "auto"
    assert resolve_compute_dtype("auto", "gpu") == BF16 and resolve_compute_dtype("auto", "tpu") == BF16
    assert resolve_compute_dtype("float32", "gpu") == jnp.float32
    with pytest.raises(ValueError, match="compute_dtype"):
        resolve_compute_dtype("float16")


def test_remat_accepts_old_booleans_and_has_preset_defaults():
    base = dict(depth=2, hidden_size=64, num_heads=4)
    assert ELFConfig(**base, remat=True).remat == "full" and ELFConfig(**base, remat=False).remat == "none"
    assert preset("ELF-B").remat == "none" and preset("ELF-M").remat == "dots_saveable"
    assert preset("ELF-L").remat == "full" and preset("ELF-L", remat="none").remat == "none"
    with pytest.raises((ValueError, TypeError), match="remat"):  # TypeError: under the beartype hook
        ELFConfig(**base, remat="everything")
    with pytest.raises((ValueError, TypeError), match="attention"):
        ELFConfig(**base, attention="flash")


# -- attention -----------------------------------------------------------------------------------

def test_cudnn_attention_is_chosen_only_on_nvidia_gpus_with_half_precision():
    assert choose_attention("auto", "cuda", BF16, 64) == "cudnn"
    assert choose_attention("auto", "cuda", jnp.float16, 66) == "cudnn"  # ELF-M: padded to 72
    assert choose_attention("auto", "cuda", jnp.float32, 64) == "xla"
    for platform in ("cpu", "rocm"):
        assert choose_attention("auto", platform, BF16, 64) == "xla"
    assert choose_attention("auto", "tpu", BF16, 64) == "pallas"  # the Pallas flash kernel on TPUs
    assert choose_attention("auto", "cuda", BF16, 200) == "xla"
    assert choose_attention("xla", "cuda", BF16, 64) == "xla"
    assert choose_attention("cudnn", "cuda", BF16, 64) == "cudnn"
    with pytest.raises(ValueError, match="not an NVIDIA GPU"):
        choose_attention("cudnn", "cpu", BF16, 64)
    with pytest.raises(ValueError, match="float32"):
        choose_attention("cudnn", "cuda", jnp.float32, 64)


def test_attention_dropout_falls_back_to_xla_and_says_so_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert choose_attention("auto", "cuda", BF16, 32, dropout_active=True) == "xla"
    assert len([w for w in caught if "attn_dropout" in str(w.message)]) <= 1
    assert choose_attention("auto", "cuda", BF16, 32, dropout_active=False) == "cudnn"


def _reference_attention(layer: SelfAttention, x, cos, sin):
    """The attention math written out in NumPy float64 from the layer's weights."""
    w = lambda a: np.asarray(a, np.float64)
    b, n, h = x.shape
    heads, d = layer.num_heads, h // layer.num_heads
    qkv = (w(x) @ w(layer.qkv.weight) + w(layer.qkv.bias)).reshape(b, n, 3, heads, d)

    def norm(a, scale):
        return a / np.sqrt(np.mean(a * a, -1, keepdims=True) + layer.q_norm.eps) * w(scale)

    def rope(a):
        p = a.reshape(*a.shape[:-1], d // 2, 2)
        c, s = w(cos)[:, None], w(sin)[:, None]
        return np.stack([p[..., 0] * c - p[..., 1] * s, p[..., 1] * c + p[..., 0] * s], -1).reshape(a.shape)

    q, k, v = rope(norm(qkv[:, :, 0], layer.q_norm.weight)), rope(norm(qkv[:, :, 1], layer.k_norm.weight)), qkv[:, :, 2]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, n, h)
    return out @ w(layer.proj.weight) + w(layer.proj.bias)


def test_xla_attention_matches_the_written_out_math():
    layer = SelfAttention(48, 4, implementation="xla", key=KEY)
    x = jax.random.normal(jax.random.key(1), (2, 3 + 7, 48))
    cos, sin = rope_angles(3, 7, 12)
    out = layer(x, cos, sin)
    # XLA against NumPy: projections of width 48, then scores and values over 10 positions
    assert_reassociated(out, _reference_attention(layer, x, cos, sin), terms=48, layers=3)
    auto = SelfAttention(48, 4, implementation="auto", key=KEY)(x, cos, sin)  # CPU: auto is the same path
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(out))


@pytest.mark.parametrize("head_dim", [8, 6])
def test_fused_attention_with_head_padding_equals_explicit(head_dim):
    kq, kk, kv = jax.random.split(KEY, 3)
    q, k, v = (jax.random.normal(kk_, (2, 11, 3, head_dim)) for kk_ in (kq, kk, kv))
    scale = head_dim**-0.5
    fused = fused_attention(q, k, v, scale, implementation="xla")  # the padding logic, run by XLA
    assert_reassociated(fused, explicit_attention(q, k, v, scale), terms=11, layers=2)  # padded heads: another program


# -- bf16 and remat ------------------------------------------------------------------------------

@jax.jit
def _loss(model, batch):
    return FlowObjective()(model, batch, jax.random.key(3), dropout=False)[0]


_loss_and_grads = jax.jit(jax.value_and_grad(_loss))
_forward = jax.jit(lambda model, z: model(z, 0.5, 1.0))


def test_bf16_forward_and_loss_within_tolerance_of_float32():
    """bf16 activations (8-bit mantissa) against float32 on the same weights: forward within
    5e-2 absolute (outputs are O(1)), loss within 3% relative."""
    batch = random_batch(batch=4, length=8)
    f32, bf16 = tiny_model(), tiny_model(compute_dtype="bfloat16")
    z = jnp.concatenate([batch.x, batch.x], -1)
    out32, out16 = _forward(f32, z), _forward(bf16, z)
    assert out16.dtype == jnp.float32 and f32.blocks.attn.qkv.weight.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out16), np.asarray(out32), atol=5e-2)
    l32, l16 = float(_loss(f32, batch)), float(_loss(bf16, batch))
    assert l16 == pytest.approx(l32, rel=3e-2)


@pytest.mark.parametrize("policy", ["dots_saveable", "full"])
def test_remat_policy_gives_same_loss_forward_and_every_gradient(policy):
    batch = random_batch(batch=4, length=8)
    base, remat = tiny_model(), tiny_model(remat=policy)
    z = jnp.concatenate([batch.x, batch.x], -1)
    np.testing.assert_array_equal(np.asarray(_forward(remat, z)), np.asarray(_forward(base, z)))
    (l1, g1), (l2, g2) = (_loss_and_grads(m, batch) for m in (base, remat))
    # remat recomputes the forward inside the backward: another program, 2 blocks forward and back
    assert float(l1) == pytest.approx(float(l2), rel=reassociation(FAN_IN, layers=4))
    leaves1, leaves2 = jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)
    assert len(leaves1) == len(leaves2) > 20
    for a, b in zip(leaves1, leaves2):
        assert_reassociated(b, a, terms=FAN_IN, layers=4)


# -- Muon ----------------------------------------------------------------------------------------

def _one_step_state(opt, model):
    grads = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape), model)
    _, state = jax.jit(opt.update)(grads, opt.init(model), model)
    return state


def test_muon_adam_side_uses_optax_defaults():
    model = tiny_model()
    ours = _one_step_state(make_optimizer(model, 1e-3, name="muon", clip_norm=None), model)
    optax_default = _one_step_state(optax.contrib.muon(1e-3, muon_weight_dimension_numbers=muon_dimension_numbers), model)
    old = _one_step_state(make_optimizer(model, 1e-3, name="muon", b2=0.95, clip_norm=None), model)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(optax_default)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The non-matrix leaf final_norm.weight: its Adam nu after one step is (1 − b2)·g².
    ours_nu = ours.inner_states["adam"].inner_state[0].nu.final_norm.weight
    old_nu = old.inner_states["adam"].inner_state[0].nu.final_norm.weight
    # (1 − b2) with b2 as float32 constants: 1 − 0.999 keeps only ~4 significant digits of 0.999's rounding
    np.testing.assert_allclose(np.asarray(ours_nu), 0.001 / 0.05 * np.asarray(old_nu), rtol=1e-5)


def test_adamw_keeps_b2_095():
    model = tiny_model()
    ours = _one_step_state(make_optimizer(model, 1e-3, name="adamw", clip_norm=None), model)
    ref = _one_step_state(optax.adamw(1e-3, b1=0.9, b2=0.95), model)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bf16_newton_schulz_keeps_optax_state_tree_and_float32_state():
    model = tiny_model()
    grads = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape), model)
    f32, b16 = muon(1e-3, muon_dimension_numbers), muon(1e-3, muon_dimension_numbers, ns_dtype=BF16)
    s32, s16 = f32.init(model), b16.init(model)
    assert jax.tree_util.tree_structure(s32) == jax.tree_util.tree_structure(s16)
    step32, step16 = jax.jit(f32.update), jax.jit(b16.update)
    for _ in range(2):
        u32, s32 = step32(grads, s32, model)
        u16, s16 = step16(grads, s16, model)
    assert {x.dtype for x in jax.tree_util.tree_leaves(s16)} <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(u16))
    # The momentum is float32 arithmetic on both paths; only the orthogonalisation is bf16.
    np.testing.assert_array_equal(np.asarray(s16.inner_states["muon"].inner_state[0].mu.unembed.weight),
                                  np.asarray(s32.inner_states["muon"].inner_state[0].mu.unembed.weight))
    for a, b in zip(jax.tree_util.tree_leaves(u32), jax.tree_util.tree_leaves(u16)):
        rel = float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(a), 1e-30))
        assert rel < 0.15, rel  # bf16 Newton–Schulz: a few per cent

    # auto resolves for the network's platform, as its compute dtype does: float32 on this CPU, bf16
    # for an accelerator (a dry run's target)
    def first_update(**kw):
        opt = make_optimizer(model, 1e-3, name="muon", clip_norm=None, **kw)
        return jax.tree_util.tree_leaves(jax.jit(opt.update)(grads, opt.init(model), model)[0])

    for platform, dtype in ((None, "float32"), ("tpu", "bfloat16"), ("cuda", "bfloat16")):
        for a, b in zip(first_update(ns_dtype="auto", platform=platform), first_update(ns_dtype=dtype)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- the frozen encoder ----------------------------------------------------------------------------

def test_latent_encoder_in_bf16_gives_float32_latents_close_to_float32():
    t5 = T5Encoder(T5Config(vocab_size=30, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4), key=KEY)
    ids = jax.random.randint(jax.random.key(2), (2, 9), 0, 30)
    valid = jnp.ones((2, 9), bool)
    batch = TokenBatch(ids, valid, jnp.zeros_like(valid), valid)
    encode = jax.jit(lambda enc, b: enc(b, KEY).x)
    lat32 = encode(LatentEncoder(t5, 0.0, 0.2, compute_dtype="float32"), batch)
    lat16 = encode(LatentEncoder(t5, 0.0, 0.2, compute_dtype="bfloat16"), batch)
    assert lat16.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(encode(LatentEncoder(t5, 0.0, 0.2), batch)), np.asarray(lat32))
    rel = float(jnp.linalg.norm(lat16 - lat32) / jnp.linalg.norm(lat32))
    assert rel < 2e-2, rel
