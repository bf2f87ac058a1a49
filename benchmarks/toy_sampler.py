"""Every sampler on a toy with a perfect denoiser (docs/method.md#solvers).

Data: tokens ``k`` with Zipf probabilities ``p_k ∝ k^(−a)`` over ``vocab`` fixed random embedding
vectors ``e_k ~ N(0, I_D)``; a latent is ``z_t = t·e_k + (1 − t)·s·ε``. The exact posterior mean is
``x̂(z, t) = Σ_k softmax_k(log p_k − |z − t·e_k|² / (2((1 − t)s)²))·e_k``, so any error in the token
distribution comes from the sampler alone. Each sample's token is the embedding nearest its ``z₁``;
the figures are the entropy of the produced token distribution and its KL to the true one,
``KL(produced ‖ true)``.

    python benchmarks/toy_sampler.py --steps 4 8 16 32 64 --output runs/toy_sampler.md
"""

from __future__ import annotations

import dataclasses
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from elf_eqx.flow import FLOW
from elf_eqx.sampler import Sampler, SamplerSettings
from elf_eqx.sampling.settings import setting, setting_axis
from elf_eqx.sampling.settings_base import StepsSetting

# (method, solver, sde_noise) of every sampler the toy scores.
SAMPLERS = (
    ("ode", "euler", "reference"), ("ode", "heun", "reference"), ("ode", "dpm2m", "reference"),
    ("sde", "euler", "reference"), ("sde", "euler", "consistent"), ("sde", "heun", "consistent"),
    ("sde", "dpm2m", "consistent"),
)


class ZipfToy(eqx.Module):
    """Zipf-distributed tokens over fixed random embeddings, with the exact posterior-mean denoiser."""

    embeddings: Float[Array, "K D"]
    log_prior: Float[Array, " K"]
    noise_scale: float = FLOW.noise_scale

    @staticmethod
    def make(key: PRNGKeyArray, vocab: int = 64, dim: int = 16, exponent: float = 1.0,
             noise_scale: float = FLOW.noise_scale) -> "ZipfToy":
        """``vocab`` tokens with ``p_k ∝ k^(−exponent)`` and ``N(0, I_dim)`` embeddings from ``key``."""
        if vocab < 2 or dim < 1:
            raise ValueError(f"ZipfToy needs vocab >= 2 and dim >= 1, got {vocab}, {dim}")
        logits = -exponent * jnp.log(jnp.arange(1, vocab + 1, dtype=jnp.float32))
        return ZipfToy(jax.random.normal(key, (vocab, dim)), jax.nn.log_softmax(logits), noise_scale)

    @property
    def probs(self) -> Float[Array, " K"]:
        """The true token distribution."""
        return jnp.exp(self.log_prior)

    def predict(
        self, z: Float[Array, "B L D"], x_prev: Float[Array, "B L D"], t: Float[Array, ""]
    ) -> Float[Array, "B L D"]:
        """Exact ``E[x | z_t = z]`` (``x_prev`` is ignored: the denoiser needs no self-conditioning)."""
        sigma = jnp.maximum((1.0 - t) * self.noise_scale, 1e-6)
        dist2 = jnp.sum((z[..., None, :] - t * self.embeddings) ** 2, -1)
        weights = jax.nn.softmax(self.log_prior - dist2 / (2.0 * sigma**2), -1)
        return weights @ self.embeddings

    def decode(self, z: Float[Array, "B L D"]) -> Int[Array, "B L"]:
        """The token whose embedding is nearest each latent."""
        return jnp.argmin(jnp.sum((z[..., None, :] - self.embeddings) ** 2, -1), -1).astype(jnp.int32)


def sample_tokens(toy: ZipfToy, sampler: Sampler, key: PRNGKeyArray, batches: int, batch_size: int) -> Int[Array, " N"]:
    """``batches × batch_size`` tokens, one grid per batch (as the sample CLI draws them)."""

    def one(k):
        k_grid, k_noise, k_steps = jax.random.split(k, 3)
        z0 = toy.noise_scale * jax.random.normal(k_noise, (batch_size, 1, toy.embeddings.shape[1]))
        return toy.decode(sampler.solve(toy.predict, z0, sampler.grid(k_grid), k_steps))[:, 0]

    return jax.jit(jax.vmap(one))(jax.random.split(key, batches)).reshape(-1)


