"""A dense layer stored as ``(in, out)``, the layout of Flax kernels and of the ELF release.

Its owner names the two axes (``in_axis``, ``out_axis``: logical names such as ``"embed"`` or
``"mlp"``), which :mod:`elf_eqx.parallel.partition` maps to mesh axes; the layer declares them
for its weight and bias in :attr:`Linear.logical_axes`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.nn.axes import AxisNames
from elf_eqx.precision import Rule, matmul


def xavier_uniform(key: PRNGKeyArray, fan_in: int, fan_out: int) -> Float[Array, "fan_in fan_out"]:
    """Glorot/Xavier-uniform matrix of shape ``(fan_in, fan_out)``."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -limit, limit)


class Linear(eqx.Module):
    """``y = x @ weight + bias`` over any leading dimensions.

    Weights stay in their stored dtype (float32); the owner's precision :class:`~elf_eqx.precision.Rule`
    says what the product runs in (bf16 operands over float32 master weights on accelerators),
    what it returns and the dtype of the bias add; without one, everything is in ``x``'s dtype.
    ``in_axis``/``out_axis`` are the logical names of the input and output features (static;
    ``None``: undeclared, which the partition rules refuse for any array worth sharding).
    """

    weight: Float[Array, "d_in d_out"]
    bias: Float[Array, " d_out"] | None
    in_axis: str | None = eqx.field(static=True, default=None)
    out_axis: str | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        use_bias: bool = True,
        key: PRNGKeyArray,
        init: str = "xavier_uniform",
        std: float = 0.02,
        in_axis: str | None = None,
        out_axis: str | None = None,
    ):
        """``init`` is ``xavier_uniform``, ``normal`` (with ``std``) or ``zeros``; biases start at 0.
        ``in_axis``/``out_axis``: the logical axis names of ``d_in``/``d_out``."""
        if init == "xavier_uniform":
            self.weight = xavier_uniform(key, d_in, d_out)
        elif init == "normal":
            self.weight = std * jax.random.normal(key, (d_in, d_out), jnp.float32)
        elif init == "zeros":
            self.weight = jnp.zeros((d_in, d_out), jnp.float32)
        else:
            raise ValueError(f"Linear: unknown init {init!r} (xavier_uniform, normal, zeros)")
        self.bias = jnp.zeros((d_out,), jnp.float32) if use_bias else None
        self.in_axis, self.out_axis = in_axis, out_axis

    @property
    def logical_axes(self) -> dict[str, AxisNames]:
        """``weight: (in_axis, out_axis)``, ``bias: (out_axis,)``; empty when undeclared."""
        if self.in_axis is None or self.out_axis is None:
            return {}
        return {"weight": (self.in_axis, self.out_axis), "bias": (self.out_axis,)}

    @property
    def d_in(self) -> int:
        return self.weight.shape[0]

    @property
    def d_out(self) -> int:
        return self.weight.shape[1]

    def __call__(self, x: Float[Array, "*batch d_in"], rule: Rule | None = None) -> Float[Array, "*batch d_out"]:
        """``(..., d_in) -> (..., d_out)``: the product in ``rule.matmul``, the bias added in
        ``rule.elementwise``, returned in ``rule.result`` (default: all in ``x``'s dtype)."""
        rule = rule if rule is not None else Rule.uniform(x.dtype)
        y = matmul(jnp.matmul, x, self.weight, rule)
        if self.bias is not None:
            y = y.astype(rule.elementwise) + self.bias.astype(rule.elementwise)
        return y.astype(rule.result)
