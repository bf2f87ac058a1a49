"""One optimisation step (loss, gradients, optimizer update, EMA) as a pure function, the same for
ELF, the baselines and distillation (the objective and, for ELF, the frozen encoder are arguments).

:func:`make_train_step` jit-compiles it with donated state and, when given, explicit input and
output shardings, so multi-device training passes shardings in rather than rewriting the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.errors import ConfigError
from elf_eqx.objective import LatentBatch
from elf_eqx.parallel.mesh import traced_on
from elf_eqx.parallel.partition import tree_shardings

if TYPE_CHECKING:
    from elf_eqx.encoders.latent_encoder import LatentEncoder, TokenBatch


class TrainState(eqx.Module):
    """Everything a step updates: the weights, their EMA, the optimizer state and the step count."""

    step: Int[Array, ""]
    model: eqx.Module
    ema: eqx.Module
    opt_state: Any

    @staticmethod
    def create(model: eqx.Module, optimizer: optax.GradientTransformation) -> "TrainState":
        """Step 0: the EMA starts as a copy of the weights. The state holds its own copies, so
        donating it to a compiled step never invalidates the caller's ``model``."""
        model = jax.tree_util.tree_map(jnp.copy, model)
        ema = jax.tree_util.tree_map(jnp.copy, model)
        return TrainState(jnp.zeros((), jnp.int32), model, ema, optimizer.init(model))


