"""The acceptance test: the reference release's checkpoint and outputs, number for number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elf_eqx.io.flax_msgpack import flatten_params, read_flax_msgpack
from elf_eqx.release.names import (
    config_from_reference,
    load_release_checkpoint,
    model_from_reference_params,
    reference_params_from_model,
)
from elf_eqx.sampler import Sampler

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

RTOL = 1e-5


def assert_rel_close(actual, expected, rtol=RTOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@pytest.fixture(scope="module")
def cases(reference_dir):
    return {k: jnp.asarray(v) for k, v in np.load(reference_dir / "elf_cases.npz").items()}


@pytest.fixture(scope="module")
def model(reference_dir):
    return load_release_checkpoint(reference_dir / "checkpoint_1234")


def test_checkpoint_layout(reference_dir):
    tree = read_flax_msgpack(reference_dir / "checkpoint_1234")
    assert set(tree) == {"params", "ema_params1", "opt_state", "step", "epoch", "dropout_rng"}
    assert int(tree["step"]) == 1234
    cfg = config_from_reference(flatten_params(tree["ema_params1"]))
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.encoder_dim, cfg.vocab_size, cfg.bottleneck_dim) == (
        2, 64, 4, 32, 50, 8,
    )


def test_x_pred_selfcond(model, cases):
    z = jnp.concatenate([cases["z"], cases["x_prev"]], -1)
    assert_rel_close(model(z, cases["t"], cases["omega"]), cases["x_pred_selfcond"])


def test_decode_mode(model, cases):
    z = jnp.concatenate([cases["z"], jnp.zeros_like(cases["z"])], -1)
    h = model.hidden(z, 1.0, cases["omega"], True)
    assert_rel_close(model.denoise_head(h), cases["x_pred_decode_mode"])
    assert_rel_close(model.decode_head(h), cases["decode_logits"])
    assert_rel_close(model.decode(z, cases["omega"]), cases["decode_logits"])


def test_eight_step_ode_run(model, cases):
    sampler = Sampler(num_steps=8, method="ode", omega=3.0, time_grid="uniform")
    np.testing.assert_allclose(np.asarray(sampler.grid(jax.random.key(0))), np.asarray(cases["ode_grid"]), atol=1e-7)
    out = jax.jit(lambda m, z0: sampler(m, jax.random.key(0), z0=z0))(model, cases["ode_z0"])
    assert_rel_close(out.latents, cases["ode_z1"])
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(cases["ode_tokens"]))


def test_params_round_trip(model, reference_dir):
    flat = flatten_params(read_flax_msgpack(reference_dir / "checkpoint_1234")["ema_params1"])
    back = reference_params_from_model(model)
    assert set(back) == set(flat)
    for name in flat:
        np.testing.assert_array_equal(back[name], flat[name])


def test_params_branch_is_loadable_and_differs(reference_dir, model):
    raw = load_release_checkpoint(reference_dir / "checkpoint_1234", which="params")
    assert not np.allclose(np.asarray(raw.unembed.weight), np.asarray(model.unembed.weight))
    with pytest.raises(KeyError, match="ema_params2"):
        load_release_checkpoint(reference_dir / "checkpoint_1234", which="ema_params2")


def test_mismatch_names_every_difference(reference_dir):
    flat = flatten_params(read_flax_msgpack(reference_dir / "checkpoint_1234")["ema_params1"])
    cfg = config_from_reference(flat)
    flat["unembed_bias"] = np.zeros(51, np.float32)
    del flat["blocks_1/mlp/w3/bias"]
    flat["extra/thing"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as err:
        model_from_reference_params(flat, cfg)
    message = str(err.value)
    assert "unembed_bias: checkpoint (51,) vs model (50,)" in message
    assert "missing blocks_1/mlp/w3/bias" in message
    assert "unexpected extra/thing" in message


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "checkpoint_7"
    bad.write_bytes(b"\x93\x01\x02")
    with pytest.raises(ValueError, match="checkpoint_7"):
        read_flax_msgpack(bad)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_flax_msgpack(tmp_path / "nowhere")
