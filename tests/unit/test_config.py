import equinox as eqx
import jax
import pytest

from elf_eqx.config import ELFConfig, preset
from elf_eqx.model import ELF, count_params

from helpers import tiny_model


@pytest.mark.parametrize(
    "name, expected", [("ELF-B", 104_579_940), ("ELF-M", 342_540_036), ("ELF-L", 652_103_332)]
)
def test_published_parameter_counts(name, expected):
    abstract = eqx.filter_eval_shape(lambda k: ELF(preset(name), key=k), jax.random.key(0))
    assert count_params(abstract) == expected


def test_preset_geometry():
    cfg = preset("ELF-M")
    assert (cfg.head_dim, cfg.mlp_hidden, cfg.num_prefix_tokens) == (66, 2816, 12)
    assert preset("ELF-B").mlp_hidden == 2048
    assert preset("ELF-B").dropout_layers() == tuple(3 <= i < 9 for i in range(12))


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="ELF-XXL"):
        preset("ELF-XXL")


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match="hidden_sise"):
        preset("ELF-T", hidden_sise=32)


def test_odd_head_dimension_is_named():
    with pytest.raises(ValueError, match="head dimension 9"):
        ELFConfig(depth=1, hidden_size=36, num_heads=4)


def test_indivisible_heads_is_named():
    with pytest.raises(ValueError, match="num_heads=5"):
        ELFConfig(depth=1, hidden_size=64, num_heads=5)


def test_feature_width_matching_neither_d_nor_2d():
    model = tiny_model()
    z = jax.numpy.zeros((2, 8, 24))
    with pytest.raises(ValueError, match="24 features.*encoder_dim=16"):
        model(z, jax.numpy.zeros(2), jax.numpy.zeros(2))


def test_bad_dropout_is_named():
    with pytest.raises(ValueError, match="attn_dropout"):
        preset("ELF-T", attn_dropout=1.5)
