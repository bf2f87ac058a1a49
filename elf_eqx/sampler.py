"""ELF's sampler: any solver of :mod:`elf_eqx.solvers` over a time grid, with churn,
self-conditioning, SC-CFG and classifier-free guidance, then one decode pass to tokens
(docs/method.md#sampling).

:meth:`Sampler.solve` is the one loop every solver runs in, and takes any x-prediction function,
so the same solvers run a toy with an exact denoiser (``benchmarks/toy_sampler.py``). The loop is a
``lax.scan``; wrap a call in ``jax.jit``/``eqx.filter_jit`` to compile it once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.flow import FLOW, FlowConstants, clipped_log_time, keep_condition
from elf_eqx.model import ELF
from elf_eqx.sampling.settings import SamplerSettings
from elf_eqx.solvers import Churn, Euler, FlowTerm, Predict, Solver, TimeGrid

__all__ = ["Condition", "SampleOutput", "Sampler", "clipped_log_time", "mask_after_eos", "Predict"]


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


def guided_prediction(
    model: ELF,
    z: Float[Array, "B L D"],
    x_prev: Float[Array, "B L D"],
    t: Float[Array, " B"],
    omega: Float[Array, " B"],
    cond: Condition,
    cfg_weight: float = 1.0,
) -> Float[Array, "B L D"]:
    """The guided x̂ at times ``t``: one self-conditioned pass (``x_prev``, the condition positions
    clean) with SC-CFG scales ``omega``, plus, when ``cfg_weight`` ≠ 1, a condition-free pass (the
    condition positions of ``z`` and ``x_prev`` zeroed) mixed as ``x̂_u + w(x̂_c − x̂_u)``
    (docs/method.md#guidance)."""
    b = z.shape[0]
    inputs = jnp.concatenate([z, keep_condition(x_prev, cond.x, cond.mask)], -1)
    if cfg_weight == 1.0:
        return model(inputs, t, omega)
    uncond = jnp.where(cond.mask[..., None], 0.0, inputs)
    both = model(jnp.concatenate([inputs, uncond], 0), jnp.concatenate([t, t]), jnp.concatenate([omega, omega]))
    x_c, x_u = both[:b], both[b:]
    return x_u + cfg_weight * (x_c - x_u)


def _sampler_flag(name: str) -> str:
    """How errors name a keyword of ``Sampler(...)`` (its step count is ``num_steps``)."""
    return "Sampler." + ("num_steps" if name == "steps" else name)


class Sampler(eqx.Module):
    """A sampler: :class:`~elf_eqx.sampling.settings.SamplerSettings` (what to run) and the
    :class:`~elf_eqx.flow.FlowConstants` the model was trained with, and the solver, churn and time
    grid the settings name. Build it as ``settings.sampler(flow)`` or ``Sampler(settings, flow)``;
    ``Sampler(num_steps=8, method="ode", noise_scale=1.5, ...)`` takes any setting and flow constant
    by keyword. The settings read as attributes (``sampler.omega``, ``sampler.p_mean``)."""

    settings: SamplerSettings = eqx.field(static=True)
    flow: FlowConstants = eqx.field(static=True)
    solver: Solver
    """The step rule of every interval but the last (which is always Euler)."""
    churn_rule: Churn
    """The SDE's step back with fresh noise (the ODE: none)."""
    time_grid_rule: TimeGrid

    def __init__(
        self, settings: SamplerSettings | None = None, flow: FlowConstants | None = None, *,
        num_steps: int | None = None, **keywords: Any,
    ):
        """``keywords`` are :class:`SamplerSettings` and :class:`FlowConstants` field names; they
        change ``settings`` (default: the reference's) and ``flow`` (default: the reference's)."""
        if num_steps is not None:
            keywords["steps"] = num_steps
        flow_keys = {k: keywords.pop(k) for k in list(keywords) if k in FlowConstants.names()}
        unknown = sorted(set(keywords) - set(SamplerSettings.names()))
        if unknown:
            raise TypeError(f"Sampler got unknown keyword(s) {unknown}")
        if keywords:
            SamplerSettings.check(keywords, _sampler_flag)
            settings = dataclasses.replace(settings or SamplerSettings(), **keywords)
        self.settings = settings if settings is not None else SamplerSettings()
        self.flow = dataclasses.replace(flow or FLOW, **flow_keys)
        self.solver = self.settings.build_solver()
        self.churn_rule = self.settings.build_churn()
        self.time_grid_rule = self.settings.build_grid()

    def __getattr__(self, name: str) -> Any:
        # Settings and flow constants read as attributes (fields and methods are found first).
        if not name.startswith("_") and name not in ("settings", "flow"):
            for source in (self.settings, self.flow):
                if hasattr(source, name):
                    return getattr(source, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def num_steps(self) -> int:
        return self.settings.steps

    def nfe(self) -> int:
        """Network evaluations per sample (:meth:`SamplerSettings.nfe`; the decode pass is not counted)."""
        return self.settings.nfe()

    def grid(self, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        """Times ``0 = t_0 < … < t_n = 1`` (docs/method.md#time-grids); ``key`` draws random grids."""
        return self.time_grid_rule.times(self.settings.steps, key, self.flow)

    def predict(
        self,
        model: ELF,
        z: Float[Array, "B L D"],
        x_prev: Float[Array, "B L D"],
        t: Float[Array, ""],
        cond: Condition,
    ) -> Float[Array, "B L D"]:
        """Guided x̂ at time ``t`` (:func:`guided_prediction` with this sampler's ω and CFG weight)."""
        b = z.shape[0]
        return guided_prediction(model, z, x_prev, jnp.full((b,), t), jnp.full((b,), self.settings.omega), cond,
                                 self.settings.cfg_weight)

    def churn(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], gamma: Float[Array, ""] | float,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z_b, t_b)``: :attr:`churn_rule` with churn ``gamma`` and the flow's noise scale."""
        return self.churn_rule(z, t, t_next, gamma, key, self.flow.noise_scale)

    def solve(
        self, predict: Predict, z0: Float[Array, "B L D"], grid: Float[Array, " n_plus_1"], key: PRNGKeyArray,
        cond: Condition | None = None,
    ) -> Float[Array, "B L D"]:
        """Carry ``z`` from ``grid[0]`` to ``grid[-1]`` with any x-prediction ``predict(z, x_prev, t)``
        (the ``cond`` positions held clean): every interval but the last takes the churn and then
        :attr:`solver`'s step, the last an Euler ODE step. An Euler solver runs all intervals in one
        scan (the last with no churn): the reference's loop."""
        b, length, d = z0.shape
        cond = cond if cond is not None else Condition.none(b, length, d)
        hold = lambda z: keep_condition(z, cond.x, cond.mask)  # noqa: E731
        term = FlowTerm(lambda z, x_prev, t: predict(hold(z), x_prev, t), self.flow.t_eps, self.settings.self_condition)
        n = grid.shape[0] - 1
        gammas = jnp.where(jnp.arange(n) < n - 1, self.settings.gamma, 0.0)
        step_keys = jax.random.split(key, n)

        def interval(carry, inputs):
            z, x_prev, state = carry
            t, t_next, gamma, k = inputs
            z_b, t_b = self.churn(z, t, t_next, gamma, k)
            z_next, x_hat, state = self.solver.step(term, hold(z_b), x_prev, t_b, t_next, state)
            return (hold(z_next), term.feed(x_hat, x_prev), state), None

        scanned = n if self.solver.steps_like_euler else n - 1
        start = (hold(z0), jnp.zeros_like(z0), self.solver.init(z0))
        inputs = (grid[:scanned], grid[1:scanned + 1], gammas[:scanned], step_keys[:scanned])
        (z, x_prev, _), _ = jax.lax.scan(interval, start, inputs)
        if scanned == n:
            return z
        z_next, _, _ = Euler().step(term, z, x_prev, grid[-2], grid[-1], None)
        return hold(z_next)

    def integrate(
        self, model: ELF, z0: Float[Array, "B L D"], grid: Float[Array, " n_plus_1"], cond: Condition, key: PRNGKeyArray
    ) -> Float[Array, "B L D"]:
        """Carry ``z`` from ``grid[0]`` to ``grid[-1]`` with ``model``'s guided x̂ (the condition positions held clean)."""
        return self.solve(lambda z, x_prev, t: self.predict(model, z, x_prev, t, cond), z0, grid, key, cond)

    def decode(self, model: ELF, z1: Float[Array, "B L D"]) -> Int[Array, "B L"]:
        """Argmax tokens of ``net([z₁, 0], t=1, ω, decode)``."""
        logits = model.decode(jnp.concatenate([z1, jnp.zeros_like(z1)], -1), jnp.full((z1.shape[0],), self.settings.omega))
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
            z0 = self.flow.noise_scale * jax.random.normal(k_noise, shape, model.precision.sampler_state.elementwise)
        z1 = self.integrate(model, z0, self.grid(k_grid), cond, k_steps)
        tokens = self.decode(model, z1)
        if eos_id is not None:
            tokens = mask_after_eos(tokens, eos_id, pad_id, ~cond.mask)
        return SampleOutput(z1, tokens)

