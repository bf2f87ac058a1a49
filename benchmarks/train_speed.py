"""Training-step and sampling speed of an ELF preset on random latents (no encoder, no data).

    python benchmarks/train_speed.py --model ELF-B --batch 8 --length 1024          # GPU
    python benchmarks/train_speed.py --model ELF-XS --batch 8 --length 128 --encoder-dim 384   # CPU

The timing helpers here are shared with benchmarks/gpu_suite.py (the whole GPU suite).

Reports seconds per optimizer step, training tokens/s, peak device memory where the backend
exposes it, and seconds per sampled batch. Compare with docs/method.md#reference-speed (reference, one H100:
ELF-B L=1024 batch 8 → 0.123 s/step; 32-step SDE sampling batch 32 → 2.07 s).
"""

from __future__ import annotations

import dataclasses
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from elf_eqx.cli.errors import run_parsed
from elf_eqx.config import ComputeDtype, preset
from elf_eqx.model import ELF, count_params
from elf_eqx.objective import FlowObjective, LatentBatch
from elf_eqx.training.optim import make_optimizer
from elf_eqx.sampler import Sampler
from elf_eqx.training.step import TrainState, make_train_step


@dataclasses.dataclass(frozen=True)
class Args:
    model: str = "ELF-B"
    batch: int = 8
    length: int = 1024
    encoder_dim: int = 512
    vocab_size: int = 32100
    compute_dtype: ComputeDtype = "auto"
    remat: str = "none"
    optimizer: str = "muon"
    steps: int = 10
    sample_batch: int = 32
    sample_steps: int = 32
    skip_sampling: bool = False


def timed(fn, repeats: int, warmup: bool = True) -> float:
    """Mean wall seconds of ``fn()`` over ``repeats`` back-to-back calls (one warm-up call first
    unless ``warmup=False``); the device is synchronised only at the end, so dispatch overlaps."""
    if warmup:
        jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def first_call_seconds(fn) -> tuple[float, object]:
    """Wall seconds of the first (compiling) call of ``fn()``, and its result."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def peak_memory_gib(device=None) -> float | None:
    """The device's peak bytes in use so far, in GiB (None where the backend keeps no statistics)."""
    stats = (device or jax.devices()[0]).memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None


def memory_limit_bytes(device=None) -> int | None:
    """Bytes the allocator may use on the device (None where unknown, e.g. on the CPU)."""
    stats = (device or jax.devices()[0]).memory_stats() or {}
    return stats.get("bytes_limit")


def main(args: Args) -> dict:
    cfg = preset(args.model, encoder_dim=args.encoder_dim, vocab_size=args.vocab_size,
                 compute_dtype=args.compute_dtype, remat=args.remat)
    model = ELF(cfg, key=jax.random.key(0))
    kx, kt = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (args.batch, args.length, args.encoder_dim))
    tokens = jax.random.randint(kt, (args.batch, args.length), 0, args.vocab_size)
    batch = LatentBatch.unconditional(x, tokens, jnp.ones(tokens.shape, bool))
    opt = make_optimizer(model, 1e-4, name=args.optimizer)
    step, objective = make_train_step(opt), FlowObjective()
    holder = {"state": TrainState.create(model, opt)}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch, jax.random.key(2), objective)
        return metrics["loss"]

    result = {"device": str(jax.devices()[0].device_kind), "params": count_params(model), **dataclasses.asdict(args)}
    result["s_per_step"] = timed(one_step, args.steps)
    result["train_tokens_per_s"] = args.batch * args.length / result["s_per_step"]
    if peak_memory_gib() is not None:
        result["peak_gib"] = peak_memory_gib()
    if not args.skip_sampling:
        sampler = Sampler(num_steps=args.sample_steps, method="sde", gamma=1.5, omega=3.0)
        sample = eqx.filter_jit(lambda m, k: sampler(m, k, batch_size=args.sample_batch, length=args.length).tokens)
        ema = holder["state"].ema
        result["s_per_sample_batch"] = timed(lambda: sample(ema, jax.random.key(3)), 2)
        result["samples_per_s"] = args.sample_batch / result["s_per_sample_batch"]
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run_parsed(Args, main)
