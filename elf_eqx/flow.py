"""Flow-matching primitives shared by the objective and the samplers (docs/method.md#objective).

Time runs from t = 0 (noise) to t = 1 (data): ``z_t = t·x + (1 − t)·s·ε``. :class:`FlowConstants`
is the one home of the constants both the objective and the samplers read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from elf_eqx.errors import ConfigError

TimeSchedule = Literal["logit_normal", "uniform"]


@dataclasses.dataclass(frozen=True)
class FlowConstants:
    """The flow's constants, shared by training and sampling (the reference's values as defaults).
    A model must be sampled with the constants it was trained with."""

    p_mean: float = -1.5
    """Mean of the logit-normal t (training times, and the samplers' logit-normal grid)."""
    p_std: float = 0.8
    """Std of the logit-normal t."""
    noise_scale: float = 2.0
    """s in z_t = t·x + (1 − t)·s·ε (and the samplers' start noise)."""
    t_eps: float = 0.05
    """Velocity denominator floor: (x̂ − z)/max(1 − t, t_eps)."""

    def flag(self, name: str) -> str:
        """How errors name the constant ``name`` (the training config names its flag)."""
        return f"FlowConstants.{name}"

    def __post_init__(self) -> None:
        for name in ("p_std", "noise_scale", "t_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{self.flag(name)} must be positive, got {getattr(self, name)}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """``("p_mean", "p_std", "noise_scale", "t_eps")``."""
        return tuple(f.name for f in dataclasses.fields(FlowConstants))

    def to_dict(self) -> dict[str, float]:
        """``{p_mean, p_std, noise_scale, t_eps}``."""
        return {name: getattr(self, name) for name in FlowConstants.names()}

    @classmethod
    def read(cls, values: Mapping[str, Any]) -> "FlowConstants":
        """The constants named in ``values`` (other keys are ignored; missing ones take the defaults)."""
        return FlowConstants(**{name: float(values[name]) for name in FlowConstants.names() if name in values})


FLOW = FlowConstants()
"""The default (reference) flow constants."""


def sample_logit_normal(key: PRNGKeyArray, shape: tuple[int, ...], mean: float, std: float) -> Float[Array, "..."]:
    """``sigmoid(N(mean, std))`` draws of the given shape."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, shape, jnp.float32))


def logit_normal_quantiles(n: int, mean: float, std: float) -> Float[Array, " n_minus_1"]:
    """The ``n − 1`` inner ``i/n`` quantiles (``i = 1 … n − 1``) of ``sigmoid(N(mean, std))``: a
    deterministic stand-in for sorted logit-normal draws (docs/method.md#time-grids)."""
    levels = jnp.arange(1, n, dtype=jnp.float32) / n
    return jax.nn.sigmoid(mean + std * jax.scipy.special.ndtri(levels))


def power_spacing(n: int, exponent: float) -> Float[Array, " n_plus_1"]:
    """``t_i = (i/n)^exponent`` for ``i = 0 … n``; an exponent above 1 puts more of the steps near
    the noise end ``t = 0`` (docs/method.md#time-grids)."""
    return (jnp.arange(n + 1, dtype=jnp.float32) / n) ** exponent


def clipped_log_time(t: Float[Array, "*S"], t_eps: float) -> Float[Array, "*S"]:
    """``Λ(t) = ∫₀ᵗ dτ / max(1 − τ, t_eps)``: ``−log(1 − t)`` up to ``1 − t_eps``, then linear with
    slope ``1/t_eps``. In ``Λ`` the sampling ODE is ``dz/dΛ = x̂ − z`` (docs/method.md#solvers)."""
    knee = 1.0 - t_eps
    return jnp.where(t <= knee, -jnp.log1p(-jnp.minimum(t, knee)), -jnp.log(t_eps) + (t - knee) / t_eps)


def sample_time(
    key: PRNGKeyArray, batch: int, schedule: str = "logit_normal", mean: float = FLOW.p_mean,
    std: float = FLOW.p_std,
) -> Float[Array, " B"]:
    """Training times ``t`` per sample: ``logit_normal`` (``sigmoid(N(mean, std))``) or ``uniform`` on [0, 1)."""
    if schedule == "logit_normal":
        return sample_logit_normal(key, (batch,), mean, std)
    if schedule == "uniform":
        return jax.random.uniform(key, (batch,), jnp.float32)
    raise ValueError(f"unknown time schedule {schedule!r} (logit_normal, uniform)")


def sample_sc_cfg_scale(key: PRNGKeyArray, batch: int, omega_min: float = 0.5, omega_max: float = 5.0) -> Float[Array, " B"]:
    """SC-CFG scales ω with ``1 + ω`` log-uniform on ``[1 + omega_min, 1 + omega_max]``."""
    lo, hi = jnp.log1p(omega_min), jnp.log1p(omega_max)
    return jnp.expm1(jax.random.uniform(key, (batch,), jnp.float32, lo, hi))


def interpolate(
    x: Float[Array, "B L D"], noise: Float[Array, "B L D"], t: Float[Array, " B"], noise_scale: float
) -> Float[Array, "B L D"]:
    """``z_t = t·x + (1 − t)·s·ε``."""
    tb = t[:, None, None]
    return tb * x + (1.0 - tb) * noise_scale * noise


def velocity(
    x_pred: Float[Array, "B L D"], z: Float[Array, "B L D"], t: Float[Array, " B"], t_eps: float
) -> Float[Array, "B L D"]:
    """x-prediction to velocity: ``(x̂ − z_t) / max(1 − t, t_eps)``."""
    return (x_pred - z) / jnp.maximum(1.0 - t, t_eps)[:, None, None]


def euler_update(
    z: Float[Array, "B L D"], x_hat: Float[Array, "B L D"], t: Float[Array, " B"], t_next: Float[Array, " B"],
    t_eps: float,
) -> Float[Array, "B L D"]:
    """One Euler step of the sampling ODE from ``t`` to ``t_next`` (per sample) with prediction ``x̂``:
    ``z + (t_next − t)·(x̂ − z)/max(1 − t, t_eps)``. The one Euler update: the Euler solver and the
    distillation's teacher steps both take it."""
    return z + (t_next - t)[:, None, None] * velocity(x_hat, z, t, t_eps)


def keep_condition(
    z: Float[Array, "B L D"], clean: Float[Array, "B L D"], cond_mask: Bool[Array, "B L"]
) -> Float[Array, "B L D"]:
    """``z`` with the condition positions replaced by their clean latents."""
    return jnp.where(cond_mask[..., None], clean, z)
