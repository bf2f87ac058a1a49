"""The user-facing sampler choices, spelled one way everywhere: the sample CLI and its presets,
a training run's periodic samples, the released tasks and converted runs (docs/method.md#sampling).

Each setting is declared and checked once, here; a :class:`elf_eqx.sampler.Sampler` is built from
a :class:`SamplerSettings` and the flow constants, and this is the one place where the names of
solvers, churn noises and time grids become objects (through the registries of
:mod:`elf_eqx.solvers`). Every CLI flag, preset key, stored dict and record follows from the fields.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from elf_eqx.errors import ConfigError
from elf_eqx.flow import FLOW, FlowConstants
from elf_eqx.solvers import (
    SDE_NOISES,
    SOLVERS,
    TIME_GRIDS,
    Churn,
    NoChurn,
    SdeNoiseName,
    Solver,
    SolverName,
    TimeGrid,
    TimeGridName,
)

if TYPE_CHECKING:
    from elf_eqx.sampler import Sampler

SamplerMethod = Literal["ode", "sde"]
_CHOICES: dict[str, tuple[str, ...]] = {
    "method": typing.get_args(SamplerMethod), "solver": tuple(SOLVERS), "sde_noise": tuple(SDE_NOISES),
    "time_grid": tuple(TIME_GRIDS),
}


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample: the solver, its steps and time grid, and the guidance scales."""

    method: SamplerMethod = "sde"
    """ODE, or SDE with churn γ (the last interval is always an Euler ODE step)."""
    steps: int = 32
    """Number of sampling steps."""
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
    top_p: float = 1.0
    """AR baseline only: nucleus sampling keeps the most likely tokens up to this probability (1 = off)."""

    flag_prefix: ClassVar[str] = "--"
    """How errors name a setting: ``--steps`` here, ``--sampling.steps`` in the training config."""

    def flag(self, name: str) -> str:
        """The command-line flag of the setting ``name``."""
        return self.flag_prefix + name.replace("_", "-")

    def __post_init__(self) -> None:
        self.check(self.to_dict(), self.flag)

    @staticmethod
    def check(values: Mapping[str, Any], flag: Callable[[str], str]) -> None:
        """Raise :class:`~elf_eqx.errors.ConfigError` naming the first bad setting of ``values``
        (``flag(name)`` spells it); missing names are not checked."""
        for name, choices in _CHOICES.items():
            if name in values and values[name] not in choices:
                raise ConfigError(f"{flag(name)} {values[name]!r} is not one of {list(choices)}")
        steps = values.get("steps", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"{flag('steps')} must be a positive integer, got {steps!r}")
        if values.get("gamma", 0.0) < 0:
            raise ConfigError(f"{flag('gamma')} must be non-negative, got {values['gamma']}")
        if not values.get("grid_exponent", 1.0) > 0:
            raise ConfigError(f"{flag('grid_exponent')} must be positive, got {values['grid_exponent']}")
        seed = values.get("grid_seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"{flag('grid_seed')} must be an integer, got {seed!r}")
        if not 0.0 < values.get("top_p", 1.0) <= 1.0:
            raise ConfigError(f"{flag('top_p')} must be in (0, 1], got {values['top_p']}")
        if not isinstance(values.get("self_condition", True), bool):
            raise ConfigError(f"{flag('self_condition')} must be true or false, got {values['self_condition']!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The setting names, in field order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """``{method, steps, gamma, omega, cfg_weight, time_grid, self_condition, solver, sde_noise,
        grid_exponent, grid_seed, top_p}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "sampler settings") -> "SamplerSettings":
        """Settings from ``values`` (missing names take the defaults); an unknown name is a
        one-line error naming it and ``where`` they came from."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{where}: unknown sampler setting(s) {unknown}; known: {list(cls.names())}")
        hints = typing.get_type_hints(cls)
        # JSON and YAML write 3.0 as 3: float settings take ints.
        coerced = {k: float(v) if hints[k] is float and isinstance(v, int) and not isinstance(v, bool) else v
                   for k, v in values.items()}
        return cls(**coerced)

    def replace(self, **changes: Any) -> "SamplerSettings":
        """These settings with ``changes`` applied; ``None`` values leave a setting as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- the objects these settings name ----------------------------------------------------

    def build_solver(self) -> Solver:
        """The step rule of every interval but the last (:mod:`elf_eqx.solvers`)."""
        return SOLVERS[self.solver]()

    def build_churn(self) -> Churn:
        """The SDE's churn with its noise (the ODE: :class:`~elf_eqx.solvers.NoChurn`)."""
        return SDE_NOISES[self.sde_noise]() if self.uses_churn else NoChurn()

    def build_grid(self) -> TimeGrid:
        """The time grid."""
        return TIME_GRIDS[self.time_grid].from_settings(self)

    def sampler(self, flow: FlowConstants = FLOW) -> "Sampler":
        """The :class:`~elf_eqx.sampler.Sampler` of these settings for a model trained with the constants ``flow``."""
        from elf_eqx.sampler import Sampler

        return Sampler(self, flow)

    @property
    def uses_churn(self) -> bool:
        """Whether steps churn (the SDE)."""
        return self.method == "sde"

    @property
    def guidance_passes(self) -> int:
        """Network passes per prediction: 2 with classifier-free guidance (weight ≠ 1), else 1."""
        return 2 if self.cfg_weight != 1.0 else 1

    def nfe(self) -> int:
        """Network evaluations per sample in the integration: the solver's count for ``steps``
        steps whose last is Euler (``steps`` for Euler and DPM2M, ``2·steps − 1`` for Heun), times
        :attr:`guidance_passes`. The final decode pass is not counted."""
        return self.build_solver().nfe(self.steps) * self.guidance_passes

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
