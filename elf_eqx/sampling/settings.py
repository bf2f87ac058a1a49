"""The user-facing sampler choices, spelled one way everywhere: the sample CLI and its presets,
a training run's periodic samples, the released tasks and converted runs (docs/method.md#sampling).

Adding a sampler option is one change here: a field of :class:`SamplerSettings` whose name is the
:class:`elf_eqx.sampler.Sampler` keyword it sets (only ``steps`` is renamed, to ``num_steps``).
Every CLI flag, preset key, stored dict and record follows from the fields.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from elf_eqx.flow import FLOW, FlowConstants
from elf_eqx.sampler import Sampler, SamplerMethod, SdeNoise, Solver, TimeGrid

# SamplerSettings fields whose Sampler keyword is spelled differently.
_SAMPLER_KEYWORD = {"steps": "num_steps"}
# Settings of the baselines' samplers that ELF's Sampler does not take.
_BASELINE_ONLY = ("top_p",)


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
    time_grid: TimeGrid = "logit_normal"
    """Time grid: sorted logit-normal draws (a fresh grid per batch unless grid_seed is set), the
    logit-normal quantiles, uniform, or power ((i/n)^grid_exponent)."""
    self_condition: bool = True
    """Feed each step's x̂ to the next (as trained); false feeds zeros."""
    solver: Solver = "euler"
    """Step rule: euler (reference), heun (2 evaluations a step), dpm2m (1, reusing the last x̂)."""
    sde_noise: SdeNoise = "reference"
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
        for name, choices in (("method", SamplerMethod), ("time_grid", TimeGrid), ("solver", Solver),
                              ("sde_noise", SdeNoise)):
            if getattr(self, name) not in typing.get_args(choices):
                raise ValueError(f"{self.flag(name)} {getattr(self, name)!r} is not one of "
                                 f"{list(typing.get_args(choices))}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"{self.flag('steps')} must be a positive integer, got {self.steps!r}")
        if self.gamma < 0:
            raise ValueError(f"{self.flag('gamma')} must be non-negative, got {self.gamma}")
        if not self.grid_exponent > 0:
            raise ValueError(f"{self.flag('grid_exponent')} must be positive, got {self.grid_exponent}")
        if self.grid_seed is not None and (isinstance(self.grid_seed, bool) or not isinstance(self.grid_seed, int)):
            raise ValueError(f"{self.flag('grid_seed')} must be an integer, got {self.grid_seed!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"{self.flag('top_p')} must be in (0, 1], got {self.top_p}")
        if not isinstance(self.self_condition, bool):
            raise ValueError(f"{self.flag('self_condition')} must be true or false, got {self.self_condition!r}")

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
            raise ValueError(f"{where}: unknown sampler setting(s) {unknown}; known: {list(cls.names())}")
        hints = typing.get_type_hints(cls)
        # JSON and YAML write 3.0 as 3: float settings take ints.
        coerced = {k: float(v) if hints[k] is float and isinstance(v, int) and not isinstance(v, bool) else v
                   for k, v in values.items()}
        return cls(**coerced)

    def replace(self, **changes: Any) -> "SamplerSettings":
        """These settings with ``changes`` applied; ``None`` values leave a setting as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def sampler(self, flow: FlowConstants = FLOW) -> Sampler:
        """The :class:`Sampler` of these settings for a model trained with the constants ``flow``."""
        keywords = {_SAMPLER_KEYWORD.get(k, k): v for k, v in self.to_dict().items() if k not in _BASELINE_ONLY}
        return Sampler(**keywords, **flow.to_dict())

    def tag(self, family: str = "elf") -> str:
        """A short name for file names: ``<method><steps>-w<omega>``, then ``-<solver>`` and
        ``-consistent`` when not the reference's; ``mdlm<steps>`` and ``ar`` (``-p<top_p>``) for the baselines."""
        if family == "mdlm":
            return f"mdlm{self.steps}"
        if family == "ar":
            return "ar" + (f"-p{self.top_p:g}" if self.top_p < 1 else "")
        extra = ("" if self.solver == "euler" else f"-{self.solver}") + (
            "-consistent" if self.method == "sde" and self.sde_noise == "consistent" else "")
        return f"{self.method}{self.steps}-w{self.omega:g}{extra}"

    def nfe(self) -> int:
        """Network evaluations per sample (see :meth:`elf_eqx.sampler.Sampler.nfe`)."""
        return self.sampler().nfe()
