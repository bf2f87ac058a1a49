"""Reports (:func:`elf_eqx.aot.analysis.analyze`) as a text table: one column per compiled program,
one row per figure. Every figure from XLA's cost model is labelled "compiler estimate"; a figure
the backend or the inputs do not give reads "–"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from elf_eqx.aot.analysis import GIB

DASH = "–"


def _gib(value: Any) -> str:
    """Bytes in GiB, or in MiB/KiB/B where that reads better."""
    if value is None:
        return DASH
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{int(value)} B"


def _num(value: Any) -> str:
    return DASH if value is None else f"{value:.3g}"


def _seconds(value: Any) -> str:
    if value is None:
        return DASH
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s"


def _fits(report: dict[str, Any]) -> str:
    fits, headroom = report.get("fits"), report.get("headroom")
    if fits is None:
        return DASH
    if headroom is None:
        return "yes" if fits else "NO"
    return f"yes ({headroom:.0%} free)" if fits else f"NO (over by {-headroom:.0%} of the usable memory)"


def _collective(kind: str) -> Callable[[dict[str, Any]], str]:
    def cell(report: dict[str, Any]) -> str:
        entry = report.get("collectives", {}).get(kind)
        if not entry:
            return DASH
        text = f"{entry['count']} ops, {_gib(entry['bytes'])}"
        if entry.get("in_loop_count"):
            text += f" ({entry['in_loop_count']} in loops"
            per_step = entry.get("count_per_step")
            text += f", {per_step} per step)" if per_step is not None else ", counted once)"
        return text
    return cell


def _newton_schulz(report: dict[str, Any]) -> str:
    """The busiest device's Newton–Schulz FLOPs: shared over the devices, or all of it."""
    plan = report.get("newton_schulz")
    if plan:
        share = plan["ns_total_flops"] / plan["ns_per_device_flops"]
        return f"{plan['ns_per_device_flops']:.3g} (shared: 1/{share:.1f})"
    total = report.get("analytic_optimizer_flops")
    return DASH if not total else f"{total:.3g} (every device)"


def _rows(reports: Sequence[dict[str, Any]]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("target", lambda r: str(r["target"])),
        ("devices (hosts)", lambda r: f"{r['devices']} ({r.get('hosts', DASH)})"),
        ("device", lambda r: str(r.get("device_kind", DASH))),
        ("global batch", lambda r: DASH if r.get("global_batch") is None else str(r["global_batch"])),
        ("memory / device: arguments", lambda r: _gib(r.get("argument_bytes"))),
        ("  outputs", lambda r: _gib(r.get("output_bytes"))),
        ("  temporaries", lambda r: _gib(r.get("temp_bytes"))),
        ("  aliased (donated)", lambda r: _gib(r.get("alias_bytes"))),
        ("  total (args+out+temp-alias)", lambda r: _gib(r.get("total_bytes"))),
        ("  generated code", lambda r: _gib(r.get("generated_code_bytes"))),
        ("HBM / device", lambda r: _gib(r.get("hbm_bytes_per_device"))),
        ("  usable by a run", lambda r: _gib(None if r.get("usable_gib_per_device") is None
                                                         else r["usable_gib_per_device"] * GIB)),
        ("fits", _fits),
        ("parameters / device", lambda r: _gib(r.get("param_bytes_per_device"))),
        ("optimizer state / device", lambda r: _gib(r.get("opt_state_bytes_per_device"))
                                     + (" (ZeRO-1)" if r.get("shard_optimizer_state") else "")),
        ("EMA / device", lambda r: _gib(r.get("ema_bytes_per_device"))),
        ("frozen encoder / device", lambda r: _gib(r.get("encoder_bytes_per_device"))),
        ("step FLOPs, analytic (model)", lambda r: _num(r.get("analytic_flops"))),
        ("  + optimizer (Newton–Schulz)", lambda r: _num(r.get("analytic_optimizer_flops"))),
        ("    Newton–Schulz / device", _newton_schulz),
        ("step FLOPs, compiler (all devices)", lambda r: _num(r.get("compiler_flops"))),
        ("step time (compiler estimate)", lambda r: _seconds(r.get("compiler_estimate_s"))),
        ("  + kernels XLA cannot cost", lambda r: _seconds(r.get("kernel_correction_s"))),
        ("  = step time (estimate)", lambda r: _seconds(r.get("estimate_s"))),
        ("tokens/s (compiler estimate)", lambda r: _num(r.get("tokens_per_s"))),
        ("MFU (compiler estimate)", lambda r: DASH if r.get("mfu") is None else f"{r['mfu']:.1%}"),
        ("time per epoch (compiler estimate)", lambda r: _seconds(r.get("epoch_s"))),
    ]
    kinds = sorted({kind for r in reports for kind in r.get("collectives", {})})
    rows += [(f"collective: {kind}", _collective(kind)) for kind in kinds] or [("collectives", lambda r: "none")]
    rows.append(("kernels (custom calls)", lambda r: ", ".join(f"{k} ×{n}" for k, n in r.get("custom_calls", {}).items())
                 or "none"))
    rows += [
        ("while loops (body counted once)", lambda r: str(r.get("while_loops", DASH))),
        ("compile time", lambda r: _seconds(r.get("compile_s"))),
    ]
    return rows


def render_reports(reports: Sequence[dict[str, Any]]) -> str:
    """``reports`` as a text table, one column per program (headed by program and target)."""
    rows = _rows(reports)
    header = ["", *(f"{r.get('program', 'step')} @ {r['target']}" for r in reports)]
    body = [[label, *(cell(r) for r in reports)] for label, cell in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = []
    if any(r.get("compiler_estimate_s") is None for r in reports):
        notes.append("compiler estimate –: the backend has no cost model (only TPU's gives a step time)")
    for r in reports:
        if r.get("out_of_memory"):
            notes.append(f"{r.get('program', 'step')} @ {r['target']}: the compiler refused it: {r['out_of_memory']}")
    if any(r.get("kernel_correction_s") for r in reports):
        notes.append("kernels XLA cannot cost: the Pallas attention backward, at 3.5× its forward kernel's estimate "
                     "(elf_eqx/aot/kernels.py)")
    if any(r.get("estimate_twin") == "full" for r in reports):
        notes.append("compiler FLOPs and estimates from a twin of the program with its layer loops unrolled "
                     "(XLA counts a loop body once); memory from the program itself")
    if any(r.get("estimate_twin") == "scaled" for r in reports):
        notes.append("compiler FLOPs and estimates from twins of the program unrolled at depths 2 and 3, scaled to "
                     "its depth, plus its optimizer update at full depth (elf_eqx/aot/twin.py; XLA counts a loop body "
                     "once); memory from the program itself")
    if any(r.get("while_loops") and not r.get("cost_from_unrolled_twin") for r in reports):
        notes.append("XLA counts each while/scan body once in compiler FLOPs and estimates")
    return "\n".join(lines + [f"note: {n}" for n in notes])
