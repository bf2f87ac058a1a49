"""Churn: the SDE's step back in time with fresh noise before each solver step
(docs/method.md#solvers). ``NoChurn`` is the ODE."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class Churn(eqx.Module):
    """What the loop does to ``(z, t)`` before each solver step; :meth:`for_intervals` gives the
    churn of every interval of a grid (the last interval is an ODE step for every churn)."""

    def __call__(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], key: PRNGKeyArray
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z_b, t_b)``: the latents and time the solver step starts from."""
        raise NotImplementedError

    def at(self, gamma: Float[Array, "*I"] | float) -> "Churn":
        """This churn with churn γ ``gamma`` (a scalar, or one per interval)."""
        raise NotImplementedError

    def for_intervals(self, n: int) -> "Churn":
        """This churn for each of ``n`` intervals, stacked along the leading axis of its leaves
        (what ``lax.scan`` slices): γ on every interval but the last, 0 on the last."""
        raise NotImplementedError


class NoChurn(Churn):
    """The ODE: no step back, no noise."""

    def __call__(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], key: PRNGKeyArray
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z, t)`` unchanged."""
        return z, t

    def at(self, gamma: Float[Array, "*I"] | float) -> "NoChurn":
        """Itself: the ODE has no γ."""
        return self

    def for_intervals(self, n: int) -> "NoChurn":
        """Itself (no leaves to stack)."""
        return self


class SdeChurn(Churn):
    """Step from ``t`` back to ``t_b = α t``, ``α = clip(1 − γ(t_next − t), 0, 1)``, adding fresh
    noise of standard deviation ``noise_scale · noise_std(α, t)``; subclasses size the noise."""

    gamma: Float[Array, "*I"] | float
    """Churn γ ≥ 0 (a leaf: the loop stacks one per interval, :meth:`for_intervals`)."""
    noise_scale: float = eqx.field(static=True)
    """The flow's noise scale ``s``."""

    def __call__(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], key: PRNGKeyArray
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z_b, t_b)``."""
        alpha = jnp.clip(1.0 - self.gamma * (t_next - t), 0.0, 1.0)
        return alpha * z + self.noise_scale * self.noise_std(alpha, t) * jax.random.normal(key, z.shape), alpha * t

    def noise_std(self, alpha: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        """The fresh noise's standard deviation, in units of the noise scale ``s``."""
        raise NotImplementedError

    def at(self, gamma: Float[Array, "*I"] | float) -> "SdeChurn":
        """This churn with γ = ``gamma``."""
        return eqx.tree_at(lambda churn: churn.gamma, self, gamma)

    def for_intervals(self, n: int) -> "SdeChurn":
        """γ on the first ``n − 1`` intervals, 0 on the last: ``(n,)`` values."""
        return self.at(jnp.where(jnp.arange(n) < n - 1, self.gamma, 0.0))


class ReferenceChurn(SdeChurn):
    """The reference's noise, ``(1 − α)·s``."""

    def noise_std(self, alpha: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        return 1.0 - alpha


class ConsistentChurn(SdeChurn):
    """``s·√((1 − α)(1 + α − 2αt))``: exactly the noise level of ``t_b`` (marginal-preserving)."""

    def noise_std(self, alpha: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        return jnp.sqrt(jnp.maximum((1.0 - alpha) * (1.0 + alpha - 2.0 * alpha * t), 0.0))
