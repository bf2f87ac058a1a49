"""A byte-level BPE tokenizer trained on a corpus, saved as a GPT-2-style Hugging Face tokenizer
(``AutoTokenizer.from_pretrained(folder)`` gives a fast tokenizer with ``<|endoftext|>`` as EOS)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from elf_eqx.errors import ConfigError

EOS_TOKEN = "<|endoftext|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, folder: str | Path) -> Path:
    """Train a byte-level BPE of ``vocab_size`` ids (``<|endoftext|>`` is id 0) on ``texts`` and
    write ``tokenizer.json`` and ``tokenizer_config.json`` into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ConfigError(f"--vocab-size {vocab_size} is too small for a byte-level BPE (256 bytes + merges)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "GPT2TokenizerFast", "eos_token": EOS_TOKEN, "bos_token": EOS_TOKEN,
              "unk_token": EOS_TOKEN, "add_prefix_space": False, "model_max_length": 1024}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder
