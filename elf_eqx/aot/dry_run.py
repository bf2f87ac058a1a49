"""The dry run of ``python -m elf_eqx.train`` and ``python -m elf_eqx.sample`` (``--dry-run --target T``):
the program the command would run, compiled for hardware this machine need not have, and reported
(:mod:`elf_eqx.aot.train_plan`, :mod:`elf_eqx.aot.sample_plan`). Nothing is read from the data and
nothing is written to the output directory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from elf_eqx.aot.analysis import analyze
from elf_eqx.aot.compile import target_mesh
from elf_eqx.aot.render import render_reports
from elf_eqx.aot.targets import parse_target
from elf_eqx.aot.sample_plan import SamplePlan, source_architecture
from elf_eqx.aot.train_plan import TrainPlan
from elf_eqx.errors import ConfigError
from elf_eqx.parallel.mesh import batch_split
from elf_eqx.sampling.config import SampleConfig
from elf_eqx.training.config import TrainConfig


def largest_fitting(fits: Callable[[int], bool], start: int, step: int) -> int | None:
    """The largest multiple of ``step`` for which ``fits`` holds (assumed monotone), searched from
    ``start`` by doubling or halving, then bisecting; ``None`` when not even ``step`` fits."""
    n = max(1, start // step)
    if fits(n * step):
        low, high = n, None
        while high is None:
            low, high = (low * 2, None) if fits(low * 2 * step) else (low, low * 2)
    else:
        low, high = None, n
        while low is None:
            if high == 1:
                return None
            low, high = (high // 2, high) if fits(high // 2 * step) else (None, high // 2)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle * step) else (low, middle)
    return low * step


@dataclasses.dataclass(frozen=True)
class DryRunResult:
    """The reports of a dry run (one per compiled program) and how to show them."""

    reports: list[dict[str, Any]]

    def text(self) -> str:
        return render_reports(self.reports) + "".join(
            f"\nnote: {note}" for note in dict.fromkeys(n for r in self.reports for n in r.get("notes", ())))

    def json_lines(self) -> str:
        return "\n".join(json.dumps(r, sort_keys=True) for r in self.reports)


def with_largest_batch(plan: Any, reports: list[dict[str, Any]], start: int, step: int, what: str) -> None:
    """Append to ``reports`` the report of ``plan`` at the largest batch (a multiple of ``step``)
    that fits its target (or mark ``reports[0]`` as that one); ``what`` names the batch flag."""
    best = largest_fitting(lambda batch: bool(analyze(plan.with_batch(batch).compile()[0], plan.target)["fits"]),
                           start, step)
    if best is None:
        raise ConfigError(f"--max-batch: not even {what} {step} fits {plan.target.spelling}")
    if best == start:
        reports[0]["program"] += " (largest batch)"
    else:
        report = plan.with_batch(best).report()
        reports.append({**report, "program": report["program"] + " (largest batch)"})


def dry_run_train(cfg: TrainConfig, target_spelling: str, *, max_batch: bool = False,
                  epoch_rows: int | None = None, estimate: bool = True, full_twin: bool = False) -> DryRunResult:
    """Compile ``cfg``'s training step for the target and report it; with ``max_batch`` also the
    largest global batch that fits (a multiple of the data×fsdp devices times --grad-accum)."""
    plan = TrainPlan.of(cfg, parse_target(target_spelling), epoch_rows=epoch_rows, estimate=estimate,
                        full_twin=full_twin)
    reports = [plan.report()]
    if max_batch:
        step = batch_split(target_mesh(plan.target, cfg.mesh.config)) * cfg.optimizer.grad_accum
        with_largest_batch(plan, reports, cfg.optimizer.global_batch, step, "--global-batch")
    return DryRunResult(reports)


def dry_run_sample(cfg: SampleConfig, target_spelling: str, *, max_batch: bool = False) -> DryRunResult:
    """Compile the sampler ``cfg`` would run for the target and report it; with ``max_batch`` also
    the largest --batch-size that fits (a multiple of the data×fsdp devices)."""
    target = parse_target(target_spelling)
    source = source_architecture(cfg.source, step=cfg.load.step, task=cfg.load.task, revision=cfg.load.revision)
    length = source.data_spec.max_length if source.data_spec.conditional or cfg.draw.length is None else cfg.draw.length
    plan = SamplePlan(source, target, cfg.settings(source.sampling), cfg.draw.batch_size, length, cfg.mesh.config,
                      cfg.load.compute_dtype)
    reports = [plan.report()]
    if max_batch:
        with_largest_batch(plan, reports, cfg.draw.batch_size, batch_split(target_mesh(target, cfg.mesh.config)),
                           "--batch-size")
    return DryRunResult(reports)
