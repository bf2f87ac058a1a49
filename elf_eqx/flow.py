"""Flow-matching primitives shared by the objective and the samplers (ELF_SPEC.md §3–4).

Time runs from t = 0 (noise) to t = 1 (data): ``z_t = t·x + (1 − t)·s·ε``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray


def sample_logit_normal(key: PRNGKeyArray, shape: tuple[int, ...], mean: float, std: float) -> Float[Array, "..."]:
    """``sigmoid(N(mean, std))`` draws of the given shape."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, shape, jnp.float32))


def sample_time(
    key: PRNGKeyArray, batch: int, schedule: str = "logit_normal", mean: float = -1.5, std: float = 0.8
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


def keep_condition(
    z: Float[Array, "B L D"], clean: Float[Array, "B L D"], cond_mask: Bool[Array, "B L"]
) -> Float[Array, "B L D"]:
    """``z`` with the condition positions replaced by their clean latents."""
    return jnp.where(cond_mask[..., None], clean, z)
