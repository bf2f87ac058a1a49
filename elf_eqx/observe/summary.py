"""One screen per run folder (``python -m elf_eqx.inspect``), and a run's measured figures beside
a dry run's estimates for the same program (README.md, "Seeing inside a run")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from elf_eqx.observe.run_folder import RunFolder
from elf_eqx.observe.sample_files import read_sample_file, sample_header

DASH = "–"


def spread(values: Sequence[float]) -> tuple[float, float, float] | None:
    """``(median, 10th, 90th percentile)`` of ``values`` (``None`` when empty)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    p10, median, p90 = np.percentile(finite, [10, 50, 90])
    return float(median), float(p10), float(p90)


def measured(run: RunFolder, name: str) -> list[float]:
    """The values of record field ``name`` over the run's records, in order."""
    return [r[name] for r in run.records if isinstance(r.get(name), (int, float))]


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s"


def _shown(values: Sequence[float], fmt: Any) -> str:
    found = spread(values)
    if found is None:
        return DASH
    median, low, high = found
    return f"{fmt(median)} median ({fmt(low)}–{fmt(high)}, 10th–90th percentile of {len(values)} records)"


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_differences(config: dict[str, Any]) -> tuple[str, list[tuple[str, Any, Any]]]:
    """``(what the config is compared with, [(flag, this run's value, that value)])``: its
    ``--preset``'s values (or its ``--config`` file's, when that file is still there), else the
    defaults. Flags are named as on the command line."""
    from elf_eqx.cli.args import OTHER_PRESET_PREFIXES, flag_table, preset_file, read_yaml
    from elf_eqx.errors import UserError
    from elf_eqx.training.config import TrainConfig

    against, base = "the defaults", TrainConfig()
    try:
        if config.get("preset"):
            base = TrainConfig.from_dict(read_yaml(preset_file(config["preset"], exclude_prefix=OTHER_PRESET_PREFIXES)))
            against = f"preset {config['preset']}"
        elif config.get("config"):
            base, against = TrainConfig.from_dict(read_yaml(config["config"])), f"config file {config['config']}"
        ours = _flatten(TrainConfig.from_dict(config).to_dict())
    except UserError:  # the preset or file is gone, or the config is from another version: compare as stored
        ours = _flatten(config)
    flags = {f"{section}.{name}" if section else name: flag for flag, (section, name) in flag_table(TrainConfig).items()}
    theirs = _flatten(base.to_dict())
    diffs = [("--" + flags.get(key, key).replace("_", "-"), ours[key], theirs.get(key)) for key in sorted(ours)
             if key not in ("preset", "config") and _norm(ours[key]) != _norm(theirs.get(key))]
    return against, diffs


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _loss_line(run: RunFolder) -> str:
    losses = [(r["step"], r["loss"]) for r in run.records if isinstance(r.get("loss"), (int, float))]
    if not losses:
        return DASH
    best = min(losses, key=lambda x: x[1] if math.isfinite(x[1]) else math.inf)
    return f"last {losses[-1][1]:.4f} (step {losses[-1][0]}), best {best[1]:.4f} (step {best[0]})"


def _checkpoint_line(run: RunFolder) -> list[str]:
    if not run.checkpoints:
        return ["none yet"]
    lines = []
    for c in run.checkpoints:
        where = "" if c.where == "checkpoints" else f" ({c.where})"
        lines.append(f"step {c.step}{where}: " + ("complete" if c.complete else f"INCOMPLETE: {c.problem}"))
    return lines


def _sample_lines(run: RunFolder) -> list[str]:
    if not run.samples:
        return ["none yet"]
    steps = ", ".join(str(step) for step, _ in run.samples)
    step, newest = run.samples[-1]
    texts = read_sample_file(newest)
    first = (texts[0][:70] + "…") if texts and len(texts[0]) > 70 else (texts[0] if texts else "")
    return [f"{len(run.samples)} file(s) in samples/ at steps {steps}",
            f"newest ({sample_header(newest) or step}): [0] {first}"]


def _eval_lines(run: RunFolder) -> list[str]:
    if not run.evals:
        return ["none (python -m elf_eqx.eval --samples FILE writes FILE.eval.json)"]
    lines = []
    for e in sorted(run.evals, key=lambda e: (e.step is None, e.step or 0)):
        figures = ", ".join(f"{k} {v:.4g}" for k, v in e.figures.items())
        lines.append(f"step {e.step if e.step is not None else '?'}: {figures or DASH} ({e.path})")
    return lines


