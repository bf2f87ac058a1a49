"""--target spellings (elf_eqx.aot.targets) and the compile-only devices they give (elf_eqx.aot.devices)."""

from __future__ import annotations


import jax.numpy as jnp
import pytest

from elf_eqx.aot import devices as aot_devices
from elf_eqx.aot import parse_target
from elf_eqx.config import resolve_compute_dtype
from elf_eqx.errors import ConfigError
from elf_eqx.nn.attention import choose_attention


needs_libtpu = pytest.mark.skipif(not aot_devices.has_libtpu(),
                                  reason='libtpu not installed (pip install -e ".[tpu-aot]")')

H100, H200, A100_80, A100_40 = 84942979072, 151397597184, 85100068864, 42331013120  # XLA specs' device_memory_size
GIB = 2**30
V4, V5P, V5E, V6E = (round(g * GIB) for g in (30.75, 95.74, 15.75, 31.25))  # libtpu's "available HBM"


@pytest.mark.parametrize(("spelling", "chips", "hosts", "processes", "hbm", "topology", "kind"), [
    ("v4-32", 16, 4, 4, V4, "v4:2x2x4", "TPU v4"),
    ("v4-8", 4, 1, 1, V4, "v4:2x2x1", "TPU v4"),
    ("v5p-64", 32, 8, 8, V5P, "v5p:2x4x4", "TPU v5"),
    ("V5P-64", 32, 8, 8, V5P, "v5p:2x4x4", "TPU v5"),
    ("v5p-8", 4, 1, 1, V5P, "v5p:2x2x1", "TPU v5"),
    ("v5p:2x4x4", 32, 8, 8, V5P, "v5p:2x4x4", "TPU v5"),
    ("v5p:1x1x1", 1, 1, 1, V5P, "v5p:1x1x1", "TPU v5"),
    ("v5e-256", 256, 32, 64, V5E, "v5e:16x16", "TPU v5 lite"),
    ("v5litepod-256", 256, 32, 64, V5E, "v5e:16x16", "TPU v5 lite"),
    ("v5e-8", 8, 1, 1, V5E, "v5e:2x4", "TPU v5 lite"),
    ("v5e:4x4", 16, 2, 4, V5E, "v5e:4x4", "TPU v5 lite"),
    ("v6e-8", 8, 1, 1, V6E, "v6e:2x4", "TPU v6 lite"),
    ("v6e:2x4", 8, 1, 1, V6E, "v6e:2x4", "TPU v6 lite"),
    ("v6e-256", 256, 32, 64, V6E, "v6e:16x16", "TPU v6 lite"),
    ("h100", 1, 1, 1, H100, "1x1x1", "NVIDIA H100 80GB HBM3"),
    ("H100x8", 8, 1, 1, H100, "1x1x8", "NVIDIA H100 80GB HBM3"),
    ("h100x16", 16, 2, 2, H100, "1x2x8", "NVIDIA H100 80GB HBM3"),
    ("h200", 1, 1, 1, H200, "1x1x1", "NVIDIA H200 141GB HBM3e"),
    ("a100", 1, 1, 1, A100_80, "1x1x1", "NVIDIA A100-SXM4-80GB"),
    ("a100-80x4", 4, 1, 1, A100_80, "1x1x4", "NVIDIA A100-SXM4-80GB"),
    ("a100-40", 1, 1, 1, A100_40, "1x1x1", "NVIDIA A100-SXM4-40GB"),
])
def test_every_documented_spelling_parses_to_its_chips_hosts_and_hbm(spelling, chips, hosts, processes, hbm, topology,
                                                                    kind):
    target = parse_target(spelling)
    assert (target.chips, target.device_count, target.hosts, target.processes) == (chips, chips, hosts, processes)
    assert (target.hbm_bytes, target.topology, target.device_kind) == (hbm, topology, kind)
    assert target.spelling == spelling.lower() and target.compile_only
    assert target.peak_flops > 1e14
    tpu = spelling.lower().startswith("v")
    assert target.has_cost_model is tpu
    assert (target.platform, target.backend, target.gpu_platform) == (("tpu", "tpu", None) if tpu else
                                                                      ("cuda", "gpu", "cuda"))


