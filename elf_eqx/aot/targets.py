"""What ``--target`` names: a TPU slice, an NVIDIA card (or several), or this machine.

One spelling across the command lines, case-insensitive:

- a TPU slice by its cloud name: ``v4-32``, ``v5p-64``, ``v5e-256`` (or ``v5litepod-256``),
  ``v6e-8``. v4 and v5p names count TensorCores, two per chip (``v5p-64`` = 32 chips); v5e and v6e
  names count chips. Only the cloud's standard slice sizes are known by name
  (:data:`SLICE_TOPOLOGIES`); any other shape is given by its topology.
- a TPU topology: ``v5p:2x4x4``, ``v5p:1x1x1`` (one chip), ``v4:2x2x4``, ``v5e:4x4``, ``v6e:2x4``
  (chips along each axis; three axes for v4 and v5p, two for v5e and v6e).
- an NVIDIA card with an optional count: ``h100``, ``h100x8``, ``h200``, ``a100`` (the 80 GB
  SXM card), ``a100-40``, ``a100-80``. Up to 8 cards are one host; more must be a multiple of 8
  (8 per host).
- ``local``: the devices JAX sees on this machine (``jax.devices()``), compiled for as they are.

Hosts (from the cloud's tables, checked against HARDWARE.md): v4 and v5p have 4 chips per host
(``v4-32`` = 16 chips on 4 hosts; ``v5p-64`` = 32 chips on 8 hosts). v5e and v6e hosts hold 8 chips;
a slice of up to 8 chips is one host and one VM (``v6e-8``), while a larger slice runs as VMs of
4 chips, two per host (``v5e-256`` = 256 chips, 32 hosts, 64 VMs). :attr:`Target.hosts` counts
machines as the cloud tables do; :attr:`Target.processes` counts the JAX processes a run
starts (one per VM), which is also how the compile-only topology splits the chips.

Hardware facts per device (one device = one chip; v4 and v5p chips are one "megacore" device):

- ``peak_flops``: dense bf16 FLOP/s from the vendor (HARDWARE.md), read from the one table of chip
  peaks that a run's measured MFU uses too (:mod:`elf_eqx.observe.chips`).
- ``hbm_bytes``: for NVIDIA cards the ``device_memory_size`` of XLA's target spec (what the CUDA
  driver reports: 79.1 GiB on an H100 "80GB"); for TPUs the HBM libtpu's compiler lets one
  program use, as its out-of-memory error prints it (v4 30.75 GiB, v5p 95.74 GiB, v5e 15.75 GiB,
  v6e 31.25 GiB, to 0.01 GiB): the vendors' "GB" here are GiB, and the TPU compiler refuses a
  program over this limit (see :mod:`elf_eqx.aot.compile`).
- ``usable_bytes``: what a run may use, ``hbm_bytes`` on TPUs; on GPUs JAX's allocator takes
  ``XLA_PYTHON_CLIENT_MEM_FRACTION`` of it (0.75 by default), so a program fits under that share.
- ``has_cost_model``: whether XLA's cost analysis gives a step-time estimate (``optimal_seconds``):
  TPU only. The deviceless GPU compiler gives no cost analysis at all.

``auto`` settings resolve for the target, not the machine compiling it: :attr:`Target.backend`
(``tpu``/``gpu``/``cpu``, what :func:`elf_eqx.config.resolve_compute_dtype` takes) and
:attr:`Target.platform` (``tpu``/``cuda``/``cpu``, what :func:`elf_eqx.nn.attention.choose_attention`
takes; :attr:`Target.gpu_platform` is ``cuda`` for NVIDIA targets and None otherwise).
"""

from __future__ import annotations

import dataclasses
import os
import math
import re
from importlib import resources
from typing import Any

from elf_eqx.errors import ConfigError
from elf_eqx.observe.chips import chip_for_kind

TARGET_FORMS = ("a TPU slice (v4-32, v5e-256, v5p-64, v6e-8), a TPU topology (v5p:2x4x4, v5p:1x1x1, "
                "v5e:4x4, v6e:2x4, v4:2x2x4), an NVIDIA card with an optional count (h100, h100x8, h200, "
                "a100, a100-40) or local")


@dataclasses.dataclass(frozen=True)
class _TpuGeneration:
    name: str              # how JAX's topology names spell it ("v5p", "v5e", ...)
    device_kind: str       # what JAX reports as device_kind
    axes: int              # topology axes (3: v4, v5p; 2: v5e, v6e)
    cores_per_chip: int    # how many TensorCores a chip counts for in a slice name
    chips_per_host: int
    hbm_bytes: int
    chip_config: str       # libtpu's chip_config_name: "megacore" makes one device per chip

    @property
    def peak_flops(self) -> float:
        return _peak(self.device_kind)


