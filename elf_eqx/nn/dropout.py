"""Inverted dropout: the :class:`Dropout` layer the blocks hold, and the function it applies.

A :class:`Dropout` knows its ``rate`` and whether it is in ``inference`` mode (both static);
:func:`inference_mode` switches every one in a model. It drops only when it is not in inference
mode, its rate is positive and a key is given: ``key=None`` is deterministic, which is how the
objective runs its no-gradient passes. The rate may be scaled by a traced factor, which is how
the stacked blocks apply dropout in some layers only (:func:`elf_eqx.nn.transformer.run_blocks`).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Shaped


def dropout(
    x: Float[Array, "*shape"], rate: Float[Array, ""] | float, key: PRNGKeyArray | None
) -> Float[Array, "*shape"]:
    """Zero each entry of ``x`` with probability ``rate`` and rescale the rest by ``1/(1-rate)``.
    ``key=None`` means inference: ``x`` is returned unchanged. ``rate`` may be traced."""
    if key is None:
        return x
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask: Shaped[Array, "*shape"] = jax.random.uniform(key, x.shape) < keep
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class Dropout(eqx.Module):
    """Inverted dropout at ``rate`` unless ``inference`` is set (both static: they decide what
    is traced, e.g. whether the fused attention kernel may run)."""

    rate: float = eqx.field(static=True, default=0.0)
    inference: bool = eqx.field(static=True, default=False)

    @property
    def live(self) -> bool:
        """Whether a call with a key drops anything: not in inference mode and a positive rate."""
        return not self.inference and self.rate > 0

    def __call__(
        self,
        x: Float[Array, "*shape"],
        *,
        key: PRNGKeyArray | None = None,
        scale: Float[Array, ""] | float = 1.0,
    ) -> Float[Array, "*shape"]:
        """``x`` with dropout at ``rate · scale`` when :attr:`live` and ``key`` is given, else ``x``
        itself; ``scale`` may be traced (the 0/1 dropout band of the scanned blocks)."""
        if key is None or not self.live:
            return x
        return dropout(x, self.rate * scale, key)


def inference_mode(tree: Any, value: bool = True) -> Any:
    """``tree`` with every :class:`Dropout` in inference mode (``value=False``: training mode).

    The counterpart of ``eqx.nn.inference_mode`` for our layers: their ``inference`` flag is a
    static field (a Python bool among the leaves would be traced by ``jax.jit`` and copied into
    optimizer states), which ``eqx.tree_at`` cannot reach, so the layers are rebuilt instead.
    """
    is_dropout = lambda node: isinstance(node, Dropout)  # noqa: E731
    return jax.tree_util.tree_map(
        lambda node: Dropout(node.rate, value) if is_dropout(node) else node, tree, is_leaf=is_dropout
    )
