"""The sampler as objects: settings parsed once into a solver, a churn and a grid that carry their
own parameters; the loop counting its evaluations; each family's own settings, flags and records
(docs/method.md#sampling, #baselines)."""

from __future__ import annotations

import ast
import itertools
import json
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elf_eqx
from elf_eqx.distillation.config import RoundsSection
from elf_eqx.evaluate.samples_file import read_samples
from elf_eqx.families import FAMILIES
from elf_eqx.families.ar import ARSettings
from elf_eqx.families.mdlm import MDLMSettings
from elf_eqx.flow import FlowConstants
from elf_eqx.sampler import Sampler, SamplerMethod, SamplerSettings
from elf_eqx.sampling.config import parse_sample_config
from elf_eqx.sampling.records import record_sampler
from elf_eqx.sampling.settings import FAMILY_SETTINGS, SamplerFlags, SamplerOverrides
from elf_eqx.sampling.sweep import SweepOptions
from elf_eqx.solvers import (
    ConsistentChurn,
    Euler,
    Heun,
    LogitNormalGrid,
    LogitNormalQuantileGrid,
    NoChurn,
    PowerGrid,
    ReferenceChurn,
    UniformGrid,
)
from elf_eqx.training.config import parse_train_config

KEY = jax.random.key(0)
FLOW = FlowConstants(p_mean=-1.0, p_std=0.7, noise_scale=1.7, t_eps=0.04)


def test_settings_become_objects_carrying_their_parameters():
    sampler = SamplerSettings(time_grid="power", grid_exponent=3.0, gamma=0.5).sampler(FLOW)
    assert sampler.time_grid == PowerGrid(exponent=3.0) and type(sampler.solver) is Euler
    assert sampler.churn_rule == ReferenceChurn(gamma=0.5, noise_scale=1.7)
    seeded = SamplerSettings(grid_seed=4, sde_noise="consistent", method="sde").sampler(FLOW)
    assert seeded.time_grid == LogitNormalGrid(p_mean=-1.0, p_std=0.7, seed=4) and seeded.grid_seed == 4
    assert seeded.churn_rule == ConsistentChurn(gamma=1.5, noise_scale=1.7)
    quantiles = SamplerSettings(method="ode", time_grid="logit_normal_quantile").sampler(FLOW)
    assert quantiles.time_grid == LogitNormalQuantileGrid(p_mean=-1.0, p_std=0.7) and quantiles.churn_rule == NoChurn()
    assert quantiles.grid_seed is None
    # what the loop reads: the objects and the sampler's own values, no settings names
    assert not hasattr(sampler, "settings")
    with pytest.raises(AttributeError):
        sampler.method  # noqa: B018  (no forwarding of settings by name)


def test_objects_can_be_given_directly_and_sample_as_the_names_do():
    by_name = Sampler(num_steps=4, solver="heun", time_grid="uniform", gamma=0.8, omega=2.0, noise_scale=1.7)
    by_object = Sampler(solver=Heun(), churn_rule=ReferenceChurn(gamma=0.8, noise_scale=1.7), time_grid=UniformGrid(),
                        steps=4, omega=2.0, noise_scale=1.7)
    assert by_name == by_object

    def predict(z, x_prev, t):
        return jnp.tanh(z) * (1.0 - t) + 0.3 * x_prev

    z0 = jax.random.normal(KEY, (2, 3, 4))
    for sampler in (by_name, by_object):
        np.testing.assert_array_equal(np.asarray(sampler.solve(predict, z0, sampler.grid(KEY), KEY)),
                                      np.asarray(by_name.solve(predict, z0, by_name.grid(KEY), KEY)))


def test_churn_stacks_one_gamma_per_interval_the_last_zero():
    churns = ReferenceChurn(gamma=1.5, noise_scale=2.0).for_intervals(4)
    np.testing.assert_array_equal(np.asarray(churns.gamma), [1.5, 1.5, 1.5, 0.0])
    assert churns.noise_scale == 2.0 and NoChurn().for_intervals(4) == NoChurn()
    z = jax.random.normal(KEY, (1, 2, 3))
    last = jax.tree.map(lambda a: a[-1], churns)
    z_b, t_b = last(z, jnp.float32(0.4), jnp.float32(0.9), KEY)  # γ = 0: no step back, no noise
    np.testing.assert_array_equal(np.asarray(z_b), np.asarray(z))
    assert float(t_b) == pytest.approx(0.4)


@pytest.mark.parametrize("solver, method, cfg_weight", list(itertools.product(("euler", "heun", "dpm2m"),
                                                                              ("ode", "sde"), (1.0, 2.0))))
def test_the_loop_counts_its_evaluations(solver, method, cfg_weight):
    per_step = {"euler": 1, "heun": 2, "dpm2m": 1}[solver]
    for steps in (1, 2, 5):
        sampler = Sampler(num_steps=steps, solver=solver, method=method, cfg_weight=cfg_weight, time_grid="uniform")
        expected = ((steps - 1) * per_step + 1) * (2 if cfg_weight != 1.0 else 1)  # the counts records have carried
        assert sampler.nfe() == expected
        assert SamplerSettings(steps=steps, solver=solver, method=method, cfg_weight=cfg_weight).nfe() == expected
        made = []

        def predict(z, x_prev, t):
            jax.debug.callback(lambda: made.append(1))
            return 0.5 * z

        jax.block_until_ready(sampler.solve(predict, jnp.ones((1, 2, 3)), sampler.grid(KEY), KEY))
        assert len(made) * (2 if cfg_weight != 1.0 else 1) == expected  # predictions made, times the CFG passes