def test_local_is_this_machine_and_auto_settings_resolve_for_the_target():
    local = parse_target("local")
    assert (local.platform, local.backend, local.compile_only, local.has_cost_model) == ("cpu", "cpu", False, False)
    assert local.device_count == len(local.devices()) and local.hbm_bytes is None
    assert resolve_compute_dtype("auto", backend=local.backend) == jnp.float32
    for spelling in ("v5p-64", "h100"):
        assert resolve_compute_dtype("auto", backend=parse_target(spelling).backend) == jnp.bfloat16
    assert choose_attention("auto", parse_target("h100x8").platform, jnp.bfloat16, 64) == "cudnn"
    assert choose_attention("auto", parse_target("v6e-8").platform, jnp.bfloat16, 64) == "pallas"


@pytest.mark.parametrize("spelling", ["", "tpu", "v5p-48", "v5p:2x4", "v5e:2x2x1", "v7x-8", "h100x12", "h100x0",
                                      "b200", "v4-32x", "8xh100", "v5p:0x1x1"])
def test_a_bad_spelling_is_a_one_line_error_naming_target_and_the_forms(spelling):
    with pytest.raises(ConfigError) as caught:
        parse_target(spelling)
    message = str(caught.value)
    assert message.startswith("--target") and "\n" not in message
    assert "v5p-64" in message  # the accepted forms (or the standard slice sizes) are listed


@needs_libtpu
@pytest.mark.parametrize("spelling", ["v4-32", "v5p-64", "v5e-256", "v6e-8", "v5p:1x1x1", "v5p:2x2x1"])
def test_tpu_targets_give_one_compile_only_device_per_chip_split_into_their_processes(spelling):
    target = parse_target(spelling)
    devices = target.devices()
    assert len(devices) == target.chips
    assert {d.platform for d in devices} == {"tpu"} and {d.device_kind for d in devices} == {target.device_kind}
    assert len({d.process_index for d in devices}) == target.processes
    assert target.devices() is devices  # built once: meshes made later hold the same devices


def test_a_missing_extra_is_an_error_with_the_pip_command(monkeypatch):
    monkeypatch.setattr(aot_devices, "_CACHE", {})
    monkeypatch.setattr(aot_devices, "has_libtpu", lambda: False)
    monkeypatch.setattr(aot_devices, "has_cuda_plugin", lambda: False)
    with pytest.raises(ConfigError, match=r'^--target v5p:2x2x2: .*pip install -e "\.\[tpu-aot\]"$'):
        parse_target("v5p:2x2x2").devices()
    with pytest.raises(ConfigError, match=r'^--target h100x2: .*pip install -e "\.\[gpu-aot\]"$'):
        parse_target("h100x2").devices()


def test_libtpu_held_by_another_process_says_how_to_share_it(monkeypatch):
    from jax.experimental import topologies

    def held(*args, **kwargs):
        raise RuntimeError('ABORTED: Internal error when accessing libtpu multi-process lockfile. Run "$ sudo rm '
                           '/tmp/libtpu_lockfile".')

    monkeypatch.setattr(aot_devices, "_CACHE", {})
    monkeypatch.setattr(aot_devices, "has_libtpu", lambda: True)
    monkeypatch.setattr(topologies, "get_topology_desc", held)
    with pytest.raises(ConfigError, match="held by another process.*ALLOW_MULTIPLE_LIBTPU_LOAD=1") as caught:
        parse_target("v5p-8").devices()
    assert "\n" not in str(caught.value)


def test_a_gpu_run_may_use_jax_allocator_share_of_the_card(monkeypatch):
    from elf_eqx.aot.targets import parse_target
    from elf_eqx.errors import ConfigError

    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    h100 = parse_target("h100")
    assert h100.usable_bytes == int(0.75 * h100.hbm_bytes)  # JAX's default preallocation
    assert parse_target("v5p:1x1x1").usable_bytes == parse_target("v5p:1x1x1").hbm_bytes
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    assert parse_target("h100").usable_bytes == int(0.95 * h100.hbm_bytes)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "lots")
    with pytest.raises(ConfigError, match="XLA_PYTHON_CLIENT_MEM_FRACTION"):
        parse_target("h100")
