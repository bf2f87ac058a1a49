"""Euler: the reference's step rule (docs/method.md#solvers)."""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Float

from elf_eqx.flow import euler_update
from elf_eqx.solvers.base import FlowTerm, Solver


class Euler(Solver):
    """``z ← z + (t_next − t)·v̂(z, t)``: one evaluation a step (on an x-prediction flow, the
    first-order exponential integrator below the velocity floor)."""

    steps_like_euler: ClassVar[bool] = True

    def step(
        self, term: FlowTerm, z: Float[Array, "B L D"], x_prev: Float[Array, "B L D"], t: Float[Array, ""],
        t_next: Float[Array, ""], state: Any,
    ) -> tuple[Float[Array, "B L D"], Float[Array, "B L D"], Any]:
        """One Euler step; the next step is self-conditioned on this step's x̂."""
        x = term.x_hat(z, x_prev, t)
        return euler_update(z, x, jnp.full(z.shape[:1], t), jnp.full(z.shape[:1], t_next), term.t_eps), x, state