def _peak(device_kind: str) -> float:
    """The dense bf16 peak of a known target's devices, from the one chip table."""
    chip = chip_for_kind(device_kind)
    if chip is None:
        raise AssertionError(f"{device_kind} is missing from elf_eqx.observe.chips.CHIPS")
    return chip.peak_flops


def _gib(value: float) -> int:
    return int(round(value * 2**30))


# HBM: what libtpu's compiler lets one program use ("available HBM" in its out-of-memory error,
# libtpu 0.0.42), a little under the chip's memory (v4 32 GiB, v5p 96 GiB, v5e 16 GiB, v6e 31.5 GiB).
TPU_GENERATIONS = {
    "v4": _TpuGeneration("v4", "TPU v4", 3, 2, 4, _gib(30.75), "megacore"),
    "v5p": _TpuGeneration("v5p", "TPU v5", 3, 2, 4, _gib(95.74), "megacore"),
    "v5e": _TpuGeneration("v5e", "TPU v5 lite", 2, 1, 8, _gib(15.75), "default"),
    "v6e": _TpuGeneration("v6e", "TPU v6 lite", 2, 1, 8, _gib(31.25), "default"),
}
_TPU_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v5": "v5p"}

# The cloud's standard slices: the number in the name -> topology (v4/v5p: TensorCores; v5e/v6e: chips).
_CUBES = {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8", 512: "4x8x8",
          1024: "8x8x8", 2048: "8x8x16", 4096: "8x16x16"}
_PODS_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
SLICE_TOPOLOGIES = {
    "v4": {**_CUBES, 1536: "8x8x12"},
    "v5p": {**_CUBES, 8192: "16x16x16", 12288: "16x16x24"},
    "v5e": _PODS_2D,
    "v6e": _PODS_2D,
}


@dataclasses.dataclass(frozen=True)
class _GpuCard:
    name: str
    spec_file: str         # under elf_eqx/aot/specs/
    device_kind: str       # the spec's device_description_str, which JAX reports as device_kind

    @property
    def peak_flops(self) -> float:
        return _peak(self.device_kind)


GPU_CARDS = {
    "h100": _GpuCard("h100", "h100_sxm.txtpb", "NVIDIA H100 80GB HBM3"),
    "h200": _GpuCard("h200", "h200_sxm.txtpb", "NVIDIA H200 141GB HBM3e"),
    "a100-80": _GpuCard("a100-80", "a100_sxm_80.txtpb", "NVIDIA A100-SXM4-80GB"),
    "a100-40": _GpuCard("a100-40", "a100_sxm_40.txtpb", "NVIDIA A100-SXM4-40GB"),
}
_GPU_ALIASES = {"a100": "a100-80", "a100-80gb": "a100-80", "a100-40gb": "a100-40"}
GPUS_PER_HOST = 8


