"""ELF samplers: Euler ODE and churned SDE over a time grid, with self-conditioning,
SC-CFG and classifier-free guidance, then one decode pass to tokens (docs/method.md#sampling).

The whole loop is one ``lax.scan``; wrap a call in ``jax.jit``/``eqx.filter_jit`` to compile it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.flow import FLOW, keep_condition, sample_logit_normal, velocity
from elf_eqx.model import ELF

SamplerMethod = Literal["ode", "sde"]
TimeGrid = Literal["uniform", "logit_normal"]
if TYPE_CHECKING:
    _Method, _Grid = SamplerMethod, TimeGrid
else:  # at run time a bad choice fails in __check_init__, a ValueError naming the field
    _Method = _Grid = str


class Condition(eqx.Module):
    """Clean condition latents and where they sit (conditional tasks). Condition positions stay
    clean throughout sampling."""

    x: Float[Array, "B L D"]
    mask: Bool[Array, "B L"]

    @staticmethod
    def none(batch: int, length: int, dim: int) -> "Condition":
        """No condition tokens (unconditional generation)."""
        return Condition(jnp.zeros((batch, length, dim), jnp.float32), jnp.zeros((batch, length), bool))


class SampleOutput(eqx.Module):
    """Final latents ``z₁`` and decoded token ids (after EOS masking when an EOS id is given)."""

    latents: Float[Array, "B L D"]
    tokens: Int[Array, "B L"]


def mask_after_eos(
    tokens: Int[Array, "B L"], eos_id: int, pad_id: int, target_mask: Bool[Array, "B L"] | None = None
) -> Int[Array, "B L"]:
    """Replace everything from the first EOS on (among ``target_mask`` positions) with ``pad_id``."""
    is_target = jnp.ones(tokens.shape, bool) if target_mask is None else target_mask
    seen_eos = jnp.cumsum((tokens == eos_id) & is_target, axis=-1) > 0
    return jnp.where(seen_eos & is_target, pad_id, tokens)


class Sampler(eqx.Module):
    """Sampling settings. ``method`` is ``ode`` (Euler) or ``sde`` (churn ``gamma``); the last
    interval is always an ODE step. ``omega`` is the SC-CFG scale fed to the network;
    ``cfg_weight`` ≠ 1 adds a second, condition-free pass (conditional tasks). Users choose
    these through :class:`elf_eqx.sampling.settings.SamplerSettings` (``settings.sampler(flow)``);
    the flow constants must be those the model was trained with."""

    num_steps: int = eqx.field(static=True, default=32)
    method: _Method = eqx.field(static=True, default="sde")
    gamma: float = 1.5
    omega: float = 3.0
    cfg_weight: float = eqx.field(static=True, default=1.0)
    time_grid: _Grid = eqx.field(static=True, default="logit_normal")
    p_mean: float = FLOW.p_mean
    p_std: float = FLOW.p_std
    noise_scale: float = FLOW.noise_scale
    t_eps: float = FLOW.t_eps
    self_condition: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"Sampler.num_steps must be >= 1, got {self.num_steps}")
        if self.method not in ("ode", "sde"):
            raise ValueError(f"Sampler.method must be 'ode' or 'sde', got {self.method!r}")
        if self.time_grid not in ("uniform", "logit_normal"):
            raise ValueError(f"Sampler.time_grid must be 'uniform' or 'logit_normal', got {self.time_grid!r}")

    def grid(self, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        """Times ``0 = t_0 < … < t_n = 1``: uniform, or 0, sorted logit-normal draws, 1 (fresh per key)."""
        n = self.num_steps
        if self.time_grid == "uniform":
            return jnp.linspace(0.0, 1.0, n + 1, dtype=jnp.float32)
        inner = jnp.sort(sample_logit_normal(key, (n - 1,), self.p_mean, self.p_std))
        return jnp.concatenate([jnp.zeros(1), inner, jnp.ones(1)]).astype(jnp.float32)

    def predict(
        self,
        model: ELF,
        z: Float[Array, "B L D"],
        x_prev: Float[Array, "B L D"],
        t: Float[Array, ""],
        cond: Condition,
    ) -> Float[Array, "B L D"]:
        """Guided x̂ at time ``t``: one self-conditioned pass with SC-CFG ω, plus a condition-free
        pass mixed as ``x̂_u + w(x̂_c − x̂_u)`` when ``cfg_weight`` ≠ 1."""
        b = z.shape[0]
        inputs = jnp.concatenate([z, keep_condition(x_prev, cond.x, cond.mask)], -1)
        if self.cfg_weight == 1.0:
            return model(inputs, jnp.full((b,), t), jnp.full((b,), self.omega))
        uncond = jnp.where(cond.mask[..., None], 0.0, inputs)
        both = model(jnp.concatenate([inputs, uncond], 0), jnp.full((2 * b,), t), jnp.full((2 * b,), self.omega))
        x_c, x_u = both[:b], both[b:]
        return x_u + self.cfg_weight * (x_c - x_u)

    def integrate(
        self, model: ELF, z0: Float[Array, "B L D"], grid: Float[Array, " n_plus_1"], cond: Condition, key: PRNGKeyArray
    ) -> Float[Array, "B L D"]:
        """Carry ``z`` from ``grid[0]`` to ``grid[-1]`` (the condition positions held clean)."""
        n = grid.shape[0] - 1
        churn = jnp.where(jnp.arange(n) < n - 1, self.gamma if self.method == "sde" else 0.0, 0.0)
        step_keys = jax.random.split(key, n)

        def step(carry, inputs):
            z, x_prev = carry
            t, t_next, gamma, k = inputs
            alpha = jnp.clip(1.0 - gamma * (t_next - t), 0.0, 1.0)
            t_b = alpha * t
            z_b = alpha * z + (1.0 - alpha) * self.noise_scale * jax.random.normal(k, z.shape)
            z_b = keep_condition(z_b, cond.x, cond.mask)
            x_pred = self.predict(model, z_b, x_prev, t_b, cond)
            v = velocity(x_pred, z_b, jnp.full((z.shape[0],), t_b), self.t_eps)
            z_next = keep_condition(z_b + (t_next - t_b) * v, cond.x, cond.mask)
            return (z_next, x_pred if self.self_condition else x_prev), None

        start = (keep_condition(z0, cond.x, cond.mask), jnp.zeros_like(z0))
        (z1, _), _ = jax.lax.scan(step, start, (grid[:-1], grid[1:], churn, step_keys))
        return z1

    def decode(self, model: ELF, z1: Float[Array, "B L D"]) -> Int[Array, "B L"]:
        """Argmax tokens of ``net([z₁, 0], t=1, ω, decode)``."""
        logits = model.decode(jnp.concatenate([z1, jnp.zeros_like(z1)], -1), jnp.full((z1.shape[0],), self.omega))
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def __call__(
        self,
        model: ELF,
        key: PRNGKeyArray,
        *,
        batch_size: int | None = None,
        length: int | None = None,
        condition: Condition | None = None,
        z0: Float[Array, "B L D"] | None = None,
        eos_id: int | None = None,
        pad_id: int = 0,
    ) -> SampleOutput:
        """Draw samples. Give ``batch_size`` and ``length`` (unconditional), or a ``condition``,
        or an explicit start ``z0``; otherwise ``z0 ~ N(0, s²I)``. With ``eos_id``, target tokens
        from the first EOS on become ``pad_id``."""
        k_grid, k_noise, k_steps = jax.random.split(key, 3)
        d = model.config.encoder_dim
        if z0 is not None:
            shape = z0.shape
        elif condition is not None:
            shape = condition.x.shape
        elif batch_size is not None and length is not None:
            shape = (batch_size, length, d)
        else:
            raise ValueError("Sampler needs batch_size and length, a condition, or z0")
        if shape[-1] != d:
            raise ValueError(f"sample latents have {shape[-1]} features but the model's encoder_dim is {d}")
        cond = condition if condition is not None else Condition.none(shape[0], shape[1], d)
        if z0 is None:
            z0 = self.noise_scale * jax.random.normal(k_noise, shape, jnp.float32)
        z1 = self.integrate(model, z0, self.grid(k_grid), cond, k_steps)
        tokens = self.decode(model, z1)
        if eos_id is not None:
            tokens = mask_after_eos(tokens, eos_id, pad_id, ~cond.mask)
        return SampleOutput(z1, tokens)
