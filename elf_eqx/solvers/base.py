"""The contract every sampling solver keeps (docs/method.md#solvers).

A solver advances the latents over one interval ``[t, t_next]`` of a time grid. It sees the
network only through a :class:`FlowTerm` — the x-prediction ``x̂(z, x_prev, t)`` and the
velocity it implies — and carries whatever it needs from step to step in an explicit state
(``init(z0)`` makes it; DPM2M keeps the previous x̂ there). :func:`elf_eqx.sampler.Sampler.solve`
is the one loop that runs any solver: churn, then ``step``, then the condition positions restored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from elf_eqx.flow import FlowConstants, clipped_log_time, velocity

Predict = Callable[[Float[Array, "B L D"], Float[Array, "B L D"], Float[Array, ""]], Float[Array, "B L D"]]
"""``predict(z, x_prev, t) -> x̂``: the (guided) clean-latent estimate at time ``t`` given the
self-conditioning input ``x_prev``."""


class FlowTerm(eqx.Module):
    """What a solver knows of the flow: the x-prediction, the flow's constants (the velocity floor
    ``t_eps``) and whether each x̂ is fed to the next pass as its self-conditioning input."""

    predict: Predict
    flow: FlowConstants = eqx.field(static=True)
    self_condition: bool = eqx.field(static=True, default=True)

    @property
    def t_eps(self) -> float:
        """The velocity floor of the flow."""
        return self.flow.t_eps

    def x_hat(self, z: Float[Array, "B L D"], x_prev: Float[Array, "B L D"], t: Float[Array, ""]) -> Float[Array, "B L D"]:
        """``x̂(z, t)`` with self-conditioning input ``x_prev``."""
        return self.predict(z, x_prev, t)

    def feed(self, x_new: Float[Array, "B L D"], x_prev: Float[Array, "B L D"]) -> Float[Array, "B L D"]:
        """The self-conditioning input of the next pass: the newest x̂, or (self-conditioning off)
        the one the sampler started with."""
        return x_new if self.self_condition else x_prev

    def velocity(self, x_hat: Float[Array, "B L D"], z: Float[Array, "B L D"], t: Float[Array, ""]) -> Float[Array, "B L D"]:
        """``(x̂ − z) / max(1 − t, t_eps)`` at the scalar time ``t``."""
        return velocity(x_hat, z, jnp.full((z.shape[0],), t), self.t_eps)

    def log_time(self, t: Float[Array, "*S"]) -> Float[Array, "*S"]:
        """``Λ(t)``, the time in which the sampling ODE is linear (:func:`elf_eqx.flow.clipped_log_time`)."""
        return clipped_log_time(t, self.t_eps)


class Solver(eqx.Module):
    """One step rule. Subclasses set :attr:`evaluations_per_step` and implement :meth:`step`
    (and :meth:`init` when they carry a state); the loop that runs them counts the evaluations
    (:meth:`elf_eqx.sampler.Sampler.nfe`)."""

    evaluations_per_step: ClassVar[int] = 1
    """Network evaluations of one (non-final) step."""
    steps_like_euler: ClassVar[bool] = False
    """Whether this step rule is the last interval's Euler step, so one scan can run every interval."""

    def init(self, z0: Float[Array, "B L D"]) -> PyTree:
        """The state carried into the first step (``None``: the solver keeps none)."""
        return None

    def step(
        self,
        term: FlowTerm,
        z: Float[Array, "B L D"],
        x_prev: Float[Array, "B L D"],
        t: Float[Array, ""],
        t_next: Float[Array, ""],
        state: Any,
    ) -> tuple[Float[Array, "B L D"], Float[Array, "B L D"], Any]:
        """``(z at t_next, the x̂ the next step's self-conditioning receives, new state)``."""
        raise NotImplementedError