def ema_update(ema: eqx.Module, model: eqx.Module, decay: float | Float[Array, ""]) -> eqx.Module:
    """``ema ← decay·ema + (1 − decay)·model``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, model)


Batch = Union[LatentBatch, "TokenBatch"]
Loss = Callable[..., tuple[Float[Array, ""], dict[str, Float[Array, ""]]]]
"""``loss(model, batch, key) -> (loss, metrics)``: ELF's FlowObjective or a baseline's objective."""


def _loss_and_grads(model: eqx.Module, batch: Batch, key: PRNGKeyArray, objective: Loss, encoder):
    k_encode, k_loss = jax.random.split(key)
    if encoder is not None:
        batch = encoder(batch, k_encode)
    return jax.value_and_grad(objective, has_aux=True)(model, batch, k_loss)


def _accumulated_grads(model: eqx.Module, batch: Batch, key: PRNGKeyArray, objective: Loss, encoder, micro: int):
    """Mean loss, metrics and gradients over ``micro`` equal slices of the batch, one at a time."""
    if micro == 1:
        return _loss_and_grads(model, batch, key, objective, encoder)
    size = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if size % micro:
        raise ConfigError(f"batch of {size} does not split into grad_accum={micro} micro-batches")
    slices = jax.tree_util.tree_map(lambda a: a.reshape(micro, size // micro, *a.shape[1:]), batch)

    def one(carry, inputs):
        part, k = inputs
        (loss, metrics), grads = _loss_and_grads(model, part, k, objective, encoder)
        return jax.tree_util.tree_map(jnp.add, carry, ((loss, metrics), grads)), None

    zeros = jax.tree_util.tree_map(
        jnp.zeros_like, jax.eval_shape(lambda: _loss_and_grads(model, jax.tree_util.tree_map(lambda a: a[0], slices), key, objective, encoder))
    )
    total, _ = jax.lax.scan(one, zeros, (slices, jax.random.split(key, micro)))
    return jax.tree_util.tree_map(lambda a: a / micro, total)


def train_step(
    state: TrainState,
    batch: Batch,
    key: PRNGKeyArray,
    *,
    objective: Loss,
    optimizer: optax.GradientTransformation,
    ema_decay: float = 0.9999,
    encoder: "LatentEncoder | None" = None,
    grad_accum: int = 1,
) -> tuple[TrainState, dict[str, Float[Array, ""]]]:
    """One optimizer step on ``batch``; returns the new state and ``{loss, grad_norm}`` with the
    objective's metrics (ELF: ``l2, ce, decode_frac``).

    ``batch`` is a :class:`LatentBatch`, or a :class:`~elf_eqx.encoders.latent_encoder.TokenBatch` when
    ``encoder`` (the frozen :class:`~elf_eqx.encoders.latent_encoder.LatentEncoder`) is given or the
    objective is a baseline's, which reads tokens. With
    ``grad_accum`` > 1 the batch is processed in that many micro-batches and their gradients
    averaged before the one update (and the one EMA update). The key is folded with the step
    count, so a resumed run draws the same randomness.
    """
    step_key = jax.random.fold_in(key, state.step)
    (loss, metrics), grads = _accumulated_grads(state.model, batch, step_key, objective, encoder, grad_accum)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.model)
    model = optax.apply_updates(state.model, updates)
    ema = ema_update(state.ema, model, ema_decay)
    new_state = TrainState(state.step + 1, model, ema, opt_state)
    return new_state, {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}


def _traced(leaf: Any) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def objective_parts(objective: Loss) -> tuple[Any, Any]:
    """``(arrays, rest)`` of an objective, as the step takes it: its arrays (concrete or
    ``ShapeDtypeStruct``), which the step traces, and everything else, which it compiles in as
    constants. ELF's and the baselines' losses hold no arrays; a distillation's holds its teacher's
    weights. ``eqx.combine(arrays, rest)`` is the objective again."""
    return eqx.partition(objective, _traced)


def objective_shardings(objective: Loss, mesh: Any) -> Any:
    """The shardings of ``objective``'s arrays on ``mesh`` (:func:`objective_parts`), by the partition
    rules of the networks they belong to (:func:`elf_eqx.parallel.partition.tree_shardings`)."""
    return tree_shardings(objective_parts(objective)[0], mesh)


def place_objective(objective: Loss, shardings: Any) -> Loss:
    """``objective`` with its arrays put on the devices of ``shardings`` (:func:`objective_shardings`);
    its other fields stay Python values."""
    arrays, rest = objective_parts(objective)
    return eqx.combine(jax.device_put(arrays, shardings), rest)


def make_train_step(
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.9999,
    grad_accum: int = 1,
    state_sharding: Any = None,
    batch_sharding: Any = None,
    objective_sharding: Any = None,
    encoder_sharding: Any = None,
    donate: bool = True,
) -> Callable[..., tuple[TrainState, dict[str, Float[Array, ""]]]]:
    """``step(state, batch, key, objective, encoder=None) -> (state, metrics)``, jit-compiled.

    ``objective`` is the loss, ``objective(model, batch, key) -> (loss, metrics)``: ELF's
    :class:`~elf_eqx.objective.FlowObjective`, a baseline's, or a distillation's. Its arrays (a
    distillation's teacher weights; the others have none) are traced arguments of the program, its
    other fields constants compiled in (one program per distinct objective, as JAX caches
    static arguments). ``encoder`` is the frozen
    :class:`~elf_eqx.encoders.latent_encoder.LatentEncoder` for token batches (an argument, not a
    constant baked into the program). ``state_sharding``, ``batch_sharding``,
    ``objective_sharding`` (:func:`objective_shardings`) and ``encoder_sharding`` are pytrees of
    ``jax.sharding.Sharding`` (or one sharding for all leaves); ``None`` leaves placement to JAX.
    The state's buffers are donated: do not reuse the ``state`` passed in. The step is traced
    under the batch sharding's mesh (as an abstract mesh), which kernels XLA cannot partition read
    to run per device (:func:`elf_eqx.nn.attention.pallas_attention`).

    ``step.lower(state, batch, key, objective, encoder=None)`` lowers the program without running
    it (benchmarks and dry runs: ``.compile()``, its ``memory_analysis()``); the compiled program
    is called ``program(state, batch, key, arrays, encoder)`` with the objective's arrays
    (:func:`objective_parts`).
    """
    mesh = getattr(batch_sharding, "mesh", None)

    def step(state: TrainState, batch: Batch, key: PRNGKeyArray, arrays: Any, encoder: Any, rest: Any):
        with traced_on(mesh):
            return train_step(
                state, batch, key, objective=eqx.combine(arrays, rest), optimizer=optimizer, ema_decay=ema_decay,
                encoder=encoder, grad_accum=grad_accum,
            )

    kwargs: dict[str, Any] = {}
    if any(s is not None for s in (state_sharding, batch_sharding, objective_sharding, encoder_sharding)):
        kwargs["in_shardings"] = (state_sharding, batch_sharding, None, objective_sharding, encoder_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    compiled = jax.jit(step, donate_argnums=(0,) if donate else (), static_argnums=(5,), **kwargs)

    def call(state, batch, key, objective, encoder=None):
        arrays, rest = objective_parts(objective)
        return compiled(state, batch, key, arrays, encoder, rest)

    def lower(state, batch, key, objective, encoder=None):
        arrays, rest = objective_parts(objective)
        return compiled.lower(state, batch, key, arrays, encoder, rest)

    call.lower = lower
    return call
