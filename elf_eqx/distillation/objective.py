"""The progressive-distillation loss for ELF's x-prediction flow (docs/method.md#distillation).

A student of ``n`` Euler steps on a fixed grid learns to land, in one step from ``t_i`` to
``t_{i+1}``, where the teacher's two Euler steps ``t_i → t_mid → t_{i+1}`` (its ``2n``-step grid,
which holds the student's) land. An Euler step is ``z' = z + (t' − t)(x̂ − z)/c(t)`` with
``c(t) = max(1 − t, t_eps)``, so the one x̂ that makes it land on the teacher's ``z''`` is

    x̃ = z + c(t)·(z'' − z)/(t' − t),

the student's regression target. The error is weighted like ELF's velocity loss,
``((x̂ − x̃)/c(t))²``: it is the squared error of the student's velocity against the velocity that
reaches ``z''``. The same network decodes, so the decode mode is distilled too on its share of the
batch: the KL divergence of the student's decode logits from the teacher's, on the decode branch's
corrupted latents.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.errors import ConfigError
from elf_eqx.flow import FLOW, FlowConstants, euler_update, interpolate, keep_condition
from elf_eqx.model import ELF
from elf_eqx.objective import FlowObjective, LatentBatch, decode_rows, masked_mean
from elf_eqx.sampler import Condition, guided_prediction


def student_target(
    z: Float[Array, "B L D"], z_end: Float[Array, "B L D"], t: Float[Array, " B"], t_end: Float[Array, " B"],
    t_eps: float,
) -> Float[Array, "B L D"]:
    """The x̂ whose Euler step from ``(z, t)`` lands on ``z_end`` at ``t_end``: ``z + c(t)(z_end − z)/(t_end − t)``."""
    c = jnp.maximum(1.0 - t, t_eps)
    return z + (c / (t_end - t))[:, None, None] * (z_end - z)


def check_decode_share(share: float, flag: str) -> None:
    """A :class:`~elf_eqx.errors.ConfigError` naming ``flag`` unless ``share`` is in ``[0, 1)`` (the
    distillation flags' check and the objective's own)."""
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"{flag} must be in [0, 1), got {share}")


class DistillObjective(eqx.Module):
    """One distillation round's loss, called ``objective(student, batch, key)``. It carries its
    frozen ``teacher``: the training step takes the objective as an argument, so the teacher's
    weights are traced arrays of the step (sharded like any network's), not constants of the program.

    ``grid`` holds the student's ``n + 1`` times; the teacher's grid is it with each interval's
    midpoint-in-the-teacher's-grid ``mid`` (``2n + 1`` times). ``omega`` is the SC-CFG scale the
    student is distilled (and will be sampled) at; ``cfg_weight`` the teacher's classifier-free
    guidance, which the student learns in one pass. ``decode_share`` of each batch trains the
    decode branch with ``decode``'s loss.
    """

    teacher: ELF
    grid: tuple[float, ...] = eqx.field(static=True)
    mid: tuple[float, ...] = eqx.field(static=True)
    flow: FlowConstants = eqx.field(static=True, default=FLOW)
    omega: float = eqx.field(static=True, default=3.0)
    cfg_weight: float = eqx.field(static=True, default=1.0)
    decode: FlowObjective = FlowObjective()
    decode_share: float = eqx.field(static=True, default=0.2)

    def __check_init__(self):
        if len(self.mid) != len(self.grid) - 1:
            raise ValueError(f"DistillObjective: {len(self.grid) - 1} student intervals need as many midpoints, "
                             f"got {len(self.mid)}")
        check_decode_share(self.decode_share, "DistillObjective.decode_share")

    @property
    def steps(self) -> int:
        """The student's number of steps ``n``."""
        return len(self.grid) - 1

    def _predict(self, model: ELF, z, x_prev, t, cond: Condition, weight: float):
        omega = jnp.full(t.shape, self.omega)
        return guided_prediction(model, z, x_prev, t, omega, cond, weight)

    def distill_loss(
        self, model: ELF, batch: LatentBatch, key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], Int[Array, " B"]]:
        """``(weighted squared error of the student's x̂ against the two-teacher-step target, intervals drawn)``."""
        k_i, k_eps = jax.random.split(key)
        b = batch.x.shape[0]
        eps = self.flow.t_eps
        cond = Condition(batch.x, batch.cond_mask)
        hold = lambda z: keep_condition(z, batch.x, batch.cond_mask)  # noqa: E731
        grid, mid = jnp.asarray(self.grid, jnp.float32), jnp.asarray(self.mid, jnp.float32)
        i = jax.random.randint(k_i, (b,), 0, self.steps)
        t, t_mid, t_end = grid[i], mid[i], grid[i + 1]
        z = hold(interpolate(batch.x, jax.random.normal(k_eps, batch.x.shape), t, self.flow.noise_scale))
        first = (i == 0)[:, None, None]  # the sampler's first step is self-conditioned on zeros
        zeros = jnp.zeros_like(z)

        def self_conditioning(net: ELF, weight: float) -> Float[Array, "B L D"]:
            # Beyond the first step the sampler feeds the previous step's x̂; as in ELF's training,
            # the network's own zero-self-conditioned x̂ at the same z stands in for it.
            own = self._predict(net, z, zeros, t, cond, weight)
            return jnp.where(first, 0.0, own)

        teacher = jax.lax.stop_gradient(self.teacher)
        x1 = self._predict(teacher, z, self_conditioning(teacher, self.cfg_weight), t, cond, self.cfg_weight)
        z_mid = hold(euler_update(z, x1, t, t_mid, eps))
        x2 = self._predict(teacher, z_mid, x1, t_mid, cond, self.cfg_weight)
        z_end = hold(euler_update(z_mid, x2, t_mid, t_end, eps))
        target = jax.lax.stop_gradient(student_target(z, z_end, t, t_end, eps))
        x_prev = jax.lax.stop_gradient(self_conditioning(model, 1.0))
        x_hat = self._predict(model, z, x_prev, t, cond, 1.0)
        scale = jnp.maximum(1.0 - t, eps)[:, None, None]
        per_token = jnp.mean(jnp.square((x_hat - target) / scale), axis=-1)
        return masked_mean(per_token, batch.loss_mask & ~batch.cond_mask), i

    def decode_kl(self, model: ELF, batch: LatentBatch, key: PRNGKeyArray) -> Float[Array, ""]:
        """``KL(teacher ‖ student)`` of the decode-mode token distributions on the decode branch's
        corrupted latents (:meth:`FlowObjective.decode_inputs`), per scored token."""
        z_in, omega = self.decode.decode_inputs(batch, key)
        teacher = jax.lax.stop_gradient(self.teacher)
        target = jax.nn.log_softmax(teacher.decode_head(teacher.hidden(z_in, 1.0, omega, True)))
        logits = jax.nn.log_softmax(model.decode_head(model.hidden(z_in, 1.0, omega, True)))
        kl = jnp.sum(jnp.exp(target) * (target - logits), axis=-1)
        return masked_mean(kl, batch.loss_mask & ~batch.cond_mask)

    def __call__(
        self, model: ELF, batch: LatentBatch, key: PRNGKeyArray, *, dropout: bool = False
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        """``(loss, {"distill", "decode_kl"})``: ``(1 − share)·distill + share·decode_kl`` over the
        batch split into its distillation rows and its decode rows (the first ``round(share·B)``)."""
        k_distill, k_decode = jax.random.split(key)
        b = batch.x.shape[0]
        n_dec = decode_rows(self.decode_share, b)
        distill, _ = self.distill_loss(model, batch.rows(n_dec, b), k_distill)
        kl = self.decode_kl(model, batch.rows(0, n_dec), k_decode) if n_dec else jnp.float32(0.0)
        share = n_dec / b
        return (1.0 - share) * distill + share * kl, {"distill": distill, "decode_kl": kl}


def nested_grids(grid: Float[Array, " n2_plus_1"]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """From the teacher's ``2n``-step grid: the student's grid (its even points) and each student
    interval's teacher midpoint (its odd points)."""
    values = [float(v) for v in jax.device_get(grid)]
    if (len(values) - 1) % 2:
        raise ValueError(f"a teacher grid of {len(values) - 1} steps has no half")
    return tuple(values[0::2]), tuple(values[1::2])