@dataclasses.dataclass(frozen=True)
class Target:
    """The hardware one ``--target`` names. Build it with :func:`parse_target`."""

    spelling: str                      # the target as given, lower-cased ("v5p-64", "h100x8", ...)
    platform: str                      # "tpu", "cuda", or for local whatever JAX runs on ("cpu", ...)
    device_kind: str                   # what JAX reports as the devices' device_kind
    chips: int                         # chips (TPU) or cards (GPU); one device each
    hosts: int                         # machines, as the cloud's tables count them
    processes: int                     # JAX processes a run starts (TPU VMs; GPU hosts)
    hbm_bytes: int | None              # memory per device (None: unknown)
    peak_flops: float | None           # dense bf16 FLOP/s per device (None: unknown)
    has_cost_model: bool               # XLA's cost analysis gives a step-time estimate
    compile_only: bool                 # devices are compile-only descriptions, not this machine's
    generation: str                    # "v5p", "h100", "a100-40", ..., or "local"
    topology: str | None = None        # what jax.experimental.topologies is given ("v5p:2x4x4", "1x1x8")
    spec_file: str | None = None       # GPU target spec, a file name under elf_eqx/aot/specs/
    chip_config: str | None = None     # libtpu chip_config_name
    chips_per_host_bounds: tuple[int, int, int] | None = None  # chips per process along each axis (TPU)
    wrap: tuple[bool, bool, bool] | None = None                 # torus wrap-around per axis (TPU)
    memory_fraction: float = 1.0       # of hbm_bytes a run may use (GPU: JAX's allocator takes a share)

    @property
    def usable_bytes(self) -> int | None:
        """Memory per device a run may use: the HBM, times JAX's share of it on GPUs."""
        return None if self.hbm_bytes is None else int(self.hbm_bytes * self.memory_fraction)

    @property
    def device_count(self) -> int:
        """Devices a program on this target runs on (one per chip or card)."""
        return self.chips

    @property
    def backend(self) -> str:
        """``tpu``, ``gpu`` or ``cpu``: the backend name ``auto`` compute dtype resolves for."""
        return "gpu" if self.platform in ("cuda", "rocm") else self.platform

    @property
    def gpu_platform(self) -> str | None:
        """``cuda`` for an NVIDIA target (what ``auto`` attention resolves for); None otherwise."""
        return self.platform if self.backend == "gpu" else None

    @property
    def description(self) -> str:
        """One line: what the target is, its chips and hosts."""
        if self.generation == "local":
            return f"this machine: {self.chips} × {self.device_kind} ({self.platform}), {self.processes} process(es)"
        if self.platform == "tpu":
            vms = f", {self.processes} VMs" if self.processes != self.hosts else ""
            return (f"TPU {self.spelling}: topology {self.topology}, {self.chips} chip{'s' * (self.chips > 1)}, "
                    f"{self.hosts} host{'s' * (self.hosts > 1)}{vms}")
        return (f"{self.chips} × {self.device_kind} on {self.hosts} host{'s' * (self.hosts > 1)} "
                f"(topology {self.topology})")

    def spec_text(self) -> str:
        """The GPU target spec's text (GpuTargetConfigProto); a ConfigError for a target without one."""
        if self.spec_file is None:
            raise ConfigError(f"--target {self.spelling}: has no GPU target spec")
        return read_spec(self.spec_file)

    @property
    def compiler_options(self) -> dict[str, Any]:
        """XLA options every compile for this target needs. A deviceless NVIDIA target compiles its
        matmuls as cuBLAS calls: XLA picks Triton GEMM tiles by autotuning, nothing is autotuned
        without a device, and untuned tiling fails on real shapes ("Couldn't find output tile
        sizes"). Memory is that of the cuBLAS program; a run on the card may choose Triton."""
        return {"xla_gpu_enable_triton_gemm": False} if self.spec_file is not None else {}

    def devices(self) -> list[Any]:
        """The target's devices: compile-only descriptions for a TPU or GPU target (the same list on
        every call), ``jax.devices()`` for ``local``. See :mod:`elf_eqx.aot.devices`."""
        from elf_eqx.aot.devices import target_devices

        return target_devices(self)


def read_spec(name: str) -> str:
    """The text of ``elf_eqx/aot/specs/<name>``."""
    return (resources.files("elf_eqx.aot") / "specs" / name).read_text()


def _spec_memory(name: str) -> int:
    match = re.search(r"^\s*device_memory_size:\s*(\d+)", read_spec(name), re.MULTILINE)
    if match is None:
        raise ValueError(f"GPU target spec {name} has no device_memory_size")
    return int(match.group(1))


def _bad(text: str, why: str = "") -> ConfigError:
    return ConfigError(f"--target {text!r}: {why or 'not a target'}; use {TARGET_FORMS}")


def _tpu(text: str, gen: _TpuGeneration, dims: tuple[int, ...]) -> Target:
    chips = math.prod(dims)
    dims3 = (*dims, 1) if len(dims) == 2 else dims
    if chips <= gen.chips_per_host:            # one host: it holds the whole slice
        hosts, processes, bounds = 1, 1, dims3
    else:                                       # multi-host slices run as 4-chip VMs (2x2x1 per process)
        if dims3[0] % 2 or dims3[1] % 2:
            raise _bad(text, f"a {gen.name} topology over several hosts needs even first two axes, got "
                             f"{'x'.join(map(str, dims))}")
        processes, hosts, bounds = chips // 4, chips // gen.chips_per_host, (2, 2, 1)
    if gen.axes == 3:                           # full cubes (multiples of 4 on each axis) are tori
        wrap = (all(d % 4 == 0 for d in dims),) * 3
    else:                                       # a 16-chip side of a v5e/v6e pod wraps around
        wrap = (dims[0] == 16, dims[1] == 16, False)
    return Target(spelling=text, platform="tpu", device_kind=gen.device_kind, chips=chips, hosts=hosts,
                  processes=processes, hbm_bytes=gen.hbm_bytes, peak_flops=gen.peak_flops,
                  has_cost_model=True, compile_only=True, generation=gen.name,
                  topology=f"{gen.name}:{'x'.join(map(str, dims))}", chip_config=gen.chip_config,
                  chips_per_host_bounds=tuple(bounds), wrap=wrap)


