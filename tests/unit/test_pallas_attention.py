"""The Pallas flash-attention kernel for TPUs (``attention: pallas``, what ``auto`` picks on a TPU),
run on the CPU in Pallas's TPU interpret mode and checked against the explicit XLA math: the
forward pass and every gradient, with the sequence padded to the kernel's block (ELF's 12 prefix
tokens make it no multiple of 128), causal or not, for the presets' head sizes."""

from __future__ import annotations

import jax
import jax.experimental.pallas.tpu as pltpu
import jax.numpy as jnp
import numpy as np
import pytest

from elf_eqx.nn.attention import SelfAttention, explicit_attention, pallas_attention
from elf_eqx.nn.rope import rope_angles
from tolerances import assert_reassociated

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

KEY = jax.random.key(11)


def _qkv(n: int, head_dim: int, dtype=jnp.float32):
    keys = jax.random.split(KEY, 3)
    return tuple(jax.random.normal(k, (2, n, 3, head_dim), dtype) for k in keys)


@pytest.mark.slow
@pytest.mark.parametrize("n, head_dim, causal", [(140, 64, False), (37, 66, False), (140, 80, True)])
def test_pallas_matches_explicit_forward_and_gradients(n, head_dim, causal):
    q, k, v = _qkv(n, head_dim)
    scale = head_dim**-0.5
    loss = lambda attend: lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v, scale, causal=causal)))  # noqa: E731
    with pltpu.force_tpu_interpret_mode():
        out = pallas_attention(q, k, v, scale, causal=causal)
        grads = jax.grad(loss(pallas_attention), (0, 1, 2))(q, k, v)
    # blockwise online softmax against one softmax: sums over n keys and head_dim features reordered
    terms = max(n, head_dim)
    assert_reassociated(out, explicit_attention(q, k, v, scale, causal=causal), terms=terms, layers=2)
    for got, want in zip(grads, jax.grad(loss(explicit_attention), (0, 1, 2))(q, k, v)):
        assert_reassociated(got, want, terms=terms, layers=4)


def test_pallas_in_bf16_stays_within_the_bf16_tolerance():
    q, k, v = _qkv(140, 64, jnp.bfloat16)
    with pltpu.force_tpu_interpret_mode():
        out = pallas_attention(q, k, v, 0.125)
    assert out.dtype == jnp.bfloat16
    want = explicit_attention(*(a.astype(jnp.float32) for a in (q, k, v)), 0.125)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want), atol=5e-2)  # bf16's 8-bit mantissa


def test_a_pallas_layer_matches_the_xla_layer():
    x = jax.random.normal(jax.random.key(1), (2, 12 + 20, 48))
    cos, sin = rope_angles(12, 20, 12)
    xla = SelfAttention(48, 4, implementation="xla", key=KEY)
    pallas = SelfAttention(48, 4, implementation="pallas", platform="tpu", key=KEY)
    with pltpu.force_tpu_interpret_mode():
        out = pallas(x, cos, sin)
    assert_reassociated(out, xla(x, cos, sin), terms=48, layers=3)  # projections of width 48 around the core


def test_pallas_off_a_tpu_is_a_one_line_error():
    from elf_eqx.errors import ConfigError
    from elf_eqx.nn.attention import choose_attention

    with pytest.raises(ConfigError, match="not a TPU"):
        choose_attention("pallas", "cuda", jnp.bfloat16, 64)
    assert choose_attention("auto", "tpu", jnp.float32, 64) == "pallas"
