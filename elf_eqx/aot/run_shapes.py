"""What compiling a run needs to know of its tokenizer and frozen encoder, read without any data:
the tokenizer's size and the encoder's configuration (never its weights, except a pickled encoder,
whose configuration is only in its weights).

A dry run plans hardware that may sit behind a network this machine cannot reach: when the hub is
out of reach for the release's own tokenizer and encoder (``google-t5/t5-small``), their shapes
are the known ones below, and the dry run says so. Any other unreachable source is an error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax

from elf_eqx.encoders.bert import BertConfig, BertEncoder
from elf_eqx.encoders.load import load_encoder_config, load_text_encoder, load_tokenizer
from elf_eqx.encoders.t5 import T5Config, T5Encoder
from elf_eqx.errors import MissingInputError
from elf_eqx.release.tasks import RELEASE_ENCODER_FALLBACK, RELEASE_TOKENIZER

T5_SMALL_VOCAB = 32100
"""``len(tokenizer)`` of ``google-t5/t5-small`` (its embedding table has 32,128 rows)."""
T5_SMALL_ENCODER = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
"""The T5-small encoder stack (6 layers, width 512, 8 heads of 64, ReLU FFN of 2,048)."""


@dataclasses.dataclass(frozen=True)
class SourceShapes:
    """A run's tokenizer size and frozen encoder configuration (``None``: the family reads tokens)."""

    vocab_size: int
    encoder_config: T5Config | BertConfig | None
    notes: tuple[str, ...] = ()
    """What was assumed rather than read (printed by the dry run)."""

    @property
    def encoder_dim(self) -> int | None:
        """Width D of the encoder's hidden states."""
        c = self.encoder_config
        return None if c is None else (c.d_model if isinstance(c, T5Config) else c.hidden_size)

    def abstract_encoder(self) -> eqx.Module:
        """The frozen text encoder's structure and shapes (``ShapeDtypeStruct`` leaves, float32)."""
        cls = T5Encoder if isinstance(self.encoder_config, T5Config) else BertEncoder
        return eqx.filter_eval_shape(cls, self.encoder_config, key=jax.random.key(0))


def tokenizer_size(source: str) -> tuple[int, str | None]:
    """``(len(tokenizer), note)`` for ``source``; the release's tokenizer out of reach gives its known size."""
    try:
        return len(load_tokenizer(source)), None
    except MissingInputError:
        if source != RELEASE_TOKENIZER:
            raise
        return T5_SMALL_VOCAB, f"tokenizer {source} out of reach: its known size {T5_SMALL_VOCAB} is assumed"


def encoder_configuration(source: str) -> tuple[T5Config | BertConfig, str | None]:
    """``(configuration, note)`` of the encoder at ``source``: its ``config.json``, the shapes of a
    pickled Flax encoder, or (the release's encoder out of reach) T5-small's known configuration."""
    path = Path(source).expanduser()
    if path.suffix in (".pkl", ".pickle") or (path.is_dir() and not (path / "config.json").is_file()):
        return load_text_encoder(source).config, None
    try:
        return load_encoder_config(source), None
    except MissingInputError:
        if source != RELEASE_ENCODER_FALLBACK:
            raise
        return T5_SMALL_ENCODER, f"encoder {source} out of reach: T5-small's known configuration is assumed"


def source_shapes(tokenizer: str, encoder: str | None) -> SourceShapes:
    """The shapes of a run's ``tokenizer`` and (ELF) its frozen ``encoder``."""
    vocab, note = tokenizer_size(tokenizer)
    notes = [note] if note else []
    config = None
    if encoder is not None:
        config, note = encoder_configuration(encoder)
        notes += [note] if note else []
    return SourceShapes(vocab, config, tuple(notes))