def summarise(run: RunFolder) -> str:
    """The run's screen: what it is, how far it got, what it cost, what it left behind."""
    config, info = run.config or {}, run.info
    starts = info.get("starts") or []
    last_start = starts[-1] if starts else {}
    family = (config.get("objective") or {}).get("family", "elf")
    model = (config.get("model") or {}).get("name", DASH)
    last = run.records[-1] if run.records else {}
    total = last_start.get("total_steps") or (config.get("optimizer") or {}).get("max_steps")
    rows: list[tuple[str, list[str]]] = [("run", [f"{family.upper()} {model}"])]
    if config:
        against, diffs = config_differences(config)
        shown = [f"{flag} {ours!r} (was {theirs!r})" for flag, ours, theirs in diffs]
        rows.append((f"config vs {against}", shown or ["no differences"]))
    else:
        rows.append(("config", ["not recorded yet (no run_info.json or complete checkpoint)"]))
    if run.records:
        steps = f"{last['step']}" + (f" of {total} ({last['step'] / total:.0%})" if total else "")
        rows.append(("steps", [steps]))
        if "tokens" in last:
            rows.append(("tokens", [f"{last['tokens']:.4g}"]))
        if "train_flops" in last:
            rows.append(("training FLOPs", [f"{last['train_flops']:.4g} (analytic, elf_eqx/flops.py)"]))
    else:
        rows.append(("steps", ["no metrics record yet"]))
    rows.append(("loss", [_loss_line(run)]))
    rows.append(("step time", [_shown(measured(run, "step_time_s"), _seconds)]))
    rows.append(("tokens/s", [_shown(measured(run, "tokens_per_s"), lambda v: f"{v:,.0f}")]))
    mfu = measured(run, "mfu")
    peak = last_start.get("peak_flops_per_device")
    rows.append(("MFU", [_shown(mfu, lambda v: f"{v:.1%}") + (f" of {peak:.3g} FLOP/s per device ({last_start.get('peak_from')})"
                                                               if mfu and peak else "")
                         if mfu else "– (no peak known for these devices; give --peak-flops)"]))
    rows.append(("data wait", [_shown(measured(run, "data_wait_share"), lambda v: f"{v:.1%}") + " of the step"
                               if measured(run, "data_wait_share") else DASH]))
    bounds = [r["bound"] for r in run.records if isinstance(r.get("bound"), str)]
    if bounds:
        counts = {b: bounds.count(b) for b in dict.fromkeys(bounds)}
        rows.append(("bound by", [", ".join(f"{b} in {n} of {len(bounds)} records" for b, n in counts.items())]))
    peak_memory = measured(run, "memory_peak_gib")
    limit = measured(run, "memory_limit_gib")
    rows.append(("device memory", [f"peak {max(peak_memory):.2f} GiB" + (f" of {limit[-1]:.2f} GiB" if limit else "")
                                   + f", in use {measured(run, 'memory_in_use_gib')[-1]:.2f} GiB at the last record"
                                   if peak_memory else "– (not reported by this backend)"]))
    compiles = measured(run, "compile_s")
    if compiles:
        rows.append(("compile", [", ".join(_seconds(c) for c in compiles) + " (first step of each start)"]))
    if last_start:
        rows.append(("devices", [f"{last_start.get('devices')} × {last_start.get('device_kind')} "
                                 f"({last_start.get('platform')}), {last_start.get('processes')} process(es); "
                                 f"{len(starts)} start(s), last {last_start.get('time')} from step {last_start.get('from_step')}"]))
    if (info.get("wandb") or {}).get("id"):
        rows.append(("wandb", [f"run id {info['wandb']['id']}"]))
    rows.append(("checkpoints", _checkpoint_line(run)))
    rows.append(("samples", _sample_lines(run)))
    rows.append(("evals", _eval_lines(run)))
    width = max(len(label) for label, _ in rows)
    lines = [f"== {run.path}"]
    for label, values in rows:
        for i, value in enumerate(values):
            lines.append(f"{(label if i == 0 else ''):<{width}}  {value}")
    return "\n".join(lines)


def choose_report(reports: Sequence[dict[str, Any]], global_batch: int | None) -> dict[str, Any]:
    """The dry-run report of the run's global batch, else the first."""
    return next((r for r in reports if r.get("global_batch") == global_batch), reports[0])


def against_dry_run(run: RunFolder, reports: Sequence[dict[str, Any]]) -> str:
    """The run's measured step time, tokens/s, MFU and peak memory beside the dry run's estimate and
    compiled memory of the same program (README.md, "Reading a run against its dry run")."""
    batch = ((run.config or {}).get("optimizer") or {}).get("global_batch")
    report = choose_report(reports, batch)
    start = (run.info.get("starts") or [{}])[-1]
    step_time, tok_s, mfu = (spread(measured(run, k)) for k in ("step_time_s", "tokens_per_s", "mfu"))
    peak_memory = measured(run, "memory_peak_gib")
    estimate = report.get("estimate_s")

    def ratio(a: float | None, b: float | None) -> str:
        return DASH if a is None or not b else f"{a / b:.2f}×"

    rows = [
        ("", f"dry run ({report.get('target')})", "run (measured)", "run / dry run"),
        ("devices", f"{report.get('devices')} × {report.get('device_kind')}",
         f"{start.get('devices', DASH)} × {start.get('device_kind', DASH)}", ""),
        ("global batch", str(report.get("global_batch")), str(batch), ""),
        ("step time", DASH if estimate is None else f"{estimate:.4g} s (compiler estimate)",
         DASH if step_time is None else f"{step_time[0]:.4g} s (median)", ratio(step_time and step_time[0], estimate)),
        ("tokens/s", DASH if report.get("tokens_per_s") is None else f"{report['tokens_per_s']:,.0f}",
         DASH if tok_s is None else f"{tok_s[0]:,.0f}", ratio(tok_s and tok_s[0], report.get("tokens_per_s"))),
        ("MFU", DASH if report.get("mfu") is None else f"{report['mfu']:.1%}",
         DASH if mfu is None else f"{mfu[0]:.1%}", ratio(mfu and mfu[0], report.get("mfu"))),
        ("memory / device", DASH if report.get("memory_gib_per_device") is None
         else f"{report['memory_gib_per_device']:.2f} GiB (compiled: args+out+temp−alias)",
         f"{max(peak_memory):.2f} GiB (allocator peak)" if peak_memory else "– (not reported)",
         ratio(max(peak_memory) if peak_memory else None, report.get("memory_gib_per_device"))),
    ]
    notes = []
    if report.get("global_batch") != batch:
        notes.append(f"the dry run's batch ({report.get('global_batch')}) is not the run's ({batch}): "
                     "compare per token, or dry-run the run's batch")
    if start and report.get("device_kind") and report.get("device_kind") != start.get("device_kind"):
        notes.append("the dry run's devices are not the run's: the figures describe different hardware")
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"== {run.path} against its dry run"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"note: {n}" for n in notes])
