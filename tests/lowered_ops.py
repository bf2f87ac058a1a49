"""The ops of a lowered JAX program (StableHLO text with debug locations), each with the precision
scope it ran under, for checking a program against a :class:`~elf_eqx.precision.PrecisionPolicy`."""

from __future__ import annotations

import dataclasses
import re

from elf_eqx.precision import SCOPE_PREFIX

_LOC_DEF = re.compile(r"^(#loc\d+) = loc\((.*)\)\s*$")
_OP = re.compile(r"^\s*(?:%[\w#:, %]+ = )?\"?stablehlo\.([a-z_]+)\"?")
_LOC_REF = re.compile(r"loc\((#loc\d+)\)\s*$")
_INLINE_LOC = re.compile(r'loc\((".*)\)\s*$')
_ELEMENT = re.compile(r"tensor<(?:[\d?]+x)*([a-z]+\d*)>")
_FLOAT_TYPES = {"f16", "bf16", "f32", "f64"}
DOTS = {"dot_general", "dot", "convolution"}
REDUCTIONS = {"reduce", "reduce_window", "all_reduce", "reduce_scatter"}
ARITHMETIC = {
    "add", "subtract", "multiply", "divide", "exponential", "exponential_minus_one", "log", "log_plus_one",
    "tanh", "logistic", "rsqrt", "sqrt", "power", "maximum", "minimum", "sine", "cosine", "abs", "negate",
}
_REGION_OPS = {"while", "case", "if"}  # their regions open on the lines after the op's
_DTYPE_NAMES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64"}


@dataclasses.dataclass(frozen=True)
class Op:
    """One StableHLO op: its name (``dot_general``), the element types of its operands and results
    (``bfloat16``, ``float32``, ``int32``...), its location's name (JAX's name stack, e.g.
    ``jit(step)/transpose(jvp())/precision:projections/dot_general``) and its source line."""

    name: str
    operands: tuple[str, ...]
    results: tuple[str, ...]
    where: str
    line: str

    @property
    def scope(self) -> str | None:
        """The innermost precision scope (a :class:`PrecisionPolicy` row name), or ``None``."""
        names = re.findall(re.escape(SCOPE_PREFIX) + r"([a-z_]+)", self.where)
        return names[-1] if names else None

    @property
    def backward(self) -> bool:
        """Whether the op belongs to a backward pass (JAX's ``transpose`` of a forward)."""
        return "transpose(" in self.where

    @property
    def floats(self) -> tuple[str, ...]:
        """The floating-point element types among its operands and results."""
        return tuple(t for t in self.operands + self.results if t in _DTYPE_NAMES.values())


def _element_types(signature: str) -> tuple[str, ...]:
    return tuple(_DTYPE_NAMES.get(t, t) for t in _ELEMENT.findall(signature))


def _split_signature(line: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Operand and result element types from an op line's trailing ``: (a, b) -> c`` or ``: t``."""
    body = _LOC_REF.sub("", _INLINE_LOC.sub("", line)).rstrip()
    colon = body.rfind(" : ")
    if colon < 0:
        return (), ()
    signature = body[colon + 3:]
    if "->" in signature:
        left, right = signature.split("->", 1)
        return _element_types(left), _element_types(right)
    types = _element_types(signature)
    return types, types


def _resolve(table: dict[str, str], ref: str, depth: int = 0) -> str:
    """The name in a location (following ``callsite(#a at #b)`` and aliases to the first name)."""
    body = table.get(ref, "")
    quoted = re.match(r'"([^"]*)"', body)
    if quoted:
        return quoted.group(1)
    inner = re.search(r"#loc\d+", body)
    return _resolve(table, inner.group(0), depth + 1) if inner and depth < 50 else ""


def _braces(line: str) -> int:
    """Net ``{`` minus ``}`` of a line, outside quoted strings."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', "", line)
    return unquoted.count("{") - unquoted.count("}")


def _where(table: dict[str, str], line: str) -> str:
    ref, inline = _LOC_REF.search(line), _INLINE_LOC.search(line)
    if ref:
        return _resolve(table, ref.group(1))
    if inline:
        quoted = re.match(r'"([^"]*)"', inline.group(1))
        return quoted.group(1) if quoted else ""
    return ""


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def lowered_ops(text: str) -> list[Op]:
    """Every StableHLO op of ``text`` (``jax.jit(f).lower(...).as_text(debug_info=True)``), with
    its full name stack: ops inside a loop body or a called function carry names relative to it,
    so each is prefixed with the names of the loops around it and of the call that reached it
    (a function called from several places yields its ops once per call)."""
    table = {}
    for line in text.splitlines():
        found = _LOC_DEF.match(line)
        if found:
            table[found.group(1)] = found.group(2)
    # Per function: its ops as (index of enclosing container op or -1, Op with a relative name, callee).
    functions: dict[str, list[list]] = {}
    current, depth, open_containers = None, 0, []
    for line in text.splitlines():
        start = re.match(r"\s*func\.func (?:public |private )?@([\w.$-]+)\(", line)
        if start:
            current, depth, open_containers = start.group(1), 0, []
            functions[current] = []
            depth += _braces(line)
            continue
        if current is None or line.lstrip().startswith("#"):
            continue
        change = _braces(line)
        found = _OP.match(line)
        call = re.search(r"\bcall @([\w.$-]+)\(", line)
        parent = open_containers[-1][0] if open_containers else -1
        if found or call:
            name = found.group(1) if found else "call"
            operands, results = _split_signature(line)
            entry = [parent, Op(name, operands, results, _where(table, line), line.strip()),
                     call.group(1) if call else None]
            functions[current].append(entry)
            if change > 0 or name in _REGION_OPS:  # an op with regions: closed when depth returns
                open_containers.append((len(functions[current]) - 1, depth))
        elif change < 0 and open_containers and depth + change <= open_containers[-1][1] and line.lstrip().startswith("}"):
            index, _ = open_containers.pop()
            op = functions[current][index][1]
            functions[current][index][1] = dataclasses.replace(op, where=_where(table, line) or op.where)
        depth += change

    def expand(function: str, prefix: str, seen: tuple[str, ...]) -> list[Op]:
        entries = functions.get(function, [])
        full: list[str] = []
        ops = []
        for parent, op, callee in entries:
            base = full[parent] if parent >= 0 else prefix
            where = _join(base, op.where)
            full.append(where)
            ops.append(dataclasses.replace(op, where=where))
            if callee and callee not in seen:
                ops.extend(expand(callee, where, seen + (callee,)))
        return ops

    return expand("main", "", ("main",))
