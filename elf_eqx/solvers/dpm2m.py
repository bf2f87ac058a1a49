"""DPM2M: a second-order multistep exponential integrator in log time, one evaluation a step
(after DPM-Solver++(2M); docs/method.md#solvers)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from elf_eqx.solvers.base import FlowTerm, Solver

History = tuple[Float[Array, "B L D"], Float[Array, ""]]
"""The previous step's x̂ and the log time ``Λ`` it was evaluated at (``−inf`` before the first step)."""


class DPM2M(Solver):
    """``z' = e^{−h} z + (1 − e^{−h}) x̄`` over ``h = Λ(t_next) − Λ(t)``, with ``x̄`` extrapolated
    linearly in ``Λ`` through the previous step's x̂; the first step (no previous x̂) and repeated
    times are first order."""

    def init(self, z0: Float[Array, "B L D"]) -> History:
        """No previous x̂ yet: zeros at ``Λ = −inf``."""
        return jnp.zeros_like(z0), jnp.array(-jnp.inf)

    def step(
        self, term: FlowTerm, z: Float[Array, "B L D"], x_prev: Float[Array, "B L D"], t: Float[Array, ""],
        t_next: Float[Array, ""], state: History,
    ) -> tuple[Float[Array, "B L D"], Float[Array, "B L D"], History]:
        """One multistep update; the state becomes this step's ``(x̂, Λ(t))``."""
        x_last, lam_last = state
        x = term.x_hat(z, x_prev, t)
        lam, lam_next = term.log_time(t), term.log_time(t_next)
        h, h_last = lam_next - lam, lam - lam_last
        ratio = jnp.where(jnp.isfinite(h_last) & (h_last > 0), h / (2.0 * jnp.where(h_last > 0, h_last, 1.0)), 0.0)
        x_bar = x + ratio * (x - x_last)
        decay = jnp.exp(-h)
        return decay * z + (1.0 - decay) * x_bar, x, (x, lam)
