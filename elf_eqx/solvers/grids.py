"""Time grids ``0 = t_0 < … < t_n = 1`` for ``n`` sampling steps (docs/method.md#time-grids)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.flow import FlowConstants, logit_normal_quantiles, power_spacing, sample_logit_normal


class TimeGrid(eqx.Module):
    """How the ``n + 1`` times of a sampling run are placed."""

    def times(self, n: int, key: PRNGKeyArray, flow: FlowConstants) -> Float[Array, " n_plus_1"]:
        """The grid for ``n`` steps; ``key`` draws random grids, ``flow`` gives the logit-normal's
        ``p_mean``/``p_std``."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings) -> "TimeGrid":
        """The grid a :class:`~elf_eqx.sampling.settings.SamplerSettings` describes (its
        ``grid_seed``/``grid_exponent`` where this grid takes one)."""
        return cls()


def _with_ends(inner: Float[Array, " n_minus_1"]) -> Float[Array, " n_plus_1"]:
    return jnp.concatenate([jnp.zeros(1), inner, jnp.ones(1)]).astype(jnp.float32)


class LogitNormalGrid(TimeGrid):
    """0, the sorted values of ``n − 1`` logit-normal draws, 1 (the reference's): a fresh grid per
    key, or one grid for every call drawn from ``key(seed)`` when ``seed`` is set."""

    seed: int | None = eqx.field(static=True, default=None)

    @classmethod
    def from_settings(cls, settings) -> "LogitNormalGrid":
        return cls(seed=settings.grid_seed)

    def times(self, n: int, key: PRNGKeyArray, flow: FlowConstants) -> Float[Array, " n_plus_1"]:
        if self.seed is not None:
            key = jax.random.key(self.seed)
        return _with_ends(jnp.sort(sample_logit_normal(key, (n - 1,), flow.p_mean, flow.p_std)))


class LogitNormalQuantileGrid(TimeGrid):
    """0, the ``i/n`` quantiles of the logit-normal (``i = 1 … n − 1``), 1: deterministic."""

    def times(self, n: int, key: PRNGKeyArray, flow: FlowConstants) -> Float[Array, " n_plus_1"]:
        return _with_ends(logit_normal_quantiles(n, flow.p_mean, flow.p_std))


class UniformGrid(TimeGrid):
    """``linspace(0, 1, n + 1)``."""

    def times(self, n: int, key: PRNGKeyArray, flow: FlowConstants) -> Float[Array, " n_plus_1"]:
        return jnp.linspace(0.0, 1.0, n + 1, dtype=jnp.float32)


class PowerGrid(TimeGrid):
    """``t_i = (i/n)^exponent``; an exponent above 1 puts more steps near the noise end."""

    exponent: float = eqx.field(static=True, default=2.0)

    @classmethod
    def from_settings(cls, settings) -> "PowerGrid":
        return cls(exponent=settings.grid_exponent)

    def times(self, n: int, key: PRNGKeyArray, flow: FlowConstants) -> Float[Array, " n_plus_1"]:
        return power_spacing(n, self.exponent)
