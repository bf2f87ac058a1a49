"""The data pipeline: sources → token ids (cached) → rows → padded batches with masks.

Typical use::

    spec = DataSpec.from_tokenizer(tokenizer, max_length=128)
    data = prepare_data(embedded_corpus_path("train"), tokenizer, spec)
    loader = Loader(data.rows, spec, global_batch_size=32, seed=0,
                    process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(loader)  # input_ids, valid_mask, cond_mask, loss_mask: (B, L)
"""

from elf_eqx.data.cache import default_cache_dir
from elf_eqx.data.collate import collate
from elf_eqx.data.corpus import embedded_corpus_path
from elf_eqx.data.layout import layout_rows
from elf_eqx.data.loader import Loader
from elf_eqx.data.pipeline import PreparedData, prepare_data
from elf_eqx.data.sources import Source, load_source
from elf_eqx.data.spec import DataSpec
from elf_eqx.data.tokenization import TokenizedSource, check_token_ids, tokenize_source

__all__ = [
    "DataSpec",
    "Loader",
    "PreparedData",
    "Source",
    "TokenizedSource",
    "check_token_ids",
    "collate",
    "default_cache_dir",
    "embedded_corpus_path",
    "layout_rows",
    "load_source",
    "prepare_data",
    "tokenize_source",
]
