"""Device memory as the backend's allocator reports it (``Device.memory_stats()``: GPUs and TPUs;
CPU devices report nothing). Reading it asks the allocator, not the device: no synchronisation.

Fields, GiB (2**30 bytes), the largest over this process's devices:

- ``memory_in_use_gib``: ``bytes_in_use``, the buffers alive now (between steps: the state, the
  frozen encoder, prefetched batches, anything else kept).
- ``memory_peak_gib``: ``peak_bytes_in_use``, the most ever in use since the process started (the
  step's temporaries included; also the sampler's, once a sample file was written).
- ``memory_limit_gib``: ``bytes_limit``, what the allocator may use (on GPUs JAX's preallocated
  share, ``XLA_PYTHON_CLIENT_MEM_FRACTION``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GIB = 2**30
MEMORY_FIELDS = {"memory_in_use_gib": "bytes_in_use", "memory_peak_gib": "peak_bytes_in_use",
           "memory_limit_gib": "bytes_limit"}


def memory_figures(devices: Sequence[Any]) -> dict[str, float]:
    """The fields of the module docstring for ``devices`` (this process's own); ``{}`` where none
    reports its memory."""
    reported = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 - some backends and plugins raise instead of answering None
            stats = None
        if stats:
            reported.append(stats)
    out: dict[str, float] = {}
    for name, key in MEMORY_FIELDS.items():
        values = [stats[key] for stats in reported if key in stats]
        if values:
            out[name] = max(values) / GIB
    return out
