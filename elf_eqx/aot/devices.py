"""A target's devices: compile-only descriptions of a TPU slice or NVIDIA cards, or this machine's.

TPU: libtpu (``pip install -e ".[tpu-aot]"``, i.e. ``jax[tpu]`` at the installed jax version)
describes any slice through ``jax.experimental.topologies.get_topology_desc(topology, "tpu",
chip_config_name=..., chips_per_host_bounds=..., wrap=...)``. ``megacore`` makes one device per
v4/v5p chip, as on the real slice (libtpu's default for v4 is one device per TensorCore);
``chips_per_host_bounds`` splits the chips into processes as the cloud's VMs do (libtpu's default
of 2x2x1 would make ``v6e-8`` two processes, and a single chip impossible).

Only one process may hold libtpu unless ``ALLOW_MULTIPLE_LIBTPU_LOAD=1`` is set before it loads:
with libtpu installed, any JAX process started without ``JAX_PLATFORMS=cpu`` holds it while it runs.
libtpu then fails with "Internal error when accessing libtpu multi-process lockfile"; that is
raised here as a ConfigError telling to set the variable (compile-only use opens no TPU chip).

NVIDIA: the CUDA plugin (``pip install -e ".[gpu-aot]"``, ``jax[cuda12]`` at the installed jax
version) compiles for a card described by a target spec (``elf_eqx/aot/specs/``):
``get_topology_desc(platform="cuda", target_config=<spec text>, topology="1x<hosts>x<cards per
host>")`` (the plugin's topology is ``<partitions>x<hosts per partition>x<devices per host>``).
Without a device nothing is autotuned; memory analysis works, cost analysis returns None.

The devices of a target are built once per process and reused, so meshes made from them at
different times hold the same device objects.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from elf_eqx.errors import ConfigError
from elf_eqx.parallel.platforms import has_cuda_plugin, has_libtpu

if TYPE_CHECKING:  # a target's devices() calls in here: this module only reads its attributes
    from elf_eqx.aot.targets import Target

TPU_EXTRA = 'pip install -e ".[tpu-aot]"'
GPU_EXTRA = 'pip install -e ".[gpu-aot]"'
LIBTPU_SHARE_VAR = "ALLOW_MULTIPLE_LIBTPU_LOAD"

_CACHE: dict[Target, list[Any]] = {}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextlib.contextmanager
def _quiet_libtpu(target: Target) -> Iterator[None]:
    """While libtpu loads: on a host without a TPU it asks the environment for the local accelerator
    and its workers and prints several error lines when it finds neither, neither of which matters
    when only compiling. The variables are set for the load and removed after, so nothing later
    (``jax.distributed``'s cluster detection) mistakes this host for a TPU VM."""
    added = {name: value for name, value in (("TPU_WORKER_HOSTNAMES", "localhost"),
                                             ("TPU_ACCELERATOR_TYPE", f"{target.generation}-8"))
             if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def tpu_devices(target: Target) -> list[Any]:
    """Compile-only devices of a TPU target."""
    if not has_libtpu():
        raise ConfigError(f"--target {target.spelling}: compiling for TPU needs libtpu, which is not "
                          f"installed; {TPU_EXTRA}")
    from jax.experimental import topologies

    try:
        with _quiet_libtpu(target):
            description = topologies.get_topology_desc(
                target.topology, "tpu", chip_config_name=target.chip_config,
                chips_per_host_bounds=target.chips_per_host_bounds, wrap=target.wrap)
    except Exception as error:  # noqa: BLE001 - libtpu raises JaxRuntimeError/RuntimeError; all are reported
        message = _first_line(error)
        if "lockfile" in message:
            raise ConfigError(
                f"--target {target.spelling}: libtpu is held by another process ({message}); compiling for "
                f"a TPU opens no chip, so set {LIBTPU_SHARE_VAR}=1 and rerun (do not delete the lockfile "
                f"while that process runs)") from error
        raise ConfigError(f"--target {target.spelling}: libtpu cannot describe topology {target.topology}: "
                          f"{message}") from error
    return list(description.devices)


def gpu_devices(target: Target) -> list[Any]:
    """Compile-only devices of an NVIDIA target, from its target spec."""
    if not has_cuda_plugin():
        raise ConfigError(f"--target {target.spelling}: compiling for an NVIDIA GPU needs JAX's CUDA plugin, "
                          f"which is not installed; {GPU_EXTRA}")
    from jax.experimental import topologies

    try:
        description = topologies.get_topology_desc(platform="cuda", target_config=target.spec_text(),
                                                   topology=target.topology)
    except Exception as error:  # noqa: BLE001 - the plugin raises JaxRuntimeError/NotImplementedError
        raise ConfigError(f"--target {target.spelling}: the CUDA plugin cannot describe {target.topology} "
                          f"from {target.spec_file}: {_first_line(error)}; reinstall it with "
                          f"{GPU_EXTRA}") from error
    return list(description.devices)


def target_devices(target: Target) -> list[Any]:
    """The devices of ``target`` (see the module docstring); built once per process."""
    if not target.compile_only:
        import jax

        return list(jax.devices())
    if target not in _CACHE:
        devices = tpu_devices(target) if target.platform == "tpu" else gpu_devices(target)
        if len(devices) != target.device_count:
            raise RuntimeError(f"--target {target.spelling}: expected {target.device_count} devices from "
                               f"topology {target.topology}, got {len(devices)}")
        _CACHE[target] = devices
    return _CACHE[target]
