"""Which device orthogonalises which of Muon's matrices when Newton–Schulz is shared over a mesh
(docs/method.md#optimisation). Pure arithmetic on shapes: no arrays, nothing traced.

Every Muon leaf is a batch of ``layers`` matrices of ``rows × cols`` (a stacked block weight has
one per layer, any other matrix one). Newton–Schulz on an ``m × n`` matrix (``m ≤ n``) costs
``steps · (4m²n + 2m³)`` FLOPs (:func:`newton_schulz_flops`). Over ``devices`` devices:

- a leaf is **column-split** when one of its matrices alone is more than a device's balanced share
  (of the FLOPs, or of the elements the results make up) and splitting is cheap: all of its
  matrices split by their long side over every device cost each device at most half of what one
  whole matrix would. Every device then holds ``1/devices`` of each matrix's long side and the
  partitioner sums ``XXᵀ`` over them (the ``2m³`` of ``A·A`` stays on every device). In practice: a
  wide singleton such as the unembedding on many devices, never a stacked block weight;
- every other matrix goes **whole** to one device, greedily, largest first (by the larger of its
  shares of the FLOPs and of the elements; ties: leaf order, then layer), each to the device whose
  larger share after taking it is smallest (ties: the lowest index), so that both the work and the
  result buffers are balanced. Each device writes its results, chunk by chunk, into a buffer of
  ``buffer_size`` elements (the largest device's), and one all-gather shares the buffers.

Each device's work is about ``1/devices`` of the whole while there are several matrices per
device; with more devices than matrices it is bounded below by the largest matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> float:
    """FLOPs of ``steps`` Newton–Schulz iterations on one ``rows × cols`` matrix: per iteration
    ``A = XXᵀ`` (2m²n), ``A·A`` (2m³) and ``B·X`` (2m²n), ``m ≤ n`` after transposing."""
    m, n = sorted((rows, cols))
    return float(steps * (4 * m * m * n + 2 * m**3))


def split_flops(rows: int, cols: int, devices: int, steps: int = 5) -> float:
    """Per-device FLOPs of one matrix column-split over ``devices`` (its long side padded to a
    multiple of them): the products with ``X`` divide, ``A·A`` does not."""
    m, n = sorted((rows, cols))
    share = -(-n // devices)
    return float(steps * (4 * m * m * share + 2 * m**3))


@dataclasses.dataclass(frozen=True)
class MatrixBatch:
    """One Muon leaf as ``layers`` matrices of ``rows × cols``."""

    layers: int
    rows: int
    cols: int

    @property
    def size(self) -> int:
        """Elements of one matrix."""
        return self.rows * self.cols


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Layers of one leaf that one device orthogonalises, and where their results sit in its buffer."""

    leaf: int
    layers: tuple[int, ...]
    offset: int


@dataclasses.dataclass(frozen=True)
class NSPlan:
    """Who orthogonalises what (see the module docstring)."""

    matrices: tuple[MatrixBatch, ...]
    devices: int
    steps: int
    split: tuple[bool, ...]
    """Per leaf: column-split over every device (else its matrices go whole to single devices)."""
    work: tuple[tuple[Chunk, ...], ...]
    """Per device: the chunks it orthogonalises, in buffer order."""
    buffer_size: int
    """Elements of every device's result buffer (the most any device writes)."""

    @staticmethod
    def make(matrices: Sequence[MatrixBatch], devices: int, steps: int = 5) -> "NSPlan":
        """The plan for ``matrices`` over ``devices`` (see the module docstring)."""
        matrices = tuple(matrices)
        flops = [newton_schulz_flops(b.rows, b.cols, steps) for b in matrices]
        total_flops = sum(b.layers * f for b, f in zip(matrices, flops)) or 1.0
        total_size = sum(b.layers * b.size for b in matrices) or 1
        split = tuple(devices > 1 and 2 * b.layers * split_flops(b.rows, b.cols, devices, steps) <= f
                      and (f * devices > total_flops or b.size * devices > total_size)
                      for b, f in zip(matrices, flops))
        share = lambda leaf: (flops[leaf] / total_flops, matrices[leaf].size / total_size)  # noqa: E731
        units = sorted((-max(share(leaf)), leaf, layer)
                       for leaf, b in enumerate(matrices) if not split[leaf] for layer in range(b.layers))
        loads = [(0.0, 0.0)] * devices
        owned: list[list[tuple[int, int]]] = [[] for _ in range(devices)]
        for _, leaf, layer in units:
            f, e = share(leaf)
            d = min(range(devices), key=lambda d: (max(loads[d][0] + f, loads[d][1] + e), d))
            loads[d] = (loads[d][0] + f, loads[d][1] + e)
            owned[d].append((leaf, layer))
        work, sizes = [], []
        for units_of_device in owned:
            chunks, offset = [], 0
            for leaf in sorted({leaf for leaf, _ in units_of_device}):
                layers = tuple(sorted(layer for l, layer in units_of_device if l == leaf))
                chunks.append(Chunk(leaf, layers, offset))
                offset += len(layers) * matrices[leaf].size
            work.append(tuple(chunks))
            sizes.append(offset)
        return NSPlan(matrices, devices, steps, split, tuple(work), max(sizes, default=0))

    @property
    def total_flops(self) -> float:
        """Newton–Schulz FLOPs of the whole step, every matrix once (the replicated work of one device)."""
        return sum(b.layers * newton_schulz_flops(b.rows, b.cols, self.steps) for b in self.matrices)

    @property
    def per_device_flops(self) -> float:
        """Newton–Schulz FLOPs of the busiest device: its whole matrices and its part of the split ones."""
        base = sum(b.layers * split_flops(b.rows, b.cols, self.devices, self.steps)
                   for b, s in zip(self.matrices, self.split) if s)
        return base + max((sum(len(c.layers) * newton_schulz_flops(self.matrices[c.leaf].rows,
                                                                   self.matrices[c.leaf].cols, self.steps)
                               for c in chunks) for chunks in self.work), default=0.0)

    def gathered_elements(self) -> int:
        """Elements each device receives from the all-gather of the whole matrices' results."""
        return self.devices * self.buffer_size if any(self.work) else 0

    def summary(self) -> dict[str, float | int]:
        """Figures a dry run reports: FLOPs (every matrix once; the busiest device's), how the
        matrices are shared, and the elements each device receives from the all-gather."""
        return {"ns_devices": self.devices, "ns_total_flops": self.total_flops,
                "ns_per_device_flops": self.per_device_flops,
                "ns_split_leaves": sum(self.split), "ns_whole_matrices": sum(len(c.layers) for w in self.work for c in w),
                "ns_gathered_elements": self.gathered_elements()}

