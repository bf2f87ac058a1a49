"""The analytic FLOP counts of elf_eqx.flops (the equal-compute study and the GPU suite's MFU)."""

from __future__ import annotations

import pytest

from elf_eqx.config import preset
from elf_eqx.encoders.bert import BertConfig
from elf_eqx.encoders.t5 import T5Config
from elf_eqx.families import train_step_flops
from elf_eqx.flops import elf_forward_flops, encoder_forward_flops, token_forward_flops
from elf_eqx.objective import FlowObjective


def test_elf_flops_are_six_n_tokens_plus_attention():
    cfg = preset("ELF-B", encoder_dim=512, vocab_size=32100)
    length, n = 1024, 1024 + 12
    block_params = cfg.depth * (4 * 768 * 768 + 3 * 768 * cfg.mlp_hidden)  # matmul weights of the blocks
    fwd = elf_forward_flops(cfg, length)
    attention = cfg.depth * 4 * n * n * 768
    inputs = length * 2 * (2 * 512 * 512 + 512 * 128 + 128 * 768)
    assert fwd["body"] == 2 * block_params * n + attention + inputs
    # Decode-only step (fwd+bwd = 3 passes) with no encoder: the 6·params·tokens rule plus attention.
    flops = train_step_flops("elf", cfg, 4, length, objective=FlowObjective(decoder_prob=1.0))
    assert flops == 4 * 3 * (fwd["body"] + fwd["decode_head"])
    assert flops == pytest.approx(4 * (6 * block_params * n + 3 * attention), rel=0.25)
    # Denoise-only: a no-grad pass plus a forward-backward.
    flops = train_step_flops("elf", cfg, 4, length, objective=FlowObjective(decoder_prob=0.0))
    assert flops == 4 * 4 * (fwd["body"] + fwd["denoise_head"])


def test_baseline_flops_are_three_forward_passes_of_blocks_and_head():
    cfg = preset("ELF-XS", vocab_size=1000)
    length = 64
    block_params = cfg.depth * (4 * 256 * 256 + 3 * 256 * cfg.mlp_hidden)
    fwd = 2 * block_params * length + cfg.depth * 4 * length * length * 256 + 2 * length * 256 * 1000
    assert token_forward_flops(cfg, length) == fwd
    for family in ("mdlm", "ar"):
        assert train_step_flops(family, cfg, 8, length) == 8 * 3 * fwd


def test_encoder_flops_for_t5_and_bert_and_in_the_elf_step():
    t5 = T5Config(vocab_size=8, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2)
    assert encoder_forward_flops(t5, 10) == 2 * 10 * (8 * 16 * 8 + 2 * 2 * 16 * 32 + 4 * 10 * 8)
    bert = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    assert encoder_forward_flops(bert, 10) == 3 * 10 * (8 * 16 * 16 + 4 * 16 * 64 + 4 * 10 * 16)
    cfg = preset("ELF-T", encoder_dim=16, vocab_size=50)
    obj = FlowObjective()
    base = train_step_flops("elf", cfg, 10, 10, objective=obj)
    assert train_step_flops("elf", cfg, 10, 10, objective=obj, encoder_config=bert) == base + 10 * encoder_forward_flops(bert, 10)
    with pytest.raises(ValueError, match="unknown family 'gpt'"):
        train_step_flops("gpt", cfg, 1, 1)
