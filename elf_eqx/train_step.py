"""One ELF optimisation step (loss, gradients, optimizer update, EMA) as a pure function.

:func:`make_train_step` jit-compiles it with donated state and, when given, explicit input and
output shardings, so multi-device training passes shardings in rather than rewriting the step.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.model import ELF
from elf_eqx.objective import FlowObjective, LatentBatch


class TrainState(eqx.Module):
    """Everything a step updates: the weights, their EMA, the optimizer state and the step count."""

    step: Int[Array, ""]
    model: ELF
    ema: ELF
    opt_state: Any

    @staticmethod
    def create(model: ELF, optimizer: optax.GradientTransformation) -> "TrainState":
        """Step 0: the EMA starts as a copy of the weights. The state holds its own copies, so
        donating it to a compiled step never invalidates the caller's ``model``."""
        model = jax.tree_util.tree_map(jnp.copy, model)
        ema = jax.tree_util.tree_map(jnp.copy, model)
        return TrainState(jnp.zeros((), jnp.int32), model, ema, optimizer.init(model))


def ema_update(ema: ELF, model: ELF, decay: float | Float[Array, ""]) -> ELF:
    """``ema ← decay·ema + (1 − decay)·model``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, model)


def train_step(
    state: TrainState,
    batch: LatentBatch,
    key: PRNGKeyArray,
    *,
    objective: FlowObjective,
    optimizer: optax.GradientTransformation,
    ema_decay: float = 0.9999,
) -> tuple[TrainState, dict[str, Float[Array, ""]]]:
    """One step on ``batch``; returns the new state and ``{loss, l2, ce, decode_frac, grad_norm}``.
    The key is folded with the step count, so a resumed run draws the same randomness."""
    step_key = jax.random.fold_in(key, state.step)
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.model, batch, step_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.model)
    model = optax.apply_updates(state.model, updates)
    ema = ema_update(state.ema, model, ema_decay)
    new_state = TrainState(state.step + 1, model, ema, opt_state)
    return new_state, {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}


def make_train_step(
    objective: FlowObjective,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.9999,
    state_sharding: Any = None,
    batch_sharding: Any = None,
    donate: bool = True,
) -> Callable[[TrainState, LatentBatch, PRNGKeyArray], tuple[TrainState, dict[str, Float[Array, ""]]]]:
    """``step(state, batch, key) -> (state, metrics)``, jit-compiled.

    ``state_sharding``/``batch_sharding`` are pytrees of ``jax.sharding.Sharding`` (or one
    sharding for all leaves) for the state and batch; ``None`` leaves placement to JAX. The
    state's buffers are donated: do not reuse the ``state`` passed in.
    """

    def step(state: TrainState, batch: LatentBatch, key: PRNGKeyArray):
        return train_step(state, batch, key, objective=objective, optimizer=optimizer, ema_decay=ema_decay)

    kwargs: dict[str, Any] = {}
    if state_sharding is not None or batch_sharding is not None:
        kwargs["in_shardings"] = (state_sharding, batch_sharding, None)
        kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(step, donate_argnums=(0,) if donate else (), **kwargs)
