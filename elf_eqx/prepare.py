"""``python -m elf_eqx.prepare``: tokenize and lay out a dataset once, for every host of a run.

    python -m elf_eqx.prepare --data embedded --output gs://BUCKET/kjv-minilm-64 \\
        --tokenizer offline-minilm --max-length 64 --packing --workers 8
    python -m elf_eqx.train --preset quickstart --data gs://BUCKET/kjv-minilm-64 ...

Writes the rows a training run with the same ``--tokenizer``, ``--max-length``,
``--max-input-length``, ``--pad-mode`` and ``--packing`` would lay out, as fixed-width token shards
(:mod:`elf_eqx.data.prepared`) to a folder or a bucket, ``manifest.json`` last. ``train --data`` of
that folder reads it (each host only its own rows) and checks the layout and tokenizer match.
``--workers N`` tokenizes and lays out in N processes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

from elf_eqx.cli.errors import run_parsed
from elf_eqx.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Tokenize and lay out a dataset once into shards every host of a run reads its own rows from."""

    data: str
    """The source, as train's --data takes it: hub dataset id, save_to_disk folder, .jsonl, .txt, a
    folder of those, or 'embedded' (the KJV subset in the package)."""
    output: str
    """Where the prepared shards go: a folder, gs://BUCKET/PATH or s3://BUCKET/PATH."""
    tokenizer: str
    """The run's tokenizer (hub id, folder, or offline-minilm): the one its --tokenizer (or --encoder) names."""
    max_length: int
    """Tokens per row (the run's --max-length)."""
    max_input_length: int = 0
    """Conditional data: the condition's share of a row (the run's --max-input-length)."""
    pad_mode: Literal["pad", "eos"] = "pad"
    """The run's --pad-mode."""
    packing: bool = False
    """The run's --packing."""
    data_split: str = "train"
    """Split of a hub dataset or DatasetDict folder."""
    workers: int = 1
    """Processes that tokenize and lay out in parallel."""
    rows_per_shard: int = 1 << 16
    """Rows per shard file."""
    overwrite: bool = False
    """Replace an existing --output."""

    def __post_init__(self) -> None:
        from elf_eqx.io.storage import user_path

        if self.max_length <= 0:
            raise ConfigError(f"--max-length must be positive, got {self.max_length}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.rows_per_shard < 1:
            raise ConfigError(f"--rows-per-shard must be at least 1, got {self.rows_per_shard}")
        user_path(self.data, "--data")
        user_path(self.output, "--output")


def prepare(cfg: PrepareConfig) -> dict:
    """Prepare ``cfg.data`` into ``cfg.output``; returns the manifest with the rows/s it took."""
    from elf_eqx.data import DataSpec
    from elf_eqx.data.pipeline import prepare_data, prepared_about
    from elf_eqx.data.prepared import write_prepared
    from elf_eqx.encoders.load import load_tokenizer
    from elf_eqx.io import storage
    from elf_eqx.io.atomic import refuse_existing

    out = storage.user_path(cfg.output, "--output")
    storage.check_bucket(out, "--output")
    refuse_existing(out, cfg.overwrite)
    tokenizer = load_tokenizer(cfg.tokenizer)
    spec = DataSpec.from_tokenizer(tokenizer, cfg.max_length, max_input_length=cfg.max_input_length or None,
                                   pad_mode=cfg.pad_mode, packing=cfg.packing)
    start = time.perf_counter()
    data = prepare_data(cfg.data, tokenizer, spec, split=cfg.data_split, use_cache=False,
                        num_proc=cfg.workers if cfg.workers > 1 else None)
    laid_out = time.perf_counter() - start
    manifest = write_prepared(data.rows, spec, out, conditional=data.conditional,
                              about=prepared_about(cfg.data, cfg.data_split, tokenizer, cfg.tokenizer), overwrite=cfg.overwrite,
                              rows_per_shard=cfg.rows_per_shard)
    seconds = time.perf_counter() - start
    manifest["seconds"] = {"tokenize_and_layout": laid_out, "total": seconds}
    print(f"prepared {manifest['num_rows']:,} rows of {cfg.max_length} tokens from {data.name} in {seconds:.1f} s "
          f"({manifest['num_rows'] / max(seconds, 1e-9):,.0f} rows/s, {len(manifest['shards'])} shard(s)) "
          f"to {out}")
    return manifest


def main(argv: list[str] | None = None) -> None:
    run_parsed(PrepareConfig, prepare, argv)


if __name__ == "__main__":
    main()
