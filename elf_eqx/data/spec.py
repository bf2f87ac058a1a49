"""The token ids and lengths a data pipeline run uses (docs/method.md#latents, #objective)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from elf_eqx.errors import DataError

PadMode = Literal["pad", "eos"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceLayout:
    """How a model's rows are laid out: what it was trained on and samples at. The training
    config's data section takes these flags from here; released tasks, loaded models and dry runs
    hold one."""

    max_length: int
    """Sequence length L (condition + target for conditional data)."""
    max_input_length: int | None = None
    """Longest condition (conditional tasks); None or 0 for unconditional data."""
    pad_mode: PadMode = "pad"
    """Pad with the pad id (loss on real target tokens) or the EOS id (loss on every target position)."""

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise DataError(f"max_length must be at least 1, got {self.max_length}")
        if self.max_input_length is not None and not 0 <= self.max_input_length < self.max_length:
            raise DataError(
                f"max_input_length must be in [0, max_length={self.max_length}), got {self.max_input_length}"
            )
        if self.pad_mode not in ("pad", "eos"):
            raise DataError(f"pad_mode must be 'pad' or 'eos', got {self.pad_mode!r}")

    @property
    def conditional(self) -> bool:
        """Whether rows start with a condition (``max_input_length`` > 0)."""
        return bool(self.max_input_length)

    def layout(self) -> "SequenceLayout":
        """The layout alone (a :class:`DataSpec` without its tokenizer ids), unconditional spelt
        one way (``max_input_length`` 0), as loaded models hold it."""
        return SequenceLayout(max_length=self.max_length, max_input_length=self.max_input_length or 0,
                              pad_mode=self.pad_mode)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSpec(SequenceLayout):
    """A :class:`SequenceLayout` with the ids of a tokenizer: how token rows are laid out and padded.

    ``vocab_size`` is ``len(tokenizer)``; every id is below it. ``pad_mode`` "pad" fills rows with
    ``pad_id`` and scores valid target tokens; "eos" fills them with ``eos_id`` and scores every
    target position. Unconditional layouts (``max_input_length`` ``None`` or 0) make conditional
    data an error.
    """

    vocab_size: int
    pad_id: int
    eos_id: int
    packing: bool = False
    """Concatenate documents (EOS-separated) into full rows instead of chunking each one."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pad_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise DataError(f"{name}={getattr(self, name)} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def fill_id(self) -> int:
        """The id written into padding positions: ``pad_id`` or, in eos mode, ``eos_id``."""
        return self.eos_id if self.pad_mode == "eos" else self.pad_id

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for cache keys and run logs)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_tokenizer(
        tokenizer: Any,
        max_length: int,
        *,
        max_input_length: int | None = None,
        pad_mode: PadMode = "pad",
        packing: bool = False,
    ) -> "DataSpec":
        """The spec for a ``transformers`` tokenizer.

        EOS is ``tokenizer.eos_token_id``; tokenizers without one (BERT, MiniLM) use
        ``sep_token_id`` ([SEP]) as EOS. The pad id is ``pad_token_id``, or the EOS id for
        tokenizers without a pad token (GPT-2).
        """
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        eos_id = tokenizer.eos_token_id
        if eos_id is None:
            eos_id = tokenizer.sep_token_id
        if eos_id is None:
            raise DataError(f"tokenizer {name!r} has neither an EOS nor a SEP token to end sequences with")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
        return DataSpec(
            vocab_size=len(tokenizer),
            pad_id=int(pad_id),
            eos_id=int(eos_id),
            max_length=max_length,
            max_input_length=max_input_length,
            pad_mode=pad_mode,
            packing=packing,
        )
