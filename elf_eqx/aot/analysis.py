"""What the compiler says about one compiled program on a target, as a plain (JSON-able) dict.

Memory (``compiled.memory_analysis()``, per device, bytes). jax 0.10.2's ``CompiledMemoryStats``
has ``argument_size_in_bytes``, ``output_size_in_bytes``, ``temp_size_in_bytes``,
``alias_size_in_bytes``, ``generated_code_size_in_bytes``, ``peak_memory_in_bytes``, their
``host_*`` counterparts and ``serialized_buffer_assignment_proto``. The total is
``arguments + outputs + temporaries − alias`` (an output that reuses a donated argument's buffer is
counted once), as in HARDWARE.md's reference table; generated code is reported apart (TPU
programs keep it in HBM too; GPU reports 0) and so is XLA's own ``peak_memory_in_bytes``.
Deviceless GPU figures leave out cuDNN's workspace. TPU figures include layout padding (an
array's last two axes are stored in tiles: a ``bf16[25, N]`` takes 32 rows). ``fits`` is
``total ≤ usable`` (the HBM; on GPUs JAX's share of it, :attr:`Target.usable_bytes`); ``headroom``
is ``1 − total / usable``. A TPU program over HBM does not compile
(:mod:`elf_eqx.aot.compile`); its report has ``fits`` False, ``total_bytes`` from the compiler's
message (to its three digits), no breakdown, and the message in ``out_of_memory``.

FLOPs and time: ``compiled.cost_analysis()`` is the *per-device* program's cost (TPU: ``flops``,
``optimal_seconds``, ``bytes accessed``...; the deviceless GPU compiler returns None).
``compiler_flops`` is the per-device figure times the devices, to stand next to the analytic
step FLOPs (``analytic_flops``, the whole step over all devices). ``compiler_estimate_s`` is
``optimal_seconds``, the step time XLA's cost model expects (TPU only): an estimate, not a
measurement. From it, where the inputs are given: ``tokens_per_s`` = tokens per step / estimate,
``mfu`` = analytic FLOPs / (estimate × peak FLOP/s per device × devices), ``epoch_s`` = estimate ×
steps per epoch. XLA counts a ``while`` body (``lax.scan``) once, in FLOPs and in the estimate;
``while_loops`` says how many the program has, so a scanned model's figures can be read as such.

Collectives by kind (:func:`elf_eqx.aot.hlo.collectives`): counts and bytes from the HLO text.

Keys the issue requires in every report (:data:`REQUIRED_KEYS`): ``target``, ``devices``,
``global_batch``, ``memory_gib_per_device``, ``hbm_gib_per_device``, ``fits``, ``analytic_flops``,
``compiler_flops``, ``compiler_estimate_s`` (None where the backend has none), ``compile_s``.
"""

from __future__ import annotations

import re
from typing import Any

from elf_eqx.aot import hlo
from elf_eqx.aot.compile import CompiledProgram
from elf_eqx.aot.targets import Target

GIB = 2**30
REQUIRED_KEYS = ("target", "devices", "global_batch", "memory_gib_per_device", "hbm_gib_per_device", "fits",
                 "analytic_flops", "compiler_flops", "compiler_estimate_s", "compile_s")
MEMORY_FIELDS = {"argument_bytes": "argument_size_in_bytes", "output_bytes": "output_size_in_bytes",
                 "temp_bytes": "temp_size_in_bytes", "alias_bytes": "alias_size_in_bytes",
                 "generated_code_bytes": "generated_code_size_in_bytes", "peak_bytes": "peak_memory_in_bytes",
                 "host_temp_bytes": "host_temp_size_in_bytes"}