def test_each_family_has_its_own_settings_and_takes_them_from_the_flags():
    assert [type(s) for s in (SamplerSettings(), MDLMSettings(), ARSettings())] == list(FAMILY_SETTINGS)
    assert "top_p" not in SamplerSettings.names() and MDLMSettings.names() == ("steps",)
    assert ARSettings.names() == ("top_p",)
    assert set(SamplerFlags.__dataclass_fields__) - {"flag_prefix"} == {n for s in FAMILY_SETTINGS for n in s.names()}
    train = parse_train_config(["--sampling.steps", "7", "--sampling.top-p", "0.5", "--sampling.omega", "2"])
    assert train.sampling.settings_for(FAMILIES["elf"]) == SamplerSettings(steps=7, omega=2.0)
    assert train.sampling.settings_for(FAMILIES["mdlm"]) == MDLMSettings(steps=7)
    assert train.sampling.settings_for(FAMILIES["ar"]) == ARSettings(top_p=0.5)
    flags = parse_sample_config(["x", "--omega", "4", "--top-p", "0.3", "--steps", "5"])
    assert flags.settings(ARSettings()) == ARSettings(top_p=0.3)  # ELF's flags do not apply to AR
    assert flags.settings(MDLMSettings(steps=9)) == MDLMSettings(steps=5)
    assert flags.settings(SamplerSettings(method="ode")) == SamplerSettings(method="ode", steps=5, omega=4.0)
    with pytest.raises(ValueError, match="--top-p must be in"):  # every family's flag is checked, whatever the source
        SamplerOverrides(top_p=0.0)
    with pytest.raises(ValueError, match="--sampling.steps must be a positive integer"):
        type(train.sampling)(steps=0)


def test_records_carry_only_their_familys_settings():
    flow = FlowConstants()
    assert FAMILIES["ar"].sampler_record(ARSettings(top_p=0.9), flow) == {"top_p": 0.9}
    assert FAMILIES["mdlm"].sampler_record(MDLMSettings(steps=4), flow) == {"steps": 4}
    elf = FAMILIES["elf"].sampler_record(SamplerSettings(), flow)
    assert elf == {**SamplerSettings().to_dict(), **flow.to_dict()} and "top_p" not in elf


def test_records_of_every_version_read(tmp_path):
    old_elf = {"method": "ode", "steps": 8, "gamma": 1.5, "omega": 3.0, "seed": 0}  # before the families
    old_ar = {"family": "ar", **SamplerSettings().to_dict(), "top_p": 0.9, "nfe": 24, **FlowConstants().to_dict(),
              "seed": 0, "batch_size": 2, "length": 24}  # a baseline's record carrying ELF's settings
    new_ar = {"family": "ar", "top_p": 0.9, "nfe": 24, "seed": 0}
    new_mdlm = {"family": "mdlm", "steps": 4, "nfe": 4, "seed": 1}
    assert record_sampler(old_elf) == (FAMILIES["elf"], SamplerSettings(method="ode", steps=8))
    assert record_sampler(old_ar) == (FAMILIES["ar"], ARSettings(top_p=0.9)) == record_sampler(new_ar)
    assert record_sampler(new_mdlm) == (FAMILIES["mdlm"], MDLMSettings(steps=4))
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"index": i, "text": "a b", "token_ids": [1], "settings": s}) + "\n"
                            for i, s in enumerate((old_elf, old_ar, new_ar, new_mdlm))))
    assert [record_sampler(r.settings)[1] for r in read_samples(path)] == [
        SamplerSettings(method="ode", steps=8), ARSettings(top_p=0.9), ARSettings(top_p=0.9), MDLMSettings(steps=4)]


def test_sections_take_their_sampler_fields_from_the_settings():
    hints = typing.get_type_hints(SweepOptions)
    assert hints["methods"] == tuple[SamplerMethod, ...] and hints["top_p"] is float
    assert hints["time_grid"] == typing.get_type_hints(SamplerSettings)["time_grid"]
    assert hints["solvers"] == tuple[typing.get_type_hints(SamplerSettings)["solver"], ...]
    extras = typing.get_type_hints(SweepOptions, include_extras=True)
    assert "SDE churn γ (unused by the ODE)" in typing.get_args(extras["gammas"])[1].help
    options = SweepOptions()
    assert (options.gammas, options.omegas, options.solvers, options.time_grid, options.top_p) == (
        (SamplerSettings.gamma,), (SamplerSettings.omega,), (SamplerSettings.solver,), SamplerSettings.time_grid,
        ARSettings.top_p)
    rounds = typing.get_type_hints(RoundsSection)
    assert typing.get_args(rounds["time_grid"]) == ("logit_normal_quantile", "uniform")  # the fixed grids
    assert rounds["omega"] == float | None and rounds["cfg_weight"] == float | None


def _imports(path: Path) -> set[str]:
    """Every elf_eqx module (or package) ``path`` imports from, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name for name in found if name.startswith("elf_eqx")}


def test_sampler_and_its_settings_import_no_circle():
    package = Path(elf_eqx.__file__).parent
    # the sampler needs only the settings base, the solvers and what they build on ...
    assert _imports(package / "sampler.py") == {"elf_eqx.errors", "elf_eqx.flow", "elf_eqx.model",
                                                 "elf_eqx.sampling.settings_base", "elf_eqx.solvers"}
    assert _imports(package / "sampling" / "settings_base.py") == {"elf_eqx.errors"}
    # ... and the solvers nothing of the sampler or the settings
    for module in (package / "solvers").glob("*.py"):
        assert not any(name.startswith(("elf_eqx.sampler", "elf_eqx.sampling")) for name in _imports(module)), module