def token_figures(tokens: Int[np.ndarray, " N"], probs: Float[np.ndarray, " K"]) -> tuple[float, float]:
    """``(entropy, KL(produced ‖ true))`` in nats of the produced token histogram."""
    counts = np.bincount(np.asarray(tokens), minlength=len(probs)).astype(np.float64)
    q = counts / counts.sum()
    seen = q > 0
    entropy = float(-(q[seen] * np.log(q[seen])).sum())
    return entropy, float((q[seen] * (np.log(q[seen]) - np.log(np.asarray(probs, np.float64)[seen]))).sum())


def sampler_name(method: str, solver: str, sde_noise: str) -> str:
    """``"sde euler reference"``-style row label (``ode`` rows carry no noise)."""
    return f"{method} {solver}" + (f" {sde_noise}" if method == "sde" else "")


ToySteps = setting_axis(StepsSetting, "steps", note="Swept:")
ToyGamma = setting(SamplerSettings, "gamma", note="Every SDE sampler's:")
ToyTimeGrid = setting(SamplerSettings, "time_grid", note="Every sampler's:")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Score every sampler × step count on the Zipf toy."""

    steps: ToySteps = (4, 8, 16, 32, 64)
    vocab: int = 64
    """Number of tokens."""
    dim: int = 16
    """Embedding dimension."""
    zipf: float = 1.0
    """Zipf exponent a of p_k ∝ k^(−a)."""
    gamma: ToyGamma = SamplerSettings.gamma
    time_grid: ToyTimeGrid = SamplerSettings.time_grid
    batches: int = 16
    """Batches (one grid each for the random logit-normal grid)."""
    batch_size: int = 1024
    """Samples per batch."""
    seed: int = 0
    """Seed of the embeddings and the samples."""
    output: str | None = None
    """Also write the markdown table here."""


def run_toy(cfg: ToyConfig) -> tuple[list[dict], float]:
    """Rows ``{sampler, steps, nfe, entropy, kl}`` and the true entropy."""
    k_toy, k_samples = jax.random.split(jax.random.key(cfg.seed))
    toy = ZipfToy.make(k_toy, cfg.vocab, cfg.dim, cfg.zipf)
    probs = np.asarray(toy.probs, np.float64)
    true_entropy = float(-(probs * np.log(probs)).sum())
    rows = []
    for (method, solver, noise), steps in itertools.product(SAMPLERS, cfg.steps):
        sampler = Sampler(num_steps=steps, method=method, solver=solver, sde_noise=noise, gamma=cfg.gamma,
                          time_grid=cfg.time_grid)
        tokens = sample_tokens(toy, sampler, k_samples, cfg.batches, cfg.batch_size)
        entropy, kl = token_figures(np.asarray(tokens), probs)
        rows.append({"sampler": sampler_name(method, solver, noise), "steps": steps, "nfe": sampler.nfe(),
                     "entropy": entropy, "kl": kl})
    return rows, true_entropy


def markdown_table(rows: list[dict], true_entropy: float, steps: tuple[int, ...]) -> str:
    """Entropy / KL per sampler (rows) and step count (columns)."""
    head = "| sampler | " + " | ".join(f"{s} steps: H / KL" for s in steps) + " |"
    lines = [f"True entropy {true_entropy:.3f} nats.", "", head, "|---|" + "---|" * len(steps)]
    for name in dict.fromkeys(r["sampler"] for r in rows):
        cells = {r["steps"]: f"{r['entropy']:.3f} / {r['kl']:.3f}" for r in rows if r["sampler"] == name}
        lines.append(f"| {name} | " + " | ".join(cells[s] for s in steps) + " |")
    return "\n".join(lines) + "\n"


def write_table(cfg: ToyConfig) -> None:
    """Print (and optionally write) the table."""
    from elf_eqx.io.atomic import write_text_atomic

    rows, true_entropy = run_toy(cfg)
    table = markdown_table(rows, true_entropy, cfg.steps)
    print(table)
    if cfg.output:
        write_text_atomic(cfg.output, table)


def main(argv: list[str] | None = None) -> None:
    """CLI entry (``argv`` default: ``sys.argv[1:]``); expected failures end as one line (exit 2)."""
    from elf_eqx.cli.errors import run_parsed

    run_parsed(ToyConfig, write_table, argv)


if __name__ == "__main__":
    main()
