"""ELF's sampler: the settings that name it and the objects it runs — any solver of
:mod:`elf_eqx.solvers` over a time grid, with churn, self-conditioning, SC-CFG and
classifier-free guidance, then one decode pass to tokens (docs/method.md#sampling).

:class:`SamplerSettings` are what flags, presets and records spell; :class:`Sampler` is built
from them once (the one place their names become solver, churn and grid objects) and holds
only objects and values. :meth:`Sampler.solve` is the one loop every solver runs in, and takes
any x-prediction function, so the same solvers run a toy with an exact denoiser
(``benchmarks/toy_sampler.py``); the loop also counts its network evaluations
(:meth:`Sampler.nfe`). The loop is a ``lax.scan``; wrap a call in ``jax.jit``/``eqx.filter_jit``
to compile it once.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.errors import ConfigError
from elf_eqx.flow import FLOW, FlowConstants, keep_condition
from elf_eqx.model import ELF
from elf_eqx.sampling.settings_base import Flag, StepsSetting
from elf_eqx.solvers import (
    SDE_NOISES,
    SOLVERS,
    TIME_GRIDS,
    Churn,
    Euler,
    FlowTerm,
    LogitNormalGrid,
    NoChurn,
    Predict,
    SdeNoiseName,
    Solver,
    SolverName,
    TimeGrid,
    TimeGridName,
)

__all__ = ["Condition", "SampleOutput", "Sampler", "SamplerMethod", "SamplerSettings",
           "guidance_passes", "mask_after_eos", "Predict"]


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


def guidance_passes(cfg_weight: float) -> int:
    """Network passes of one :func:`guided_prediction`: 2 with classifier-free guidance (weight ≠ 1), else 1."""
    return 2 if cfg_weight != 1.0 else 1


# -- what flags, presets and records spell ------------------------------------------------------

SamplerMethod = Literal["ode", "sde"]
_CHOICES: dict[str, tuple[str, ...]] = {
    "method": typing.get_args(SamplerMethod), "solver": tuple(SOLVERS), "sde_noise": tuple(SDE_NOISES),
    "time_grid": tuple(TIME_GRIDS),
}


@dataclasses.dataclass(frozen=True)
class SamplerSettings(StepsSetting):
    """How ELF samples: the solver, its steps and time grid, the churn and the guidance scales.
    Every sampler flag, preset key and record field of ELF follows from these fields."""

    method: SamplerMethod = "sde"
    """ODE, or SDE with churn γ (the last interval is always an Euler ODE step)."""
    gamma: float = 1.5
    """SDE churn γ (unused by the ODE)."""
    omega: float = 3.0
    """SC-CFG scale ω fed to the network."""
    cfg_weight: float = 1.0
    """Classifier-free guidance weight for conditional tasks (1 = off)."""
    time_grid: TimeGridName = "logit_normal"
    """Time grid: sorted logit-normal draws (a fresh grid per batch unless grid_seed is set), the
    logit-normal quantiles, uniform, or power ((i/n)^grid_exponent)."""
    self_condition: bool = True
    """Feed each step's x̂ to the next (as trained); false feeds zeros."""
    solver: SolverName = "euler"
    """Step rule: euler (reference), heun (2 evaluations a step), dpm2m (1, reusing the last x̂)."""
    sde_noise: SdeNoiseName = "reference"
    """SDE churn noise: reference ((1 − α)·s), or consistent (exactly the noise level of t_b)."""
    grid_exponent: float = 2.0
    """Exponent of the power grid (> 1: more steps near the noise end)."""
    grid_seed: int | None = None
    """Draw the logit-normal grid once from this seed, the same for every batch (None: per batch)."""

    @classmethod
    def check(cls, values: Mapping[str, Any], flag: Flag) -> None:
        super().check(values, flag)
        for name, choices in _CHOICES.items():
            if name in values and values[name] not in choices:
                raise ConfigError(f"{flag(name)} {values[name]!r} is not one of {list(choices)}")
        if values.get("gamma", 0.0) < 0:
            raise ConfigError(f"{flag('gamma')} must be non-negative, got {values['gamma']}")
        if not values.get("grid_exponent", 1.0) > 0:
            raise ConfigError(f"{flag('grid_exponent')} must be positive, got {values['grid_exponent']}")
        seed = values.get("grid_seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"{flag('grid_seed')} must be an integer, got {seed!r}")
        if not isinstance(values.get("self_condition", True), bool):
            raise ConfigError(f"{flag('self_condition')} must be true or false, got {values['self_condition']!r}")

    @property
    def uses_churn(self) -> bool:
        """Whether steps churn (the SDE)."""
        return self.method == "sde"

    def sampler(self, flow: FlowConstants = FLOW) -> "Sampler":
        """The :class:`Sampler` of these settings for a model trained with the constants ``flow``."""
        return Sampler(self, flow)

    def nfe(self) -> int:
        """Network evaluations per sample of the sampler these settings build (:meth:`Sampler.nfe`)."""
        return self.sampler().nfe()

    # -- names --------------------------------------------------------------------------------

    def _differs(self, name: str) -> bool:
        """Whether setting ``name`` differs from the reference's default (names mention only those)."""
        return getattr(self, name) != getattr(SamplerSettings, name)

    def tag(self) -> str:
        """A short name for file names: ``<method><steps>-w<omega>``, then ``-<solver>`` and
        ``-consistent`` when not the reference's."""
        extra = (f"-{self.solver}" if self._differs("solver") else "") + (
            f"-{self.sde_noise}" if self.uses_churn and self._differs("sde_noise") else "")
        return f"{self.method}{self.steps}-w{self.omega:g}{extra}"

    def label(self) -> str:
        """One curve of a sweep: ``"SDE γ=1.5 ω=3"`` / ``"ODE ω=3"``, then the solver and the churn
        noise when not the reference's and ``CFG w`` when guided."""
        gamma = f" γ={self.gamma:g}" if self.uses_churn else ""
        solver = f" {self.solver}" if self._differs("solver") else ""
        noise = f" {self.sde_noise}" if self.uses_churn and self._differs("sde_noise") else ""
        guidance = f" CFG {self.cfg_weight:g}" if self._differs("cfg_weight") else ""
        return f"{self.method.upper()}{gamma} ω={self.omega:g}{solver}{noise}{guidance}"

    def file_stem(self) -> str:
        """A sweep's samples file stem, e.g. ``sde-g1.5-w3-steps32`` (``-heun``, ``-consistent``, ``-cfg2``)."""
        solver = f"-{self.solver}" if self._differs("solver") else ""
        noise = f"-{self.sde_noise}" if self.uses_churn and self._differs("sde_noise") else ""
        guidance = f"-cfg{self.cfg_weight:g}" if self._differs("cfg_weight") else ""
        return f"{self.method}-g{self.gamma:g}-w{self.omega:g}{solver}{noise}{guidance}-steps{self.steps}"


# -- the objects it runs --------------------------------------------------------------------------


def _sampler_flag(name: str) -> str:
    """How errors name a keyword of ``Sampler(...)`` (its step count is ``num_steps``)."""
    return "Sampler." + ("num_steps" if name == "steps" else name)


class Sampler(eqx.Module):
    """ELF's sampler: a step rule, a churn and a time grid (objects carrying their own
    parameters), the number of steps, the guidance scales, and the
    :class:`~elf_eqx.flow.FlowConstants` the model was trained with.

    Build it from settings, ``settings.sampler(flow)`` (or ``Sampler(settings, flow)``), where
    setting names become objects once; ``Sampler(num_steps=8, method="ode", noise_scale=1.5, ...)``
    takes any setting and flow constant by keyword, and ``solver``, ``churn_rule`` and
    ``time_grid`` may be given as objects (``Sampler(solver=Heun(), time_grid=UniformGrid(), steps=8)``)."""

    solver: Solver
    """The step rule of every interval but the last (which is always Euler)."""
    churn_rule: Churn
    """The SDE's step back with fresh noise, with its γ and noise scale (the ODE: none)."""
    time_grid: TimeGrid
    """Where the ``steps + 1`` times lie, with its parameters."""
    steps: int = eqx.field(static=True)
    """Number of sampling steps (intervals of the grid)."""
    omega: float = eqx.field(static=True)
    """SC-CFG scale ω fed to the network."""
    cfg_weight: float = eqx.field(static=True)
    """Classifier-free guidance weight (1 = off)."""
    self_condition: bool = eqx.field(static=True)
    """Whether each x̂ is fed to the next pass (otherwise zeros are)."""
    flow: FlowConstants = eqx.field(static=True)
    """The flow constants the model was trained with (the start noise scale, the velocity floor)."""

    def __init__(
        self, settings: SamplerSettings | None = None, flow: FlowConstants | None = None, *,
        solver: Solver | str | None = None, churn_rule: Churn | None = None, time_grid: TimeGrid | str | None = None,
        num_steps: int | None = None, **keywords: Any,
    ):
        """``keywords`` are :class:`SamplerSettings` and :class:`FlowConstants` field names (and
        ``solver``/``time_grid`` by name); they change ``settings`` (default: the reference's) and
        ``flow`` (default: the reference's). Objects given replace those the settings name."""
        by_name = {k: v for k, v in (("solver", solver), ("time_grid", time_grid)) if isinstance(v, str)}
        names = {**keywords, **by_name}
        if num_steps is not None:
            names["steps"] = num_steps
        flow_keys = {k: names.pop(k) for k in list(names) if k in FlowConstants.names()}
        unknown = sorted(set(names) - set(SamplerSettings.names()))
        if unknown:
            raise TypeError(f"Sampler got unknown keyword(s) {unknown}")
        if names:
            SamplerSettings.check(names, _sampler_flag)
        settings = dataclasses.replace(settings or SamplerSettings(), **names)
        flow = dataclasses.replace(flow or FLOW, **flow_keys)
        # The one place setting names become objects (the registries of elf_eqx.solvers).
        self.solver = solver if isinstance(solver, Solver) else SOLVERS[settings.solver]()
        if churn_rule is None:
            churn_rule = (SDE_NOISES[settings.sde_noise](settings.gamma, flow.noise_scale) if settings.uses_churn
                          else NoChurn())
        self.churn_rule = churn_rule
        parameters = {"p_mean": flow.p_mean, "p_std": flow.p_std, "exponent": settings.grid_exponent,
                      "seed": settings.grid_seed}
        self.time_grid = (time_grid if isinstance(time_grid, TimeGrid)
                          else TIME_GRIDS[settings.time_grid].taking(parameters))
        self.steps = settings.steps
        self.omega = settings.omega
        self.cfg_weight = settings.cfg_weight
        self.self_condition = settings.self_condition
        self.flow = flow

    @property
    def grid_seed(self) -> int | None:
        """The seed a logit-normal grid is drawn from once (``None``: a fresh grid per key, or another grid)."""
        return self.time_grid.seed if isinstance(self.time_grid, LogitNormalGrid) else None

    def nfe(self) -> int:
        """Network evaluations per sample in :meth:`solve`: the solver's on every interval but the
        last, one on the last (Euler), each prediction taking :func:`guidance_passes` passes
        (``steps`` for Euler and DPM2M, ``2·steps − 1`` for Heun, doubled with CFG). The decode
        pass is not counted."""
        evaluations = (self.steps - 1) * self.solver.evaluations_per_step + Euler.evaluations_per_step
        return evaluations * guidance_passes(self.cfg_weight)

    def grid(self, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        """Times ``0 = t_0 < … < t_n = 1`` (docs/method.md#time-grids); ``key`` draws random grids."""
        return self.time_grid.times(self.steps, key)

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
        return guided_prediction(model, z, x_prev, jnp.full((b,), t), jnp.full((b,), self.omega), cond, self.cfg_weight)

    def churn(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], gamma: Float[Array, ""] | float,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """``(z_b, t_b)``: one step of :attr:`churn_rule` at churn ``gamma``."""
        return self.churn_rule.at(gamma)(z, t, t_next, key)

    def solve(
        self, predict: Predict, z0: Float[Array, "B L D"], grid: Float[Array, " n_plus_1"], key: PRNGKeyArray,
        cond: Condition | None = None,
    ) -> Float[Array, "B L D"]:
        """Carry ``z`` from ``grid[0]`` to ``grid[-1]`` with any x-prediction ``predict(z, x_prev, t)``
        (the ``cond`` positions held clean): every interval but the last takes the churn and then
        :attr:`solver`'s step, the last an Euler ODE step. An Euler solver runs all intervals in one
        scan (the last with γ = 0): the reference's loop."""
        b, length, d = z0.shape
        cond = cond if cond is not None else Condition.none(b, length, d)
        hold = lambda z: keep_condition(z, cond.x, cond.mask)  # noqa: E731
        term = FlowTerm(lambda z, x_prev, t: predict(hold(z), x_prev, t), self.flow, self.self_condition)
        n = grid.shape[0] - 1
        churns = self.churn_rule.for_intervals(n)
        step_keys = jax.random.split(key, n)

        def interval(carry, inputs):
            z, x_prev, state = carry
            t, t_next, churn, k = inputs
            z_b, t_b = churn(z, t, t_next, k)
            z_next, x_hat, state = self.solver.step(term, hold(z_b), x_prev, t_b, t_next, state)
            return (hold(z_next), term.feed(x_hat, x_prev), state), None

        scanned = n if self.solver.steps_like_euler else n - 1
        start = (hold(z0), jnp.zeros_like(z0), self.solver.init(z0))
        first = lambda a: a[:scanned]  # noqa: E731
        inputs = (grid[:scanned], grid[1:scanned + 1], jax.tree.map(first, churns), step_keys[:scanned])
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
            z0 = self.flow.noise_scale * jax.random.normal(k_noise, shape, model.precision.sampler_state.elementwise)
        z1 = self.integrate(model, z0, self.grid(k_grid), cond, k_steps)
        tokens = self.decode(model, z1)
        if eos_id is not None:
            tokens = mask_after_eos(tokens, eos_id, pad_id, ~cond.mask)
        return SampleOutput(z1, tokens)

