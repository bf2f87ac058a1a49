"""Tokens/s of the frozen T5 encoder and of the GPT-2 judge, jit-compiled, on random weights.

    python benchmarks/encoder_speed.py --batch 2 --repeats 3

T5-small-sized encoder (6 layers, d_model 512, 8 heads, d_ff 2048, vocab 32128) at L=1024 and
L=128 with a padded, conditional (B, L, L) mask; GPT-2-small-sized judge (12 layers, 768 wide,
vocab 50257) computing per-token NLL and the scoring mask. Compilation and one warm-up call are
excluded; every timed call ends with ``block_until_ready``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from elf_eqx.cli.errors import run_parsed
from elf_eqx.encoders import T5Config, T5Encoder, encoder_attention_mask
from elf_eqx.evaluate.judge import GPT2, GPT2Config, judge_nll

T5_SMALL = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
GPT2_SMALL = GPT2Config()


@dataclasses.dataclass
class Args:
    batch: int = 2
    """sequences per call"""
    repeats: int = 3
    """timed calls per setting (after one warm-up)"""
    encoder_lengths: tuple[int, ...] = (1024, 128)
    judge_length: int = 1024
    dtype: str = "float32"
    """float32 or bfloat16 (parameters and activations)"""


def _time(fn: Callable[[], jax.Array], repeats: int) -> float:
    """Median seconds per call of ``fn`` after one warm-up (which includes compilation)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(args: Args) -> None:
    dtype = jnp.dtype(args.dtype)
    cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)  # noqa: E731
    print(f"backend {jax.default_backend()}, devices {jax.devices()}, dtype {dtype.name}, batch {args.batch}")
    encoder = cast(T5Encoder(T5_SMALL, key=jax.random.key(0)))
    run_encoder = eqx.filter_jit(lambda enc, ids, mask: enc(ids, mask))
    for length in args.encoder_lengths:
        ids = jax.random.randint(jax.random.key(1), (args.batch, length), 0, T5_SMALL.vocab_size)
        positions = jnp.arange(length)[None]
        # every other row padded to 3/4 length; the first 1/8 of each row is a condition
        lengths = jnp.where(jnp.arange(args.batch) % 2 == 1, length * 3 // 4, length)[:, None]
        valid = positions < lengths
        mask = encoder_attention_mask(valid, jnp.broadcast_to(positions < length // 8, valid.shape))
        seconds = _time(lambda: run_encoder(encoder, ids, mask), args.repeats)
        print(f"T5-small encoder L={length}: {seconds * 1e3:.1f} ms/call, {args.batch * length / seconds:,.0f} tokens/s")
    judge = cast(GPT2(GPT2_SMALL, key=jax.random.key(2)))
    length = args.judge_length
    ids = jax.random.randint(jax.random.key(3), (args.batch, length), 0, GPT2_SMALL.vocab_size)
    valid = jnp.ones((args.batch, length), bool)
    seconds = _time(lambda: judge_nll(judge, ids, valid, GPT2_SMALL.eos_token_id, dtype)[0], args.repeats)
    print(f"GPT-2-small judge L={length}: {seconds * 1e3:.1f} ms/call, {args.batch * length / seconds:,.0f} tokens/s")


if __name__ == "__main__":
    run_parsed(Args, main)
