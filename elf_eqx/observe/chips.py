"""The one table of accelerator peaks: dense bf16 FLOP/s per device, keyed by what JAX reports as
``device_kind``. The dry run (:mod:`elf_eqx.aot.targets`) and a running training job's measured
MFU (:mod:`elf_eqx.observe.step_clock`) both read it.

One device is one chip or card: TPU v4 and v5p chips hold two TensorCores run as one "megacore"
device, so their peak is the chip's. Figures are the vendors' (``shared/HARDWARE.md``); B200, the
H100 PCIe card, the H800 and the L40S come from NVIDIA's data sheets (dense, without sparsity).

``device_kind`` strings seen: ``TPU v4``, ``TPU v5 lite`` (v5e), ``TPU v5`` or ``TPU v5p`` (v5p),
``TPU v6 lite`` (v6e), and for NVIDIA cards the CUDA device name (``NVIDIA H100 80GB HBM3``,
``NVIDIA H200``, ``NVIDIA A100-SXM4-80GB``, ``NVIDIA B200``...). A kind matches the row whose
longest pattern it contains (case-insensitive), so ``TPU v5 lite`` is a v5e and not a v5p, and
``NVIDIA H100 PCIe`` is not an SXM card.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator: its name, the ``device_kind`` pieces that identify it, its dense bf16 peak."""

    name: str
    patterns: tuple[str, ...]
    peak_flops: float
    """Dense bf16 FLOP/s of one device."""


CHIPS: tuple[Chip, ...] = (
    Chip("TPU v4", ("TPU v4",), 275e12),
    Chip("TPU v5e", ("TPU v5 lite", "TPU v5e", "TPU v5litepod"), 197e12),
    Chip("TPU v5p", ("TPU v5", "TPU v5p"), 459e12),
    Chip("TPU v6e", ("TPU v6 lite", "TPU v6e", "TPU v6"), 918e12),
    Chip("NVIDIA A100", ("A100",), 312e12),
    Chip("NVIDIA H100", ("H100", "GH200"), 989e12),
    Chip("NVIDIA H100 PCIe", ("H100 PCIe",), 756e12),
    Chip("NVIDIA H800", ("H800",), 989e12),
    Chip("NVIDIA H200", ("H200",), 989e12),
    Chip("NVIDIA B200", ("B200",), 2250e12),
    Chip("NVIDIA L40S", ("L40S",), 362e12),
)


def chip_for_kind(device_kind: str) -> Chip | None:
    """The chip whose longest pattern ``device_kind`` contains (case-insensitive), or ``None``
    (a CPU, or an accelerator not in :data:`CHIPS`)."""
    kind = device_kind.lower()
    best, length = None, 0
    for chip in CHIPS:
        for pattern in chip.patterns:
            if pattern.lower() in kind and len(pattern) > length:
                best, length = chip, len(pattern)
    return best


def chip_named(name: str) -> Chip:
    """The chip of :data:`CHIPS` called ``name`` (a ``KeyError`` names the known ones)."""
    for chip in CHIPS:
        if chip.name == name:
            return chip
    raise KeyError(f"no chip {name!r} in the table; known: {[c.name for c in CHIPS]}")


def peak_flops_for(device_kind: str, platform: str, override: float | None = None) -> tuple[float | None, str]:
    """``(peak dense bf16 FLOP/s per device, where it came from)`` for devices of ``device_kind`` on
    ``platform`` (``cpu``, ``gpu``, ``tpu``): ``override`` (``--peak-flops``) when given, else the
    table's figure; a CPU has none unless given (``(None, "unknown")``)."""
    if override is not None:
        return float(override), "--peak-flops"
    chip = None if platform == "cpu" else chip_for_kind(device_kind)
    return (None, "unknown") if chip is None else (chip.peak_flops, chip.name)
