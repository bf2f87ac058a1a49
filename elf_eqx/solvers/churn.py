"""Churn: the SDE's step back in time with fresh noise before each solver step
(docs/method.md#solvers). ``NoChurn`` is the ODE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

import equinox as eqx


class Churn(eqx.Module):
    """Step from ``t`` back to ``t_b = α t``, ``α = clip(1 − γ(t_next − t), 0, 1)``, adding fresh
    noise; subclasses size the noise."""

    def __call__(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], gamma: Float[Array, ""] | float,
        key: PRNGKeyArray, noise_scale: float,
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z_b, t_b)``."""
        alpha = jnp.clip(1.0 - gamma * (t_next - t), 0.0, 1.0)
        return alpha * z + noise_scale * self.noise_std(alpha, t) * jax.random.normal(key, z.shape), alpha * t

    def noise_std(self, alpha: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        """The fresh noise's standard deviation, in units of the noise scale ``s``."""
        raise NotImplementedError


class NoChurn(Churn):
    """The ODE: no step back, no noise."""

    def __call__(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], gamma: Float[Array, ""] | float,
        key: PRNGKeyArray, noise_scale: float,
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z, t)`` unchanged."""
        return z, t


class ReferenceChurn(Churn):
    """The reference's noise, ``(1 − α)·s``."""

    def noise_std(self, alpha: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        return 1.0 - alpha


class ConsistentChurn(Churn):
    """``s·√((1 − α)(1 + α − 2αt))``: exactly the noise level of ``t_b`` (marginal-preserving)."""

    def noise_std(self, alpha: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        return jnp.sqrt(jnp.maximum((1.0 - alpha) * (1.0 + alpha - 2.0 * alpha * t), 0.0))
