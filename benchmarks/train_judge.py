"""Train a small GPT-2 judge on a corpus, so Gen. PPL needs no download.

    python benchmarks/train_judge.py --train ../shared/data/kjv/train.jsonl --valid ../shared/data/kjv/valid.jsonl \
        --roundtrip-tokenizer offline-minilm --output ../runs/kjv_judge

Trains a byte-level BPE tokenizer and a GPT-2-architecture causal LM on ``--train`` and writes a
Hugging Face GPT-2 folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) that
``elf_eqx.evaluate.judge.load_judge``, ``python -m elf_eqx.eval --judge`` and ``transformers`` read, with
``judge_training.json`` recording the corpus, options and validation perplexities. The folder is
written under a unique temporary name beside ``--output`` and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import tyro
from tqdm.auto import tqdm

from elf_eqx.cli.errors import CLIError, cli_main, flag_errors
from elf_eqx.data import load_source
from elf_eqx.errors import ConfigError, DataError
from elf_eqx.io.atomic import refuse_existing, staged_folder
from elf_eqx.evaluate import evaluate_unconditional
from elf_eqx.evaluate.judge import load_judge, load_judge_tokenizer
from judge.bpe_tokenizer import train_bpe_tokenizer
from judge.export import save_judge
from elf_eqx.evaluate.judge import GPT2, GPT2Config
from judge.lm_training import block_perplexity, pack_blocks, train_lm
from judge.text_normalisation import normalise_texts


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Train a GPT-2-architecture judge (and its byte-level BPE tokenizer) on a text corpus."""

    train: str
    """Training text: .jsonl with "text", .txt (blank-line separated documents), a folder of them, a save_to_disk folder, a hub id, or 'embedded'."""
    output: str
    """Folder to write the judge into (must not exist unless --overwrite)."""
    valid: str | None = None
    """Held-out text, same forms as --train: source of the reported validation perplexities."""
    split: str = "train"
    """Split of a hub or DatasetDict --train source (--valid uses 'validation')."""
    lowercase: bool = False
    """Lowercase every text (for judging samples of an uncased model)."""
    roundtrip_tokenizer: str | None = None
    """Encode and decode every text with this tokenizer first (a hub id, a folder, or offline-minilm), so the judge sees text normalised exactly like the decoded ELF samples it will score."""
    vocab_size: int = 8192
    """BPE vocabulary size (ids, <|endoftext|> included)."""
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 256
    """Width."""
    n_head: int = 4
    """Attention heads."""
    n_positions: int = 256
    """Longest text the judge scores (tokens); longer samples are truncated when judged."""
    block_size: int = 128
    """Training sequence length in tokens (≤ n_positions); documents are packed into blocks, separated by <|endoftext|>."""
    batch_size: int = 32
    """Blocks per optimizer step."""
    steps: int = 2000
    """Optimizer steps."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, linear warm-up then cosine to lr/10)."""
    warmup: int = 100
    """Warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    eval_every: int = 200
    """Validation block perplexity every this many steps (0: only at the end); needs --valid."""
    seed: int = 0
    """Seeds the weights and the batch order."""
    overwrite: bool = False
    """Replace an existing --output folder."""


def read_texts(source: str, split: str, lowercase: bool, roundtrip: Any | None) -> list[str]:
    """The normalised ``text`` records of a data source."""
    loaded = load_source(source, split)
    if loaded.kind != "text":
        raise DataError(f"{source}: the judge trains on plain text records (a 'text' field), got {loaded.kind}")
    return normalise_texts(list(loaded.dataset["text"]), lowercase=lowercase, roundtrip=roundtrip)


def train_judge(cfg: JudgeConfig) -> dict:
    """Train and save the judge described by ``cfg``; returns the record written beside it."""
    refuse_existing(cfg.output, cfg.overwrite)
    if cfg.block_size > cfg.n_positions:
        raise ConfigError(f"--block-size {cfg.block_size} exceeds --n-positions {cfg.n_positions}")
    roundtrip = None
    if cfg.roundtrip_tokenizer:
        from elf_eqx.encoders import load_tokenizer

        roundtrip = load_tokenizer(cfg.roundtrip_tokenizer)
    train_texts = read_texts(cfg.train, cfg.split, cfg.lowercase, roundtrip)
    valid_texts = read_texts(cfg.valid, "validation", cfg.lowercase, roundtrip) if cfg.valid else []
    with staged_folder(cfg.output, overwrite=cfg.overwrite) as staging:
        record = _train_into(cfg, staging, train_texts, valid_texts)
    return record


def _train_into(cfg: JudgeConfig, folder: Path, train_texts: list[str], valid_texts: list[str]) -> dict:
    train_bpe_tokenizer(train_texts, cfg.vocab_size, folder)
    tokenizer = load_judge_tokenizer(folder)
    eos = tokenizer.eos_token_id
    encode = lambda texts: tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731
    train_blocks = pack_blocks(encode(train_texts), eos, cfg.block_size)
    valid_blocks = pack_blocks(encode(valid_texts), eos, cfg.block_size) if valid_texts else None
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, eos_token_id=eos)
    key = jax.random.key(cfg.seed)
    model = GPT2(config, key=jax.random.fold_in(key, 0))
    curve: list[dict] = []
    started = time.perf_counter()
    with tqdm(total=cfg.steps, desc="judge", dynamic_ncols=True) as bar:
        def show(step: int, loss: float) -> None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        def log_valid(step: int, ppl: float) -> None:
            curve.append({"step": step, "valid_block_ppl": round(ppl, 3)})
            bar.write(f"step {step}: valid block PPL {ppl:.2f}")

        model = train_lm(model, train_blocks, steps=cfg.steps, batch_size=cfg.batch_size, learning_rate=cfg.lr,
                         key=jax.random.fold_in(key, 1), warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                         on_step=show, valid_blocks=valid_blocks, eval_every=cfg.eval_every, on_eval=log_valid)
    record: dict[str, Any] = {
        "train": cfg.train, "valid": cfg.valid, "options": dataclasses.asdict(cfg),
        "parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))),
        "train_documents": len(train_texts), "train_tokens": int(train_blocks.size),
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_block_ppl": block_perplexity(model, train_blocks[:256]),
    }
    save_judge(model, folder)
    if valid_blocks is not None:
        record["valid_block_ppl"] = block_perplexity(model, valid_blocks)
        saved = load_judge(folder)  # the figure below is computed from the files as written
        figures = evaluate_unconditional(valid_texts, saved, tokenizer, batch_size=8, max_length=cfg.n_positions)
        # NaN (nothing scored: every validation text is empty) is recorded as null, beside its count
        record["valid_gen_ppl"] = figures["gen_ppl"] if figures["num_scored_tokens"] else None
        record["valid_scored_tokens"] = figures["num_scored_tokens"]
        record["valid_documents"] = len(valid_texts)
        record["valid_curve"] = curve
    (folder / "judge_training.json").write_text(json.dumps(record, indent=1))
    return record


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry; expected failures (and a diverging judge) end as one line (exit 2, see
    :mod:`elf_eqx.cli.errors`)."""
    with flag_errors():
        cfg = tyro.cli(JudgeConfig, args=argv)
    try:
        record = train_judge(cfg)
    except FloatingPointError as err:
        raise CLIError(str(err)) from None
    figures = {k: round(v, 3) for k, v in record.items() if k.endswith("_ppl") and v is not None}
    print(f"wrote {cfg.output}: {figures}, trained in {record['train_seconds']} s")


if __name__ == "__main__":
    main()
