"""Builders shared by tests/test_metrics.py and tests/test_eval.py (this module has no tests):
a tiny random GPT-2 judge folder with an offline byte-level BPE tokenizer."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "in the beginning god created the heaven and the earth.",
    "and the earth was without form, and void; and darkness was upon the face of the deep.",
    "and god said, let there be light: and there was light.",
    "and god saw the light, that it was good: and god divided the light from the darkness.",
    "and the lord said unto moses, stretch out thine hand.",
] * 4

JUDGE_CONTEXT = 64


def write_tiny_judge(folder: Path, seed: int = 0) -> Path:
    """``folder`` with a BPE tokenizer (400 ids, EOS ``<|endoftext|>`` = 0) and a random 2-layer
    GPT-2 of width 32 and context :data:`JUDGE_CONTEXT`, as ``save_pretrained`` writes it."""
    import torch
    import transformers

    from elf_eqx.evaluate.judge import load_judge_tokenizer
    from judge.bpe_tokenizer import train_bpe_tokenizer

    train_bpe_tokenizer(CORPUS, 400, folder)
    tokenizer = load_judge_tokenizer(folder)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2,
                                     n_positions=JUDGE_CONTEXT, eos_token_id=tokenizer.eos_token_id,
                                     bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder
