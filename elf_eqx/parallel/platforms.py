"""Which JAX platforms a process uses: the hardware this host has, chosen before JAX starts a backend.

With libtpu installed (the ``tpu-aot`` extra, which ``[dev]`` brings, for compile-only TPU targets)
JAX tries the TPU backend on every host. On a host with no TPU chip libtpu then prints an error
block ("Failed to find host bounds for accelerator type", "unexpected worker hostname …") before
the command's first line, and holds libtpu's process lock while the command runs. Every command
line (:func:`elf_eqx.cli.errors.cli_main`) therefore calls :func:`prefer_present_hardware` first:
on a host without a TPU chip it leaves TPU out of JAX's platforms. A host with TPU chips, a user's
own ``JAX_PLATFORMS``, ``JAX_FORCE_TPU_INIT`` or backends already started are left as they are.
Compile-only TPU targets (``--dry-run --target v5p-64``) load libtpu on their own
(:mod:`elf_eqx.aot.devices`) and keep working.
"""

from __future__ import annotations

import importlib.util
import os

def has_libtpu() -> bool:
    """Whether libtpu can be loaded (the ``tpu-aot`` extra, or ``TPU_LIBRARY_PATH``)."""
    path = os.environ.get("TPU_LIBRARY_PATH")
    return bool(path and os.path.isfile(path)) or importlib.util.find_spec("libtpu") is not None


def has_cuda_plugin() -> bool:
    """Whether JAX's CUDA plugin is installed (the ``gpu-aot`` extra, or ``jax[cuda12]``)."""
    return _plugin_installed("xla_cuda12", "xla_cuda13")


def has_rocm_plugin() -> bool:
    """Whether JAX's ROCm plugin is installed."""
    return _plugin_installed("xla_rocm6", "xla_rocm7")


def _plugin_installed(*names: str) -> bool:
    try:
        return any(importlib.util.find_spec(f"jax_plugins.{name}") is not None for name in names)
    except ModuleNotFoundError:  # no jax_plugins namespace at all
        return False


def tpu_chip_count() -> int:
    """TPU chips on this host's PCI bus (JAX's own check: no cloud metadata server is asked)."""
    from jax._src import hardware_utils

    return hardware_utils.num_available_tpu_chips_and_device_id()[0]


def present_platforms() -> list[str]:
    """The JAX platforms of the accelerators this host has and can use, then ``cpu``, best first.
    TPU chips present: ``["tpu", "cpu"]``; an NVIDIA GPU with the CUDA plugin: ``["cuda", "cpu"]``
    (ROCm likewise); otherwise ``["cpu"]``."""
    from jax._src import hardware_utils

    if tpu_chip_count() > 0:
        return ["tpu", "cpu"]
    if hardware_utils.has_visible_nvidia_gpu() and has_cuda_plugin():
        return ["cuda", "cpu"]
    if hardware_utils.num_available_amd_gpus() > 0 and has_rocm_plugin():
        return ["rocm", "cpu"]
    return ["cpu"]


def prefer_present_hardware() -> str | None:
    """Restrict JAX to :func:`present_platforms` when libtpu is installed on a host with no TPU
    chip (see the module docstring); returns the platforms set (``"cpu"``, ``"cuda,cpu"``) or
    ``None`` when nothing was changed. Must run before anything starts a JAX backend; calling it
    again is harmless."""
    if os.environ.get("JAX_PLATFORMS") or "JAX_FORCE_TPU_INIT" in os.environ or not has_libtpu():
        return None
    import jax
    from jax._src import xla_bridge

    if jax.config.jax_platforms or xla_bridge.backends_are_initialized():
        return None
    platforms = present_platforms()
    if "tpu" in platforms:
        return None
    chosen = ",".join(platforms)
    jax.config.update("jax_platforms", chosen)
    return chosen
