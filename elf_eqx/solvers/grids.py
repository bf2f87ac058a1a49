"""Time grids ``0 = t_0 < … < t_n = 1`` for ``n`` sampling steps (docs/method.md#time-grids).

Each grid carries its own parameters as fields (the power grid its exponent; the logit-normal
grids the flow's ``p_mean``/``p_std`` and, drawn once, a seed); :meth:`TimeGrid.taking` builds
one from named parameters, taking those it declares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.flow import logit_normal_quantiles, power_spacing, sample_logit_normal


class TimeGrid(eqx.Module):
    """How the ``n + 1`` times of a sampling run are placed."""

    fixed: ClassVar[bool] = False
    """Whether the grid is the same for every key and takes no sampler setting (only the flow's
    constants): what a distillation's students can be fitted to."""

    def times(self, n: int, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        """The grid for ``n`` steps; ``key`` draws random grids."""
        raise NotImplementedError

    @classmethod
    def taking(cls, parameters: Mapping[str, Any]) -> "TimeGrid":
        """This grid with each parameter it declares (each field) taken from ``parameters`` by name."""
        return cls(**{f.name: parameters[f.name] for f in dataclasses.fields(cls)})


def _with_ends(inner: Float[Array, " n_minus_1"]) -> Float[Array, " n_plus_1"]:
    return jnp.concatenate([jnp.zeros(1), inner, jnp.ones(1)]).astype(jnp.float32)


class LogitNormalGrid(TimeGrid):
    """0, the sorted values of ``n − 1`` draws of ``sigmoid(N(p_mean, p_std))``, 1 (the
    reference's): a fresh grid per key, or one grid for every call drawn from ``key(seed)`` when
    ``seed`` is set."""

    p_mean: float = eqx.field(static=True)
    p_std: float = eqx.field(static=True)
    seed: int | None = eqx.field(static=True, default=None)

    def times(self, n: int, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        if self.seed is not None:
            key = jax.random.key(self.seed)
        return _with_ends(jnp.sort(sample_logit_normal(key, (n - 1,), self.p_mean, self.p_std)))


class LogitNormalQuantileGrid(TimeGrid):
    """0, the ``i/n`` quantiles of ``sigmoid(N(p_mean, p_std))`` (``i = 1 … n − 1``), 1: deterministic."""

    fixed: ClassVar[bool] = True
    p_mean: float = eqx.field(static=True)
    p_std: float = eqx.field(static=True)

    def times(self, n: int, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        return _with_ends(logit_normal_quantiles(n, self.p_mean, self.p_std))


class UniformGrid(TimeGrid):
    """``linspace(0, 1, n + 1)``."""

    fixed: ClassVar[bool] = True

    def times(self, n: int, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        return jnp.linspace(0.0, 1.0, n + 1, dtype=jnp.float32)


class PowerGrid(TimeGrid):
    """``t_i = (i/n)^exponent``; an exponent above 1 puts more steps near the noise end."""

    exponent: float = eqx.field(static=True)

    def times(self, n: int, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        return power_spacing(n, self.exponent)
