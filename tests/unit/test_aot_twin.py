"""The estimate from shallow twins (elf_eqx.aot.twin): the step less its update is extrapolated
linearly in the depth, the update is taken at full depth."""

from __future__ import annotations

import pytest

from elf_eqx.aot.twin import SHALLOW_DEPTHS, extrapolate


def test_a_linear_step_and_a_stepwise_update_are_recovered_exactly():
    def part(k: int) -> dict[str, float]:  # the layers: 3 + 2k FLOPs, 0.5 + 0.25k s
        return {"flops": 3.0 + 2.0 * k, "optimal_seconds": 0.5 + 0.25 * k}

    def update(k: int) -> dict[str, float]:  # shared Newton–Schulz: whole matrices, ceil(k / 4) per device
        return {"flops": 10.0 * -(-k // 4), "optimal_seconds": 0.1 * -(-k // 4)}

    depth = 32
    step = {k: {n: part(k)[n] + update(k)[n] for n in ("flops", "optimal_seconds")} for k in SHALLOW_DEPTHS}
    got = extrapolate(depth, step, {k: update(k) for k in (*SHALLOW_DEPTHS, depth)})
    assert got["flops"] == pytest.approx(part(depth)["flops"] + update(depth)["flops"])
    assert got["optimal_seconds"] == pytest.approx(part(depth)["optimal_seconds"] + update(depth)["optimal_seconds"])


def test_the_twins_are_shallower_than_every_preset():
    from elf_eqx.config import PRESETS

    assert SHALLOW_DEPTHS == (2, 3)  # depth 1 is not representative (module docstring)
    assert all(p["depth"] >= SHALLOW_DEPTHS[0] for p in PRESETS.values())


def test_twins_on_a_tpu_are_compiled_without_windowed_einsums():
    from elf_eqx.aot.targets import parse_target
    from elf_eqx.aot.twin import twin_options

    # XLA's collective matmuls are loops whose body the cost model counts once
    assert twin_options(parse_target("v5p-64")) == {"xla_tpu_enable_windowed_einsum_for_reduce_scatter": False,
                                                    "xla_tpu_enable_windowed_einsum_for_all_gather": False}
    assert twin_options(parse_target("h100")) == {}