def _gpu(text: str, card: _GpuCard, count: int) -> Target:
    if count < 1 or (count > GPUS_PER_HOST and count % GPUS_PER_HOST):
        raise _bad(text, f"{count} cards: give 1 to {GPUS_PER_HOST}, or a multiple of {GPUS_PER_HOST} "
                         f"({GPUS_PER_HOST} per host)")
    hosts = max(1, count // GPUS_PER_HOST)
    per_host = count // hosts
    return Target(spelling=text, platform="cuda", device_kind=card.device_kind, chips=count, hosts=hosts,
                  processes=hosts, hbm_bytes=_spec_memory(card.spec_file), peak_flops=card.peak_flops,
                  has_cost_model=False, compile_only=True, generation=card.name,
                  topology=f"1x{hosts}x{per_host}", spec_file=card.spec_file, memory_fraction=gpu_memory_fraction())


def gpu_memory_fraction() -> float:
    """The share of a GPU's memory JAX's allocator takes: ``XLA_PYTHON_CLIENT_MEM_FRACTION``, 0.75
    unless set (JAX's default; the GPU compiler rematerialises to stay under it)."""
    value = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")
    try:
        fraction = float(value)
    except ValueError:
        raise ConfigError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={value!r} is not a number") from None
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={value!r} must be in (0, 1]")
    return fraction


def local_target() -> Target:
    """``local``: the devices of this machine as JAX sees them (initialises JAX's backends)."""
    import jax

    devices = jax.devices()
    backend = jax.default_backend()
    platform = backend
    if backend == "gpu":
        version = str(getattr(devices[0].client, "platform_version", "")).lower()
        platform = "rocm" if "rocm" in version or "hip" in version else "cuda"
    kind = devices[0].device_kind
    try:
        hbm = (devices[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - CPU devices and some plugins have no memory stats
        hbm = None
    chip = chip_for_kind(kind)
    peak = None if chip is None else chip.peak_flops
    return Target(spelling="local", platform=platform, device_kind=kind, chips=len(devices),
                  hosts=jax.process_count(), processes=jax.process_count(),
                  hbm_bytes=int(hbm) if hbm else None, peak_flops=peak if backend != "cpu" else None,
                  has_cost_model=backend == "tpu", compile_only=False, generation="local")


_TPU_SLICE = re.compile(r"^(v4|v5p|v5e|v5litepod|v6e)-(\d+)$")
_TPU_TOPOLOGY = re.compile(r"^(v4|v5p|v5|v5e|v5lite|v5litepod|v6e)[:_]((?:\d+x)+\d+)$")
_GPU = re.compile(r"^(h100|h200|a100(?:-(?:40|80)(?:gb)?)?)(?:x(\d+))?$")


def parse_target(text: str) -> Target:
    """The :class:`Target` ``text`` names (see the module docstring for the spellings); a one-line
    :class:`~elf_eqx.errors.ConfigError` naming ``--target`` and the accepted forms otherwise."""
    spelling = str(text).strip().lower().replace(" ", "")
    if spelling == "local":
        return local_target()
    if match := _TPU_SLICE.match(spelling):
        gen = TPU_GENERATIONS[_TPU_ALIASES.get(match.group(1), match.group(1))]
        number = int(match.group(2))
        sizes = SLICE_TOPOLOGIES[gen.name]
        if number not in sizes:
            known = ", ".join(f"{match.group(1)}-{n}" for n in sizes)
            raise ConfigError(f"--target {text!r}: not a standard {gen.name} slice ({known}); "
                              f"give another shape as a topology, e.g. {gen.name}:{sizes[max(sizes)]}")
        dims = tuple(int(d) for d in sizes[number].split("x"))
        return _tpu(spelling, gen, dims)
    if match := _TPU_TOPOLOGY.match(spelling):
        gen = TPU_GENERATIONS[_TPU_ALIASES.get(match.group(1), match.group(1))]
        dims = tuple(int(d) for d in match.group(2).split("x"))
        if len(dims) != gen.axes or min(dims) < 1:
            example = "2x4x4" if gen.axes == 3 else "4x4"
            raise _bad(text, f"a {gen.name} topology has {gen.axes} positive axes, e.g. {gen.name}:{example}")
        return _tpu(spelling, gen, dims)
    if match := _GPU.match(spelling):
        card = GPU_CARDS[_GPU_ALIASES.get(match.group(1), match.group(1))]
        return _gpu(spelling, card, int(match.group(2) or 1))
    raise _bad(text)
