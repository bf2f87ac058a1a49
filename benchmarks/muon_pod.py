"""Muon at pod scale, compiled for a slice this machine does not have: a preset's training step with
and without shared Newton–Schulz and ZeRO-1 (compile-only; every time is the compiler's estimate).

    ALLOW_MULTIPLE_LIBTPU_LOAD=1 JAX_PLATFORMS=cpu python benchmarks/muon_pod.py --preset owt_elf_b \\
        --target v5p-64 --epoch-rows 9728000 --cache benchmarks/results/muon_pod/owt_elf_b.json

For each of the four settings it compiles the step (memory, collectives) and, for the estimate, the
scaled twin of ``--dry-run`` (elf_eqx/aot/twin.py): the step unrolled at depths 2 and 3 and the
update alone at 2, 3 and the full depth, each setting its own, as its dry run would.
``--full-twin`` also compiles the step unrolled at full depth (Newton–Schulz shared, no ZeRO-1) to
validate the scaled estimate; ``--no-estimate`` compiles the step alone (memory, collectives).
Every compiled cost analysis is kept in ``--cache`` (JSON), so an interrupted run resumes. Prints one
JSON report per setting (the dry run's keys, plus ``setting``) and a markdown table.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from elf_eqx.aot.analysis import cost, estimate_figures
from elf_eqx.aot.compile import CompiledProgram, target_mesh
from elf_eqx.aot.targets import parse_target
from elf_eqx.aot.train_plan import TrainPlan
from elf_eqx.aot.twin import SHALLOW_DEPTHS, extrapolate, update_program
from elf_eqx.cli.errors import run_parsed
from elf_eqx.training.config import parse_train_config

SETTINGS = {"replicated": (False, False), "shared NS": (True, False), "ZeRO-1": (False, True),
            "shared NS + ZeRO-1": (True, True)}
"""Name → (share_newton_schulz, shard_optimizer_state)."""


@dataclasses.dataclass(frozen=True)
class Args:
    preset: str = "owt_elf_b"
    target: str = "v5p-64"
    epoch_rows: int | None = 9_728_000
    cache: str = "muon_pod_cache.json"
    settings: tuple[str, ...] = tuple(SETTINGS)
    full_twin: bool = False
    estimate: bool = True
    """Compile the twins for the FLOPs and time estimate; --no-estimate: memory and collectives only."""
    flags: tuple[str, ...] = ()
    """Extra training flags (e.g. --remat full)."""
    reports: tuple[str, ...] = ()
    """Print the table of these files of earlier runs' JSON reports (one a line) instead of compiling."""


class Cache:
    """Cost analyses by name, in a JSON file rewritten after each compile."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.entries = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def costs(self, name: str, build) -> dict[str, float]:
        if name not in self.entries:
            start = time.perf_counter()
            program: CompiledProgram = build()
            self.entries[name] = {**cost(program.compiled), "wall_s": time.perf_counter() - start}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.entries, indent=1))
            print(f"compiled {name}: {self.entries[name]['wall_s']:.0f} s", flush=True)
        return {k: v for k, v in self.entries[name].items() if k != "wall_s"}


def plan_for(args: Args, share: bool, zero1: bool) -> TrainPlan:
    flags = ["--preset", args.preset, "--output-dir", "unused", *args.flags,
             "--share-newton-schulz" if share else "--no-share-newton-schulz",
             "--shard-optimizer-state" if zero1 else "--no-shard-optimizer-state"]
    return TrainPlan.of(parse_train_config(flags), parse_target(args.target), epoch_rows=args.epoch_rows)


def _or_dash(value, form: str) -> str:
    return "—" if value is None else format(value, form)


def row(name: str, r: dict) -> str:
    """One markdown row of the table (the collectives the step runs, by kind: count and bytes)."""
    collectives = r["collectives"]
    moved = ", ".join(f"{k} {v['count']}× {v['bytes'] / 2**20:.0f} MiB" for k, v in sorted(collectives.items()))
    ratio = r["compiler_flops"] / r["analytic_total_flops"] if r.get("compiler_flops") else None
    per_chip = (r.get("newton_schulz") or {}).get("ns_per_device_flops", r["analytic_optimizer_flops"])
    estimate = "—" if r.get("estimate_s") is None else f"{r['estimate_s']:.4f} s"
    return (f"| {r['model']} | {name} | {r['memory_gib_per_device']:.1f} GiB | "
            f"{r['opt_state_bytes_per_device'] / 2**30:.2f} GiB | {per_chip:.3g} | "
            f"{_or_dash(r.get('update_flops'), '.3g')} | {_or_dash(ratio, '.3f')} | "
            f"{estimate} | {_or_dash(r.get('mfu'), '.1%')} | {moved} |")


def print_table(reports: list[dict]) -> None:
    print("| preset | setting | memory / chip | optimizer state / chip | Newton–Schulz FLOPs / chip (plan) | "
          "update FLOPs / chip (compiler) | compiler ÷ analytic FLOPs | step estimate | MFU | collectives (count, bytes) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        print(row(r["setting"], r))


def main(args: Args) -> None:
    if args.reports:
        print_table([json.loads(line) for path in args.reports for line in Path(path).read_text().splitlines()
                     if line.startswith("{")])
        return
    cache = Cache(args.cache)
    reports = []
    for name in args.settings:
        share, zero1 = SETTINGS[name]
        plan = plan_for(args, share, zero1)
        depth = plan.elf_config.depth
        report = dataclasses.replace(plan, estimate=False).report()
        if not args.estimate:
            report.update(setting=name, estimate_twin=None, compiler_flops=None, estimate_s=None, mfu=None)
            print(json.dumps(report, sort_keys=True), flush=True)
            reports.append(report)
            continue
        setting = f"share={share}|zero1={zero1}"
        step = {k: cache.costs(f"step{k}|{setting}", lambda k=k: plan.at_depth(k).compile(unrolled=True)[0])
                for k in SHALLOW_DEPTHS}
        update = {k: cache.costs(f"update{k}|{setting}", lambda k=k: update_program(
            plan.at_depth(k).program(), plan.target, plan.cfg.optimizer.ema_decay)) for k in (*SHALLOW_DEPTHS, depth)}
        costs = extrapolate(depth, step, update)
        mesh_only = CompiledProgram(None, plan.target, target_mesh(plan.target, plan.cfg.mesh.config), 0.0, 0.0)
        figures = estimate_figures(costs, plan.target, report["devices"], analytic_flops=report["analytic_flops"],
                                   tokens_per_step=report["tokens_per_step"],
                                   steps_per_epoch=report["steps_per_epoch"],
                                   kernel_correction_s=plan.kernel_correction(mesh_only))
        report.update({k: v for k, v in figures.items() if k != "notes"}, setting=name, estimate_twin="scaled",
                      update_flops=update[depth].get("flops"), update_estimate_s=update[depth].get("optimal_seconds"))
        if args.full_twin and (share, zero1) == (True, False):
            full = cache.costs(f"step{depth}|share={share}|zero1={zero1}", lambda: plan.compile(unrolled=True)[0])
            report["full_twin"] = estimate_figures(full, plan.target, report["devices"],
                                                   analytic_flops=report["analytic_flops"],
                                                   kernel_correction_s=report["kernel_correction_s"])
        print(json.dumps(report, sort_keys=True), flush=True)
        reports.append(report)
    print_table(reports)


if __name__ == "__main__":
    run_parsed(Args, main)
