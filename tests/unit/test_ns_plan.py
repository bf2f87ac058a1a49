"""Which device orthogonalises which of Muon's matrices (elf_eqx.training.ns_plan): every matrix
once, the work and the result buffers balanced, wide singletons split, block weights never."""

from __future__ import annotations

import equinox as eqx
import jax
import pytest

from elf_eqx.config import preset
from elf_eqx.model import ELF
from elf_eqx.training.ns_plan import MatrixBatch, NSPlan, newton_schulz_flops
from elf_eqx.training.optim import muon_flops, muon_matrices, newton_schulz_plan


def elf(name: str):
    return eqx.filter_eval_shape(ELF, preset(name, encoder_dim=512, vocab_size=32100), key=jax.random.key(0))


@pytest.mark.parametrize("devices", [1, 4, 8, 32, 256])
def test_every_matrix_is_orthogonalised_exactly_once(devices):
    plan = newton_schulz_plan(elf("ELF-B"), devices)
    assigned = [(c.leaf, layer) for chunks in plan.work for c in chunks for layer in c.layers]
    expected = [(leaf, layer) for leaf, b in enumerate(plan.matrices) if not plan.split[leaf]
                for layer in range(b.layers)]
    assert sorted(assigned) == sorted(expected) and len(set(assigned)) == len(assigned)
    for chunks in plan.work:  # chunks sit one after another in the device's buffer, inside it
        end = 0
        for c in chunks:
            assert c.offset == end
            end += len(c.layers) * plan.matrices[c.leaf].size
        assert end <= plan.buffer_size


def test_total_flops_are_the_analytic_newton_schulz_count():
    model = elf("ELF-M")
    assert newton_schulz_plan(model, 32).total_flops == pytest.approx(muon_flops(model))
    assert newton_schulz_flops(768, 2304) == newton_schulz_flops(2304, 768) == 5 * (4 * 768**2 * 2304 + 2 * 768**3)


@pytest.mark.parametrize("name", ["ELF-B", "ELF-M", "ELF-L"])
def test_each_of_32_data_parallel_chips_does_about_a_32nd(name):
    plan = newton_schulz_plan(elf(name), 32)
    assert plan.total_flops / plan.per_device_flops > 25  # 27.2 (B), 29.1 (M), 29.1 (L)
    size = sum(b.layers * b.size for b in plan.matrices)
    assert plan.gathered_elements() <= 1.15 * size  # the buffers are balanced too: little padding is gathered
    stacked = [leaf for leaf, b in enumerate(plan.matrices) if b.layers > 1]
    assert stacked and not any(plan.split[leaf] for leaf in stacked)  # block weights go whole to single chips


def test_a_wide_singleton_is_split_when_it_would_hold_up_the_others():
    # ELF-B's unembedding (512 × 32100): 1.7e11 FLOPs whole, 10% of the step's Newton–Schulz, on one of 32 chips.
    plan = newton_schulz_plan(elf("ELF-B"), 32)
    names = [b for b in muon_matrices(elf("ELF-B"))]
    split = [b for b, s in zip(names, plan.split) if s]
    assert split == [MatrixBatch(1, 512, 32100)]


def test_one_device_does_everything_and_splits_nothing():
    plan = NSPlan.make([MatrixBatch(3, 8, 16), MatrixBatch(1, 4, 4)], 1)
    assert plan.split == (False, False) and plan.per_device_flops == plan.total_flops
    assert plan.buffer_size == 3 * 128 + 16
