"""Collectives and loops of a compiled program, read from its HLO text (``compiled.as_text()``).

The text is the optimised, SPMD-partitioned module of *one* device, so every size here is per
device. An instruction reads ``%name = <shape> <opcode>(<operands>), attr=..., ...`` inside a
computation (``%comp (params) -> shape {`` ... ``}``; the entry one starts with ``ENTRY``).

Collectives (:data:`COLLECTIVE_KINDS`): each op is counted once where it appears in the text:

- a synchronous op (``all-gather(...)``) is one op;
- an asynchronous pair (``all-gather-start`` / ``all-gather-done``) is one op, counted at its
  ``-done``; an op wrapped in ``async-start``/``async-done`` is counted inside the wrapped
  computation, where it appears as the synchronous op;
- TPU writes a reduce-scatter as a fusion calling a computation named ``all-reduce-scatter...``
  that holds an ``all-reduce`` and a slice; that all-reduce is counted as a ``reduce-scatter``.

Bytes of one op: the larger of its operands' total size and its result's, i.e. the full
(unsharded) data the collective moves through: the gathered result of an all-gather, the input
of a reduce-scatter, the array of an all-reduce, all-to-all or collective-permute. (Bytes on the
wire depend on the algorithm; an all-reduce of B bytes over N devices sends about 2B(N−1)/N.)

Loops: a ``while`` (what ``lax.scan``/``fori_loop`` become) runs its body many times, but XLA's
cost analysis counts the body once, and so does a count of the text. Each collective is also
reported per step: the text's count times the trip counts of the loops around it, where XLA
printed them (``known_trip_count`` in the while's backend_config; the GPU compiler prints it, the
TPU compiler does not), None where a loop's trip count is unknown.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

COLLECTIVE_KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "ragged-all-to-all",
                    "collective-permute", "collective-broadcast")

_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
_HEADER = re.compile(r"^\s*(ENTRY\s+)?%?([^\s=(]+)\s+\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_CALLEES = re.compile(r"\b(calls|to_apply|body|condition|branch_computations|called_computations)="
                      r"(\{[^}]*\}|%?[^\s,)]+)")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)')


def element_bytes(dtype: str) -> float:
    """Bytes per element of an HLO element type (``bf16`` 2, ``pred`` 1, ``s4`` 0.5, ``token`` 0)."""
    if dtype == "pred":
        return 1.0
    match = re.match(r"[a-z]+?(\d+)", dtype)
    return int(match.group(1)) / 8 if match else 0.0


def shape_bytes(shape: str) -> int:
    """Total bytes of an HLO shape: an array (``f32[64,1024]{1,0}``) or a tuple of them."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape):
        count = 1
        for dim in filter(None, (d.strip().lstrip("<=") for d in dims.split(","))):
            count *= int(dim)
        total += count * element_bytes(dtype)
    return int(total)


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


@dataclasses.dataclass
class Instruction:
    name: str
    shape: str
    opcode: str
    operands: list[str]
    attributes: str
    computation: str


@dataclasses.dataclass
class Module:
    """The parsed text: instructions by computation, the entry computation, the call graph."""

    instructions: list[Instruction]
    entry: str | None
    calls: dict[str, list[tuple[str, int | None, bool]]]  # computation -> [(callee, times per call, is a loop)]

    def shapes(self) -> dict[tuple[str, str], str]:
        return {(i.computation, i.name): i.shape for i in self.instructions}


def parse(text: str) -> Module:
    """The instructions and call graph of an HLO module's text."""
    instructions, calls, entry, computation = [], {}, None, ""
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header and " = " not in line.split("(", 1)[0]:
            computation = header.group(2)
            calls.setdefault(computation, [])
            if header.group(1):
                entry = computation
            continue
        match = _INSTRUCTION.match(line)
        if not match or not computation:
            continue
        name, rest = match.groups()
        if rest.startswith("("):
            end = _balanced(rest, 0)
            shape, rest = rest[:end], rest[end:].lstrip()
        else:
            shape, _, rest = rest.partition(" ")
        opcode_match = re.match(r"([\w\-.]+)\(", rest)
        if not opcode_match:
            continue
        opcode = opcode_match.group(1)
        end = _balanced(rest, opcode_match.end() - 1)
        operands = re.findall(r"%([^\s,()]+)", rest[opcode_match.end() - 1:end])
        attributes = rest[end:]
        instructions.append(Instruction(name, shape, opcode, operands, attributes, computation))
        trip = None
        if opcode == "while":
            found = _TRIP.search(attributes)
            trip = int(found.group(1)) if found else None
        for key, value in _CALLEES.findall(attributes):
            for callee in re.findall(r"%?([^\s,{}%]+)", value):
                loop = key in ("body", "condition")
                calls[computation].append((callee, trip if loop else 1, loop))
    return Module(instructions, entry, calls)


