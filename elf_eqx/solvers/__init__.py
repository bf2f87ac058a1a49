"""Sampling solvers as objects with one contract (:mod:`elf_eqx.solvers.base`): step rules
(Euler, Heun, DPM2M), churn (none, the reference's, marginal-preserving) and time grids, each
carrying its own parameters.

The registries below name them; :meth:`elf_eqx.sampler.Sampler.__init__` is the one place a
setting's name becomes one of these objects. Adding a solver is one new file and one entry.
"""

from __future__ import annotations

from typing import Literal

from elf_eqx.solvers.base import FlowTerm, Predict, Solver
from elf_eqx.solvers.churn import Churn, ConsistentChurn, NoChurn, ReferenceChurn, SdeChurn
from elf_eqx.solvers.dpm2m import DPM2M
from elf_eqx.solvers.euler import Euler
from elf_eqx.solvers.grids import LogitNormalGrid, LogitNormalQuantileGrid, PowerGrid, TimeGrid, UniformGrid
from elf_eqx.solvers.heun import Heun

SOLVERS: dict[str, type[Solver]] = {"euler": Euler, "heun": Heun, "dpm2m": DPM2M}
"""Step rules by their setting name (``--solver``)."""
SDE_NOISES: dict[str, type[SdeChurn]] = {"reference": ReferenceChurn, "consistent": ConsistentChurn}
"""The SDE's churn noise by its setting name (``--sde-noise``); the ODE is :class:`NoChurn`."""
TIME_GRIDS: dict[str, type[TimeGrid]] = {
    "logit_normal": LogitNormalGrid,
    "logit_normal_quantile": LogitNormalQuantileGrid,
    "uniform": UniformGrid,
    "power": PowerGrid,
}
"""Time grids by their setting name (``--time-grid``)."""

SolverName = Literal[tuple(SOLVERS)]  # type: ignore[valid-type]
SdeNoiseName = Literal[tuple(SDE_NOISES)]  # type: ignore[valid-type]
TimeGridName = Literal[tuple(TIME_GRIDS)]  # type: ignore[valid-type]
FixedTimeGridName = Literal[tuple(name for name, grid in TIME_GRIDS.items() if grid.fixed)]  # type: ignore[valid-type]
"""The grids that are the same for every key and take no sampler setting (:attr:`TimeGrid.fixed`)."""

__all__ = [
    "Churn", "ConsistentChurn", "DPM2M", "Euler", "FixedTimeGridName", "FlowTerm", "Heun", "LogitNormalGrid",
    "LogitNormalQuantileGrid", "NoChurn", "PowerGrid", "Predict", "ReferenceChurn", "SDE_NOISES", "SOLVERS",
    "SdeChurn", "SdeNoiseName", "Solver", "SolverName", "TIME_GRIDS", "TimeGrid", "TimeGridName", "UniformGrid",
]
