"""Frozen text encoders (T5, BERT) that map token ids to ELF latents, and their loaders."""

from elf_eqx.encoders.bert import BertConfig, BertEncoder
from elf_eqx.encoders.latents import (
    denormalize_latents,
    encoder_attention_mask,
    expand_padding_mask,
    normalize_latents,
)
from elf_eqx.encoders.load import (
    IncompatibleEncoderError,
    TextEncoder,
    check_compatible,
    load_text_encoder,
    load_tokenizer,
)
from elf_eqx.encoders.sources import offline_minilm_dir
from elf_eqx.encoders.t5 import T5Config, T5Encoder

__all__ = [
    "BertConfig",
    "BertEncoder",
    "IncompatibleEncoderError",
    "T5Config",
    "T5Encoder",
    "TextEncoder",
    "check_compatible",
    "denormalize_latents",
    "encoder_attention_mask",
    "expand_padding_mask",
    "load_text_encoder",
    "load_tokenizer",
    "normalize_latents",
    "offline_minilm_dir",
]
