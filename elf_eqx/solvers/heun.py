"""Heun: a predictor-corrector step, two evaluations (docs/method.md#solvers)."""

from __future__ import annotations

from typing import Any, ClassVar

from jaxtyping import Array, Float

from elf_eqx.solvers.base import FlowTerm, Solver


class Heun(Solver):
    """Predictor ``z̃ = z + h·v̂(z, t)``, corrector ``z ← z + h·(v̂(z, t) + v̂(z̃, t_next))/2``. The
    corrector's pass is self-conditioned on the predictor's x̂; its own x̂ goes to the next step."""

    evaluations_per_step: ClassVar[int] = 2

    def step(
        self, term: FlowTerm, z: Float[Array, "B L D"], x_prev: Float[Array, "B L D"], t: Float[Array, ""],
        t_next: Float[Array, ""], state: Any,
    ) -> tuple[Float[Array, "B L D"], Float[Array, "B L D"], Any]:
        """One Heun step (the predictor's x̂ reaches the corrector through ``term.feed``)."""
        x1 = term.x_hat(z, x_prev, t)
        v1 = term.velocity(x1, z, t)
        z_pred = z + (t_next - t) * v1
        x2 = term.x_hat(z_pred, term.feed(x1, x_prev), t_next)
        v2 = term.velocity(x2, z_pred, t_next)
        return z + (t_next - t) * 0.5 * (v1 + v2), x2, state

