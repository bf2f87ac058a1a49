"""How much text an ELF checkpoint can recover from latents: held-out text is encoded by the frozen
encoder, noised to time ``t`` (``z_t = t·x + (1 − t)·s·ε``), denoised in one pass (x̂, no
self-conditioning) and decoded (argmax of the decode head); the figure is token accuracy against
the original ids. ``t = 1`` decodes the clean latents: the ceiling any sampler of this model has.
Low accuracy at moderate ``t`` with a high ceiling says the denoiser, not the latent space or the
decoder, limits the samples (docs/method.md#objective, #sampling).

    python benchmarks/latent_roundtrip.py runs/kjv_elf_xs --data ../shared/data/kjv/valid.jsonl
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from elf_eqx.cli.errors import run_parsed
from elf_eqx.data import load_source
from elf_eqx.encoders.latent_encoder import LatentEncoder, TokenBatch
from elf_eqx.encoders.load import load_text_encoder, load_tokenizer
from elf_eqx.errors import DataError, IncompatibleModelError
from elf_eqx.flow import interpolate
from elf_eqx.release.model_source import load_model_source


@dataclasses.dataclass(frozen=True)
class Args:
    """Token accuracy of one-pass denoising and decoding of encoded held-out text, per noise time."""

    source: tyro.conf.Positional[str]
    """An ELF training run (or any model source elf_eqx.sample takes)."""
    data: str
    """Held-out text (.jsonl with "text", .txt, folder, save_to_disk, hub id)."""
    times: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)
    """Noise times t (1 = clean latents)."""
    num_pieces: int = 128
    """Held-out pieces of the model's length."""
    omega: float = 3.0
    """SC-CFG scale fed to the network (as the sampler does)."""
    seed: int = 0


def pieces(tokenizer, source: str, length: int, count: int) -> np.ndarray:
    """Up to ``count`` consecutive ``length``-token pieces of the documents (no special tokens)."""
    rows = []
    for document in load_source(source, "validation").dataset["text"]:
        ids = tokenizer(document, add_special_tokens=False)["input_ids"]
        rows += [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)]
        if len(rows) >= count:
            break
    if not rows:
        raise DataError(f"--data {source}: no document has {length} tokens")
    return np.asarray(rows[:count], np.int32)


def roundtrip(args: Args) -> list[dict]:
    bundle = load_model_source(args.source)
    if not bundle.family.uses_encoder:
        raise IncompatibleModelError(f"{args.source} is an {bundle.family.name} run; the round trip needs an ELF (latents)")
    model, flow = bundle.model, bundle.flow
    tokenizer = load_tokenizer(bundle.tokenizer)
    encoder = LatentEncoder(load_text_encoder(bundle.encoder), bundle.latent_mean, bundle.latent_std)
    ids = jnp.asarray(pieces(tokenizer, args.data, bundle.layout.max_length, args.num_pieces))
    ones = jnp.ones(ids.shape, bool)
    x = eqx.filter_jit(encoder)(TokenBatch(ids, ones, ~ones, ones), jax.random.key(args.seed)).x

    @jax.jit
    def accuracy(t, key):
        z = interpolate(x, jax.random.normal(key, x.shape), jnp.full((x.shape[0],), t), flow.noise_scale)
        zeros = jnp.zeros_like(x)
        x_hat = jnp.where(t >= 1.0, x, model(jnp.concatenate([z, zeros], -1), jnp.full((x.shape[0],), t), args.omega))
        logits = model.decode(jnp.concatenate([x_hat, zeros], -1), args.omega)
        return jnp.mean(jnp.argmax(logits, -1) == ids)

    rows = []
    for i, t in enumerate(args.times):
        acc = float(accuracy(jnp.float32(t), jax.random.fold_in(jax.random.key(args.seed), i)))
        rows.append({"t": t, "token_accuracy": acc})
        print(f"t = {t:.2f}: token accuracy {acc:.3f}")
    print(f"({ids.shape[0]} pieces of {ids.shape[1]} tokens from {args.data}; {bundle.origin})")
    return rows


if __name__ == "__main__":
    run_parsed(Args, roundtrip)
