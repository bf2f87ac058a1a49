"""The precision policy: the dtype every computation of a training step and of sampling runs and
accumulates in, stated once (docs/method.md#precision).

A :class:`PrecisionPolicy` holds one :class:`Rule` per computation. The network, its layers, the
frozen encoder, Muon's Newton–Schulz iterations and the sampler read their dtypes from it; the
computations run under :func:`scope` so a lowered program's ops can be told apart and checked
against the table (``tests/unit/test_precision_policy.py``). There are two policies: ``float32``
(every row float32: the reference's arithmetic, CPU's default) and ``bfloat16`` (the accelerators'
default: bf16 matmuls over float32 weights, float32 wherever a sum or a statistic is formed).
``compute_dtype`` (``auto``, ``float32``, ``bfloat16``) names one; ``auto`` is ``bfloat16`` on
GPUs and TPUs and ``float32`` on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

F32 = jnp.dtype(jnp.float32)
BF16 = jnp.dtype(jnp.bfloat16)
SCOPE_PREFIX = "precision:"
"""Named scopes ``precision:<row>`` mark each computation's ops in a lowered program."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one computation runs.

    ``matmul``: the dtype of its matmul operands (and of the cotangents its backward matmuls take);
    ``None`` when it has no matmul. ``result``: what its forward matmuls return: the operands' dtype,
    or float32 over bf16 operands (accumulated and returned in float32, the MXU's and tensor cores'
    native output). ``elementwise``: its elementwise arithmetic. ``reduce``: its sums, means and
    maxima (over features, rows or a whole tensor), in the forward pass and the backward.
    """

    matmul: jnp.dtype | None
    result: jnp.dtype | None
    elementwise: jnp.dtype
    reduce: jnp.dtype = F32

    @staticmethod
    def uniform(dtype) -> "Rule":
        """Everything in ``dtype`` (its matmuls return ``dtype``), reductions float32."""
        d = jnp.dtype(dtype)
        return Rule(d, d, d)

    @property
    def widens(self) -> bool:
        """Whether its matmuls return a wider dtype than their operands (bf16 → float32)."""
        return self.matmul is not None and self.result != self.matmul


_NO_MATMUL_F32 = Rule(None, None, F32)


@dataclasses.dataclass(frozen=True)
class PrecisionPolicy:
    """One :class:`Rule` per computation of a step and of sampling. Parameters are float32 in
    every policy (master weights; each computation casts what it multiplies)."""

    name: str
    embeddings: Rule
    """Input projections (2D → D → 128 → H), the time and ω embedders, the learned prefix tokens."""
    attention_scores: Rule
    """``q·kᵀ`` (and the fused kernels' score blocks)."""
    softmax: Rule
    """The attention softmax and ``probs·v``."""
    projections: Rule
    """The blocks' linear layers (qkv, attention output, SwiGLU's w12 and w3), bias adds included."""
    swiglu: Rule
    """SwiGLU's gate ``silu(a)·b`` (its linear layers are :attr:`projections`)."""
    norms: Rule
    """RMSNorm and LayerNorm statistics and scaling (outputs cast to the consumer's dtype)."""
    residual: Rule
    """The residual stream carried between blocks and its adds."""
    rope: Rule
    """Rotary embedding: the pair swap ``x·P`` (exact in any dtype) and ``x·cos + (x·P)·sin``."""
    positions: Rule
    """Position tables: RoPE's angles, T5's relative-position buckets."""
    heads: Rule
    """The denoise head's ``Linear(RMSNorm(h))`` and the decode head ``gelu(h·W_p + b_p)·W_u + b_u``."""
    loss: Rule
    """The flow loss (velocities, squared error) and the decode cross-entropy."""
    encoder: Rule
    """The frozen text encoder's layers (its norms and attention scores follow those rows)."""
    newton_schulz: Rule
    """Muon's Newton–Schulz iterations (the momentum is :attr:`optimizer`)."""
    optimizer: Rule
    """Adam moments, Muon momentum, gradient clipping, the update."""
    ema: Rule
    """The weights' exponential moving average."""
    sampler_state: Rule
    """The sampler's state across steps: ``z``, the previous ``x̂``, solver history, churn."""

    @property
    def compute(self) -> jnp.dtype:
        """The activation dtype of the network's matmuls."""
        return self.projections.matmul

    @classmethod
    def computations(cls) -> tuple[str, ...]:
        """The rows' names, in the table's order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "name")

    def rule(self, computation: str) -> Rule:
        return getattr(self, computation)

    def table(self) -> list[tuple[str, Rule]]:
        """``(computation, rule)`` for every row."""
        return [(name, self.rule(name)) for name in self.computations()]


FLOAT32 = PrecisionPolicy("float32", **{name: Rule.uniform(F32) for name in PrecisionPolicy.computations()})
"""The reference's arithmetic: everything float32."""

BFLOAT16 = PrecisionPolicy(
    "bfloat16",
    embeddings=Rule(BF16, BF16, F32),
    attention_scores=Rule(BF16, F32, F32),
    softmax=Rule(BF16, BF16, F32),
    projections=Rule(BF16, BF16, F32),
    swiglu=Rule(None, None, BF16),
    norms=_NO_MATMUL_F32,
    residual=Rule(None, None, BF16),
    rope=Rule(BF16, BF16, F32),
    positions=_NO_MATMUL_F32,
    heads=Rule(BF16, F32, F32),
    loss=_NO_MATMUL_F32,
    encoder=Rule(BF16, BF16, BF16),
    newton_schulz=Rule(BF16, BF16, BF16),
    optimizer=_NO_MATMUL_F32,
    ema=_NO_MATMUL_F32,
    sampler_state=_NO_MATMUL_F32,
)
"""The accelerators' policy: bf16 matmuls and activations over float32 weights; float32 for every
reduction, norm, softmax, bias add, RoPE rotation, both heads' outputs, the loss, the optimizer,
the EMA and the sampler's state."""

POLICIES: dict[str, PrecisionPolicy] = {p.name: p for p in (FLOAT32, BFLOAT16)}
UNSCOPED = ("loss", "optimizer", "ema", "sampler_state")
"""The rows whose ops run outside any :func:`scope` (everything beyond the network, the encoder
and Newton–Schulz); each policy holds them float32."""


def policy_named(name: str) -> PrecisionPolicy:
    """The policy a resolved compute dtype names (``float32`` or ``bfloat16``)."""
    return POLICIES[jnp.dtype(name).name]


def policy_of(x: Array) -> PrecisionPolicy:
    """The policy whose activations have ``x``'s dtype: what a layer called without one follows."""
    return POLICIES.get(jnp.dtype(x.dtype).name, FLOAT32)


def scope(computation: str):
    """A named scope marking ``computation``'s ops (``precision:<row>``) in the lowered program."""
    return jax.named_scope(SCOPE_PREFIX + computation)


def matmul(product: Callable[..., Array], a: Array, b: Array, rule: Rule) -> Array:
    """``product(a, b)`` (a matmul such as ``jnp.matmul`` or an ``einsum`` partial) with both
    operands in ``rule.matmul``, returning ``rule.result``.

    When the rule widens (bf16 operands, float32 result) the forward matmul accumulates and returns
    float32 and the backward's matmuls take the cotangent rounded to bf16: differentiated as it is,
    a widened matmul's backward would multiply float32 cotangents by operands upcast to float32."""
    a, b = a.astype(rule.matmul), b.astype(rule.matmul)
    if not rule.widens:
        return product(a, b)
    return _widened(product, a, b, rule.result)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _widened(product, a, b, result):
    return product(a, b, preferred_element_type=result)


def _widened_fwd(product, a, b, result):
    return product(a, b, preferred_element_type=result), (a, b)


def _widened_bwd(product, result, residuals, g):
    del result
    a, b = residuals
    _, pullback = jax.vjp(product, a, b)
    return pullback(g.astype(a.dtype))


_widened.defvjp(_widened_fwd, _widened_bwd)
