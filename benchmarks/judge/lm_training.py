"""Next-token training of a :class:`~elf_eqx.evaluate.judge.GPT2` on packed token blocks (to make an
offline judge for Gen. PPL): AdamW with linear warm-up then cosine decay, a jitted step,
epoch-wise shuffling from an explicit key, and optional periodic validation perplexity."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.errors import ConfigError, DataError
from elf_eqx.evaluate.judge import GPT2, token_nll


def pack_blocks(documents: Sequence[Sequence[int]], eos_id: int, block_size: int) -> Int[np.ndarray, "N L"]:
    """Token-id documents, each followed by ``eos_id``, concatenated and cut into
    ``(N, block_size)`` int32 rows; the tail shorter than a block is dropped."""
    stream = np.fromiter((t for doc in documents for t in (*doc, eos_id)), np.int32)
    n = len(stream) // block_size
    if n == 0:
        raise DataError(f"the corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return stream[: n * block_size].reshape(n, block_size)


def mean_nll(model: GPT2, blocks: Int[Array, "B L"]) -> Float[Array, ""]:
    """Mean next-token negative log-likelihood over positions ``1..L-1`` of full blocks ``(B, L)``."""
    nll = token_nll(model, blocks, jnp.ones(blocks.shape, bool))
    return jnp.mean(nll[:, 1:])


@eqx.filter_jit
def row_nll_sums(model: GPT2, blocks: Int[Array, "B L"]) -> Float[Array, " B"]:
    """Summed next-token NLL of each full block ``(B, L)`` over positions ``1..L-1``: ``(B,)``."""
    return jnp.sum(token_nll(model, blocks, jnp.ones(blocks.shape, bool))[:, 1:], axis=-1)


def block_perplexity(model: GPT2, blocks: Int[np.ndarray, "N L"], batch_size: int = 16) -> float:
    """``exp(mean NLL)`` over every predicted token (positions ``1..L-1``) of ``blocks (N, L)``.
    The last batch is padded with repeats of its first row (not counted) so one shape compiles."""
    nll_sum = 0.0
    for start in range(0, len(blocks), batch_size):
        part = np.asarray(blocks[start : start + batch_size], np.int32)
        real = len(part)
        if real < batch_size:
            part = np.concatenate([part, np.repeat(part[:1], batch_size - real, axis=0)])
        nll_sum += float(jnp.sum(row_nll_sums(model, jnp.asarray(part))[:real]))
    count = len(blocks) * (blocks.shape[1] - 1)
    return math.exp(nll_sum / max(count, 1))


def judge_optimizer(learning_rate: float, steps: int, warmup: int, weight_decay: float) -> optax.GradientTransformation:
    """Global-norm clip 1.0, then AdamW (β 0.9/0.95) with a linear warm-up over ``warmup`` steps to
    ``learning_rate`` and a cosine decay to ``learning_rate / 10`` at ``steps``."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(warmup, steps - 1), steps, learning_rate * 0.1)
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay))


def make_lm_step(optimizer: optax.GradientTransformation) -> Callable:
    """``step(model, opt_state, blocks (B, L)) -> (model, opt_state, loss)``, jit-compiled."""

    @eqx.filter_jit
    def step(model: GPT2, opt_state, blocks: Int[Array, "B L"]):
        loss, grads = eqx.filter_value_and_grad(mean_nll)(model, blocks)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def batch_rows(key: PRNGKeyArray, n_blocks: int, batch_size: int, step: int) -> Int[np.ndarray, " B"]:
    """Row indices ``(batch_size,)`` of batch ``step``: each epoch visits every full batch of a fresh
    permutation of ``n_blocks`` rows (``fold_in(key, epoch)``); leftover rows wait for later epochs."""
    per_epoch = n_blocks // batch_size
    epoch, index = divmod(step, per_epoch)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n_blocks))
    return order[index * batch_size : (index + 1) * batch_size]


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
    valid_blocks: Int[np.ndarray, "M L"] | None = None,
    eval_every: int = 0,
    on_eval: Callable[[int, float], None] | None = None,
) -> GPT2:
    """Train ``model`` for ``steps`` AdamW steps (see :func:`judge_optimizer`) on batches
    ``(batch_size, L)`` of ``blocks (N, L)`` drawn by :func:`batch_rows`; deterministic given
    ``key`` and the model. ``on_step(step, loss)`` runs after each step; with ``valid_blocks`` and
    ``eval_every > 0``, ``on_eval(step, valid block perplexity)`` runs every ``eval_every`` steps."""
    if steps < 2:
        raise ConfigError(f"--steps must be at least 2, got {steps}")
    if len(blocks) < batch_size:
        raise DataError(f"{len(blocks)} training blocks are fewer than one batch of {batch_size}")
    optimizer = judge_optimizer(learning_rate, steps, warmup, weight_decay)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    step = make_lm_step(optimizer)
    for i in range(steps):
        model, opt_state, loss = step(model, opt_state, jnp.asarray(blocks[batch_rows(key, len(blocks), batch_size, i)]))
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"judge training: loss {float(loss)} at step {i + 1}; lower --lr")
        if on_step is not None:
            on_step(i + 1, float(loss))
        if valid_blocks is not None and eval_every > 0 and (i + 1) % eval_every == 0 and on_eval is not None:
            on_eval(i + 1, block_perplexity(model, valid_blocks))
    return model