def memory(compiled: Any) -> dict[str, int | None]:
    """Per-device memory of a compiled program (bytes), with ``total_bytes`` = args + out + temp − alias."""
    stats = compiled.memory_analysis()
    if isinstance(stats, (list, tuple)):  # some versions answer one entry per device program
        stats = stats[0] if stats else None
    out: dict[str, int | None] = {key: None for key in (*MEMORY_FIELDS, "total_bytes")}
    if stats is None:
        return out
    for key, field in MEMORY_FIELDS.items():
        value = getattr(stats, field, None)
        out[key] = int(value) if value is not None else None
    parts = [out["argument_bytes"], out["output_bytes"], out["temp_bytes"]]
    if all(p is not None for p in parts):
        out["total_bytes"] = sum(parts) - (out["alias_bytes"] or 0)
    return out


def cost(compiled: Any) -> dict[str, float]:
    """The compiler's cost analysis of the per-device program (``{}`` where the backend has none)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without a cost model may raise instead of answering None
        return {}
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return {str(k): float(v) for k, v in (analysis or {}).items() if isinstance(v, (int, float))}


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_OOM_FORMS = (re.compile(r"required for HLO temporaries \(([\d.]+)([KMGTP]?)\) exceeds available HBM"),
              re.compile(r"Used ([\d.]+)([KMGTP]?) of [\d.]+[KMGTP]? hbm"))


def oom_total_bytes(message: str) -> int | None:
    """The memory an out-of-memory message says the program needs (bytes), if it says."""
    for form in _OOM_FORMS:
        if match := form.search(message):
            return int(float(match.group(1)) * _UNITS[match.group(2)])
    return None


def _ratio(numerator: int | float | None, denominator: int | float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def estimate_figures(
    costs: dict[str, float],
    target: Target,
    devices: int,
    *,
    analytic_flops: int | float | None = None,
    tokens_per_step: int | float | None = None,
    steps_per_epoch: int | float | None = None,
    kernel_correction_s: float | None = None,
) -> dict[str, Any]:
    """The figures of a report that come from a cost analysis (per device, as :func:`cost` gives it):
    the compiler's FLOPs (all devices and per device) and step-time estimate, the estimate with
    ``kernel_correction_s``, and the tokens/s, MFU and epoch time it implies; ``notes`` says why an
    estimate is missing."""
    flops_per_device = costs.get("flops")
    raw_estimate = costs.get("optimal_seconds") or None
    notes = []
    if raw_estimate is not None and raw_estimate < 0:
        # libtpu 0.0.42's cost model returns negative times for some programs whose rows it pads
        # unevenly over the devices (seen: a 6-row batch on 2 shards, 512 rows on 256 chips).
        notes.append(f"the TPU cost model returned a negative step time ({raw_estimate:.3g} s): no estimate")
        raw_estimate = None
    estimate = None if raw_estimate is None else raw_estimate + (kernel_correction_s or 0.0)
    peak_total = None if target.peak_flops is None else target.peak_flops * devices
    return {
        "analytic_flops": analytic_flops,
        "compiler_flops": None if flops_per_device is None else flops_per_device * devices,
        "compiler_flops_per_device": flops_per_device,
        "compiler_estimate_s": raw_estimate,
        "kernel_correction_s": kernel_correction_s,
        "estimate_s": estimate,
        "compiler_bytes_accessed_per_device": costs.get("bytes accessed"),
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": _ratio(tokens_per_step, estimate),
        "mfu": _ratio(analytic_flops, None if estimate is None or peak_total is None else estimate * peak_total),
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": None if estimate is None or steps_per_epoch is None else estimate * steps_per_epoch,
        "peak_flops_per_device": target.peak_flops,
        "notes": notes,
    }


def analyze(
    compiled: Any,
    target: Target,
    *,
    devices: int | None = None,
    program: str = "step",
    global_batch: int | None = None,
    analytic_flops: int | float | None = None,
    tokens_per_step: int | float | None = None,
    steps_per_epoch: int | float | None = None,
    param_bytes_per_device: int | None = None,
    opt_state_bytes_per_device: int | None = None,
    compile_s: int | float | None = None,
    cost_program: Any = None,
    cost_figures: dict[str, float] | None = None,
    kernel_correction_s: float | None = None,
    costed: bool = True,
) -> dict[str, Any]:
    """A report of ``compiled`` (a :class:`~elf_eqx.aot.compile.CompiledProgram` or a
    ``jax.stages.Compiled``) on ``target``; see the module docstring for each figure.

    ``devices`` defaults to the program's mesh (or the target's device count); ``compile_s`` to the
    :class:`CompiledProgram`'s. ``cost_program`` (a twin of the program with its layer loops
    unrolled, whose FLOPs and time XLA counts in full) gives the FLOPs and the estimate instead;
    memory is always ``compiled``'s; ``cost_figures`` (a cost analysis put together from several
    programs, :mod:`elf_eqx.aot.twin`) likewise. ``kernel_correction_s`` is time the cost model cannot see (kernels
    without a cost estimate, :mod:`elf_eqx.aot.kernels`): ``estimate_s`` adds it to the compiler's
    estimate, and the tokens/s, MFU and epoch time are derived from that. Figures that need an input
    not given, or a compiler estimate the backend does not make, are None. ``costed=False`` reports
    no compiler FLOPs or time at all: a program whose loops XLA counts once, with no twin.
    """
    lower_s, out_of_memory = None, None
    if isinstance(compiled, CompiledProgram):
        devices = compiled.device_count if devices is None else devices
        compile_s = compiled.compile_s if compile_s is None else compile_s
        lower_s, out_of_memory = compiled.lower_s, compiled.out_of_memory
        compiled = compiled.compiled
    devices = target.device_count if devices is None else devices
    hbm, usable = target.hbm_bytes, target.usable_bytes
    if compiled is None:  # the TPU compiler refused the program: it does not fit
        mem: dict[str, int | None] = {key: None for key in (*MEMORY_FIELDS, "total_bytes")}
        mem["total_bytes"] = oom_total_bytes(out_of_memory or "")
        costs, text = {}, ""
    else:
        mem = memory(compiled)
        costs = cost(compiled)
        text = compiled.as_text() or ""
    if cost_program is not None:
        twin = cost_program.compiled if isinstance(cost_program, CompiledProgram) else cost_program
        costs = cost(twin) if twin is not None else {}
    if cost_figures is not None:
        costs = dict(cost_figures)
    if not costed:
        costs = {}
    total = mem["total_bytes"]
    loops = hlo.while_loops(text)
    estimates = estimate_figures(costs, target, devices, analytic_flops=analytic_flops, tokens_per_step=tokens_per_step,
                                 steps_per_epoch=steps_per_epoch, kernel_correction_s=kernel_correction_s)
    notes = estimates.pop("notes")
    return {
        "program": program,
        "target": target.spelling,
        "target_description": target.description,
        "platform": target.platform,
        "device_kind": target.device_kind,
        "devices": devices,
        "hosts": target.hosts,
        "global_batch": global_batch,
        **mem,
        "memory_gib_per_device": _ratio(total, GIB),
        "hbm_bytes_per_device": hbm,
        "hbm_gib_per_device": _ratio(hbm, GIB),
        "usable_gib_per_device": _ratio(usable, GIB),
        "fits": False if out_of_memory else None if total is None or usable is None else total <= usable,
        "out_of_memory": out_of_memory,
        "headroom": None if total is None or not usable else 1.0 - total / usable,
        "param_bytes_per_device": param_bytes_per_device,
        "opt_state_bytes_per_device": opt_state_bytes_per_device,
        **estimates,
        "collectives": hlo.collectives(text),
        "custom_calls": hlo.custom_calls(text),
        "while_loops": len(loops),
        "cost_from_unrolled_twin": cost_program is not None or cost_figures is not None,
        "estimate_twin": "full" if cost_program is not None else "scaled" if cost_figures is not None else None,
        "loop_trip_counts": [loop["trip_count"] for loop in loops],
        "lower_s": lower_s,
        "compile_s": compile_s,
        "notes": notes,
    }
