"""Next-token training of a :class:`~elf_eqx.judge.gpt2.GPT2` on packed token blocks (to make an
offline judge for Gen. PPL)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.judge.gpt2 import GPT2, token_nll


def pack_blocks(documents: Sequence[Sequence[int]], eos_id: int, block_size: int) -> Int[np.ndarray, "N L"]:
    """Documents, each followed by EOS, concatenated and cut into ``(N, block_size)`` rows (the
    tail shorter than a block is dropped)."""
    stream = np.fromiter((t for doc in documents for t in (*doc, eos_id)), np.int32)
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return stream[: n * block_size].reshape(n, block_size)


def mean_nll(model: GPT2, blocks: Int[Array, "B L"]) -> Float[Array, ""]:
    """Mean next-token negative log-likelihood over positions ``1..L-1`` of full blocks."""
    nll = token_nll(model, blocks, jnp.ones(blocks.shape, bool))
    return jnp.mean(nll[:, 1:])


def make_lm_step(optimizer: optax.GradientTransformation) -> Callable:
    """``step(model, opt_state, blocks) -> (model, opt_state, loss)``, jit-compiled."""

    @eqx.filter_jit
    def step(model: GPT2, opt_state, blocks: Int[Array, "B L"]):
        loss, grads = eqx.filter_value_and_grad(mean_nll)(model, blocks)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def block_perplexity(model: GPT2, blocks: Int[np.ndarray, "N L"], batch_size: int = 16) -> float:
    """``exp(mean NLL)`` over every predicted token of ``blocks`` (the last partial batch included)."""
    nll_sum, count = 0.0, 0
    evaluate = eqx.filter_jit(lambda m, b: jnp.sum(token_nll(m, b, jnp.ones(b.shape, bool))[:, 1:]))
    for start in range(0, len(blocks), batch_size):
        part = jnp.asarray(blocks[start : start + batch_size])
        nll_sum += float(evaluate(model, part))
        count += part.shape[0] * (part.shape[1] - 1)
    return math.exp(nll_sum / max(count, 1))


def train_lm(
    model: GPT2,
    blocks: Int[np.ndarray, "N L"],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    key: PRNGKeyArray,
    warmup: int = 100,
    weight_decay: float = 0.1,
    on_step: Callable[[int, float], None] | None = None,
) -> GPT2:
    """AdamW (β 0.9/0.95, clip 1.0) with linear warm-up then cosine decay for ``steps`` steps on
    random batches of ``blocks``; ``on_step(step, loss)`` is called after each step."""
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    if len(blocks) < batch_size:
        raise ValueError(f"{len(blocks)} training blocks are fewer than one batch of {batch_size}")
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(warmup, steps - 1), steps, learning_rate * 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay))
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    step = make_lm_step(optimizer)
    for i in range(steps):
        rows = jax.random.choice(jax.random.fold_in(key, i), len(blocks), (batch_size,), replace=False)
        model, opt_state, loss = step(model, opt_state, jnp.asarray(blocks[np.asarray(rows)]))
        if on_step is not None:
            on_step(i + 1, float(loss))
    return model
