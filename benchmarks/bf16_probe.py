"""Where bf16 and float32 part, for ``bf16_study.py``'s two runs (docs/method.md#precision):

* **weights**: per parameter group, how far the bf16 run's weights are from the float32 run's at
  each saved step, and each run's update size between saves;
* **activations**: the float32 run's final weights run under both policies on the same batch,
  layer by layer: the relative error of the residual stream after the embeddings and each block,
  of both heads, of the loss and of every gradient;
* **Muon's Newton–Schulz** in bf16 against float32 on the same gradients (the float32 run's, at
  its saved steps): each matrix update's orthogonality error ``‖OOᵀ − I‖_F / √m`` and singular
  value range in both, their relative difference, and what one Muon step with each does to the
  loss on a second batch.

    python benchmarks/bf16_probe.py --output-dir runs/bf16_study [--train-args "..."]

Writes ``OUTPUT_DIR/probe.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from optax.contrib import MuonDimensionNumbers
from optax.contrib._muon import orthogonalize_via_newton_schulz

from bf16_study import ARMS, train_args
from elf_eqx.model import with_runtime_options
from elf_eqx.nn.rope import rope_angles
from elf_eqx.training.checkpoint import load_model_from_checkpoint
from elf_eqx.training.config import parse_train_config
from elf_eqx.training.optim import _NS_COEFFS as NS_COEFFS
from elf_eqx.training.optim import make_optimizer, muon_dimension_numbers
from elf_eqx.training.setup import build_run
from elf_eqx.tree_paths import key_name


def rel(a, b) -> float:
    """``‖a − b‖ / ‖b‖`` in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def leaves(tree) -> dict[str, np.ndarray]:
    """Dotted path → array, the stacked blocks split into one entry per layer (``blocks.3.attn.qkv.weight``)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]:
        name = ".".join(key_name(k) for k in path)
        array = np.asarray(leaf, np.float64)
        if name.startswith("blocks."):
            for i, layer in enumerate(array):
                out[name.replace("blocks.", f"blocks.{i}.", 1)] = layer
        else:
            out[name] = array
    return out


def group(name: str) -> str:
    """A leaf's group: a block's layer and sub-layer (``blocks.2.mlp``), else its module."""
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[0] == "blocks" else parts[0]


def grouped_rel(a: dict, b: dict) -> dict[str, float]:
    """Per group: ``‖a − b‖ / ‖b‖`` over the group's leaves together."""
    sums: dict[str, list[float]] = {}
    for name in b:
        g = sums.setdefault(group(name), [0.0, 0.0])
        g[0] += float(np.sum((a[name] - b[name]) ** 2))
        g[1] += float(np.sum(b[name] ** 2))
    return {g: (d / max(n, 1e-300)) ** 0.5 for g, (d, n) in sums.items()}


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def weight_statistics(out: Path, at_step: int) -> dict:
    """Divergence of the bf16 run's weights from the float32 run's, and each run's update sizes."""
    steps = sorted(s for s in set(checkpoint_steps(out / ARMS[0])) & set(checkpoint_steps(out / ARMS[1])) if s <= at_step)
    weights = {arm: {s: leaves(load_model_from_checkpoint(out / arm, "model", step=s)) for s in steps} for arm in ARMS}
    result = {"steps": steps, "divergence": {}, "update": {arm: {} for arm in ARMS}}
    for i, s in enumerate(steps):
        result["divergence"][s] = grouped_rel(weights["bfloat16"][s], weights["float32"][s])
        if i:
            for arm in ARMS:
                result["update"][arm][s] = grouped_rel(weights[arm][s], weights[arm][steps[i - 1]])
    return result


def residual_stream(model, z, t, omega, decode: bool) -> list:
    """The residual stream after the embeddings and after each block (text positions), then the
    head's output: the network's forward written out layer by layer."""
    p, cfg = model.precision, model.config
    b, length, _ = z.shape
    vec = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,))  # noqa: E731
    time_tok, cfg_tok, mode_tok = model.prefix_tokens(vec(t), vec(omega), vec(float(decode)), p)
    x = jnp.concatenate([time_tok, cfg_tok, mode_tok, model.embed_text(z, p)], axis=1).astype(p.residual.elementwise)
    cos, sin = rope_angles(cfg.num_prefix_tokens, length, cfg.head_dim, cfg.rope_theta)
    n = cfg.num_prefix_tokens
    stream = [x[:, n:]]
    for i in range(cfg.depth):
        block = jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, model.blocks)
        x = block(x, cos, sin, precision=p)
        stream.append(x[:, n:])
    stream.append(model.decode_head(x[:, n:]) if decode else model.denoise_head(x[:, n:]))
    return stream


def activation_statistics(model, run, batch, key) -> dict:
    """The float32 weights under both policies on one batch: per-layer errors, the loss's and the gradients'."""
    latents = run.latent_encoder(batch, key)
    models = {arm: with_runtime_options(model, compute_dtype=arm) for arm in ARMS}
    noise = jax.random.normal(jax.random.key(7), latents.x.shape)
    result: dict = {}
    for t in (0.2, 0.5, 0.8):
        z = t * latents.x + (1 - t) * 2.0 * noise
        inputs = jnp.concatenate([z, jnp.zeros_like(z)], -1)
        streams = {arm: eqx.filter_jit(lambda m, x: residual_stream(m, x, t, 3.0, False))(models[arm], inputs) for arm in ARMS}
        result[f"denoise t={t}"] = [rel(a, b) for a, b in zip(streams["bfloat16"], streams["float32"])]
    inputs = jnp.concatenate([latents.x, jnp.zeros_like(latents.x)], -1)
    streams = {arm: eqx.filter_jit(lambda m, x: residual_stream(m, x, 1.0, 3.0, True))(models[arm], inputs) for arm in ARMS}
    result["decode (clean latents)"] = [rel(a, b) for a, b in zip(streams["bfloat16"], streams["float32"])]
    result["layers"] = ["embeddings", *[f"block {i}" for i in range(model.config.depth)], "head"]
    return result