def executions(module: Module) -> dict[str, tuple[int | None, bool]]:
    """For each computation: how many times one run of the program executes it (None: a loop on
    the way has an unknown trip count), and whether it is inside a loop."""
    if module.entry is None:
        return {c: (1, False) for c in module.calls}
    result: dict[str, tuple[int | None, bool]] = {}

    def visit(computation: str, times: int | None, in_loop: bool, depth: int) -> None:
        if depth > 200:
            return
        old_times, old_loop = result.get(computation, (0, False))
        new_times = None if old_times is None or times is None else old_times + times
        result[computation] = (new_times, old_loop or in_loop)
        for callee, multiplier, loop in module.calls.get(computation, []):
            visit(callee, None if times is None or multiplier is None else times * multiplier,
                  in_loop or loop, depth + 1)

    visit(module.entry, 1, False, 0)
    return result


def _kind(instruction: Instruction) -> tuple[str, bool] | None:
    """``(kind, asynchronous)`` of a collective op counted here; None for anything else."""
    op = instruction.opcode
    if op in COLLECTIVE_KINDS:
        if op == "all-reduce" and instruction.computation.startswith("all-reduce-scatter"):
            return "reduce-scatter", False
        return op, False
    if op.endswith("-done") and op[: -len("-done")] in COLLECTIVE_KINDS:
        return op[: -len("-done")], True
    return None


def collectives(text: str) -> dict[str, dict[str, Any]]:
    """Collective ops by kind: ``{kind: {count, bytes, async_count, in_loop_count, count_per_step,
    bytes_per_step}}`` (see the module docstring for what is counted and how bytes are sized)."""
    module = parse(text)
    shapes = module.shapes()
    by_name = {(i.computation, i.name): i for i in module.instructions}
    runs = executions(module)
    out: dict[str, dict[str, Any]] = {}
    for instruction in module.instructions:
        found = _kind(instruction)
        if found is None:
            continue
        kind, asynchronous = found
        operands = instruction.operands
        if asynchronous and operands:   # the -done's operand is its -start; size the start's operands
            start = by_name.get((instruction.computation, operands[0]))
            operands = start.operands if start is not None else []
        operand_bytes = sum(shape_bytes(shapes.get((instruction.computation, o), "")) for o in operands)
        size = max(operand_bytes, shape_bytes(instruction.shape))
        times, in_loop = runs.get(instruction.computation, (1, False))
        entry = out.setdefault(kind, {"count": 0, "bytes": 0, "async_count": 0, "in_loop_count": 0,
                                      "count_per_step": 0, "bytes_per_step": 0})
        entry["count"] += 1
        entry["bytes"] += size
        entry["async_count"] += int(asynchronous)
        entry["in_loop_count"] += int(in_loop)
        if times is None or entry["count_per_step"] is None:
            entry["count_per_step"] = entry["bytes_per_step"] = None
        else:
            entry["count_per_step"] += times
            entry["bytes_per_step"] += times * size
    return out


_CUSTOM_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def custom_calls(text: str) -> dict[str, int]:
    """Custom calls by target (the kernels XLA does not write itself: cuDNN's fused attention
    ``__cudnn$fmha…``, cuBLAS GEMMs ``__cublas$…``, Pallas kernels ``tpu_custom_call``…), each
    counted once where it appears in the text."""
    counts: dict[str, int] = {}
    for instruction in parse(text).instructions:
        if instruction.opcode == "custom-call" and (target := _CUSTOM_TARGET.search(instruction.attributes)):
            counts[target.group(1)] = counts.get(target.group(1), 0) + 1
    return dict(sorted(counts.items()))


def while_loops(text: str) -> list[dict[str, Any]]:
    """The ``while`` instructions: ``[{name, body, trip_count (None: not printed)}]``."""
    module = parse(text)
    loops = []
    for instruction in module.instructions:
        if instruction.opcode == "while":
            body = re.search(r"\bbody=%?([^\s,]+)", instruction.attributes)
            trip = _TRIP.search(instruction.attributes)
            loops.append({"name": instruction.name, "body": body.group(1) if body else None,
                          "trip_count": int(trip.group(1)) if trip else None})
    return loops