def loss_and_grads(objective, model, latents, key):
    return eqx.filter_jit(jax.value_and_grad(lambda m: objective(m, latents, key, dropout=False)[0]))(model)


def gradient_statistics(model, objective, latents, key) -> dict:
    """The loss and every gradient group of the float32 weights under the bf16 policy against float32."""
    (l32, g32), (l16, g16) = (loss_and_grads(objective, with_runtime_options(model, compute_dtype=arm), latents, key)
                              for arm in ARMS)
    return {"loss": {"float32": float(l32), "bfloat16": float(l16), "rel": float(l16 / l32 - 1)},
            "gradients": grouped_rel(leaves(g16), leaves(g32)), "gradient_total": rel(
                np.concatenate([v.ravel() for v in leaves(g16).values()]),
                np.concatenate([v.ravel() for v in leaves(g32).values()]))}


def orthogonality(update: np.ndarray) -> tuple[float, float, float]:
    """``(‖OOᵀ − I‖_F / √m, smallest, largest singular value)`` of an ``m × n`` update (``m ≤ n``)."""
    o = update if update.shape[0] <= update.shape[1] else update.T
    gram = o @ o.T
    sv = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None))
    return float(np.linalg.norm(gram - np.eye(len(gram))) / len(gram) ** 0.5), float(sv.min()), float(sv.max())


def newton_schulz_statistics(model, grads, objective, latents2, key, lr: float) -> dict:
    """Muon's orthogonalised update of each matrix in bf16 against float32 on the same gradients, and
    the loss on another batch after one Muon step with each."""
    dims = muon_dimension_numbers(model)
    is_dims = lambda d: d is None or isinstance(d, MuonDimensionNumbers)  # noqa: E731
    updates = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        # what Muon's update runs on each matrix (elf_eqx.training.optim.scale_by_muon_low_precision;
        # its Nesterov momentum after one step is a multiple of the gradient, and the iterations
        # start by normalising)
        orthogonalize = jax.jit(lambda g, d: orthogonalize_via_newton_schulz(
            g.astype(dtype), jnp.asarray(NS_COEFFS), 5, "frobenius", 1e-8, d).astype(jnp.float32), static_argnums=1)
        updates[jnp.dtype(dtype).name] = leaves(jax.tree_util.tree_map(
            lambda d, g: None if d is None else orthogonalize(g, d), dims, grads, is_leaf=is_dims))
    per_matrix = {}
    for name, o32 in updates["float32"].items():
        if o32.ndim != 2 or not np.any(o32):
            continue
        o16 = updates["bfloat16"][name]
        e32, lo32, hi32 = orthogonality(o32)
        e16, lo16, hi16 = orthogonality(o16)
        per_matrix[name] = {"shape": list(o32.shape), "orth_error_f32": e32, "orth_error_bf16": e16,
                            "sv_f32": [lo32, hi32], "sv_bf16": [lo16, hi16], "rel_diff": rel(o16, o32)}
    loss = eqx.filter_jit(lambda m: objective(m, latents2, key, dropout=False)[0])
    after = {}
    for name in ("float32", "bfloat16"):
        optimizer = make_optimizer(model, lr, name="muon", ns_dtype=name, platform="cpu")
        step, _ = jax.jit(optimizer.update)(grads, optimizer.init(model), model)
        after[name] = float(loss(eqx.apply_updates(model, step)))
    before = float(loss(model))
    return {"matrices": per_matrix, "loss_before": before, "loss_after_one_muon_step": after,
            "delta": {k: v - before for k, v in after.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/bf16_study")
    parser.add_argument("--train-args", default="")
    parser.add_argument("--at-step", type=int, default=None, help="the last saved step to read (default: the newest)")
    args = parser.parse_args()
    from elf_eqx.io.storage import local_path
    out = local_path(args.output_dir, "--output-dir")
    cfg = parse_train_config(train_args("float32", out, shlex.split(args.train_args)))
    run = build_run(cfg)
    objective = cfg.objective.objective()
    key = jax.random.key(11)
    batch, batch2 = run.next_batch(), run.next_batch()
    latents, latents2 = run.latent_encoder(batch, key), run.latent_encoder(batch2, key)

    result = {"weights": weight_statistics(out, args.at_step or cfg.optimizer.max_steps)}
    steps = result["weights"]["steps"]
    final = load_model_from_checkpoint(out / "float32", "model", step=steps[-1])
    result["activations"] = activation_statistics(final, run, batch, key)
    result["gradients"] = gradient_statistics(final, objective, latents, key)
    result["newton_schulz"] = {}
    for s in (steps[0], steps[len(steps) // 2], steps[-1]):
        model = load_model_from_checkpoint(out / "float32", "model", step=s)
        _, grads = loss_and_grads(objective, model, latents, key)
        result["newton_schulz"][s] = newton_schulz_statistics(model, grads, objective, latents2, key,
                                                              cfg.optimizer.learning_rate)
    (out / "probe.json").write_text(json.dumps(result, indent=1) + "\n")
    run.close()


if __name__ == "__main__":
    main()
