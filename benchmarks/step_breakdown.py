"""Where the training step's time goes, on the TPU compiler's own estimate (no TPU needed).

Compiles, for a compile-only target, the pieces of one training step at the step's own shapes and
settings (the same config resolution as ``--dry-run``: preset, batch, remat, compute dtype and
attention resolved for the target), each with its layer loops unrolled so that XLA's cost model
counts every layer, and reports each piece's FLOPs and estimated time next to the whole step's:

- ``encoder``: the frozen encoder's forward pass on the batch;
- ``denoise branch``: its rows' no-gradient self-conditioning pass and forward-backward pass;
- ``decode branch``: its rows' forward-backward pass (blocks and the vocabulary head);
- ``attention``: the attention cores inside both branches (every layer, every pass);
- ``decode head``: the vocabulary head's forward-backward on the decode rows;
- ``optimizer``: the optimizer's update (Muon: Newton–Schulz on every matrix);
- ``EMA``: the weights' moving average;
- the rest of the step (loss assembly, clipping, state updates) as the whole minus the pieces.

Every figure is the compiler's estimate for the target, never a measured time.

    python benchmarks/step_breakdown.py --preset owt_elf_b --global-batch 16 --target v5p:1x1x1
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from elf_eqx.aot.analysis import analyze
from elf_eqx.aot.compile import compile_for_target, target_mesh
from elf_eqx.aot.kernels import pallas_backward_correction
from elf_eqx.aot.targets import parse_target
from elf_eqx.aot.train_plan import TrainPlan, abstract_key
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.errors import ConfigError
from elf_eqx.io.atomic import write_text_atomic
from elf_eqx.nn.attention import choose_attention, explicit_attention, fused_attention, pallas_attention
from elf_eqx.objective import LatentBatch
from elf_eqx.training.config import parse_train_config
from elf_eqx.training.step import ema_update


def _latents(batch: int, length: int, dim: int) -> LatentBatch:
    return jax.eval_shape(lambda: LatentBatch.unconditional(jnp.zeros((batch, length, dim)),
                                                            jnp.zeros((batch, length), jnp.int32),
                                                            jnp.ones((batch, length), bool)))


def _attention_core(kernel: str):
    """The attention core the blocks run (``kernel`` resolved for the target), ``(q, k, v) → out``."""
    if kernel == "pallas":
        return lambda q, k, v, scale: pallas_attention(q, k, v, scale)
    if kernel == "cudnn":
        return lambda q, k, v, scale: fused_attention(q, k, v, scale)
    return lambda q, k, v, scale: explicit_attention(q, k, v, scale)


def pieces(plan: TrainPlan) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """``{name: (function, abstract arguments)}`` for each piece of the step."""
    cfg, config = plan.cfg, dataclasses.replace(plan.elf_config, scan_unroll=True)
    family = cfg.objective.model_family
    if not family.uses_encoder:
        raise ConfigError("the step breakdown is for ELF runs (--objective elf)")
    objective = cfg.objective.loss(config.vocab_size)
    batch, length = cfg.optimizer.global_batch // cfg.optimizer.grad_accum, cfg.data.max_length
    groups, per_group = objective.split_sizes(batch)
    n_dec = groups * per_group
    n_den = batch - n_dec
    model = family.network_template(config)
    dim, heads = config.encoder_dim, config.num_heads
    tokens = length + config.num_prefix_tokens
    kernel = choose_attention(config.attention, config.platform, config.dtype, config.head_dim)
    core = _attention_core(kernel)
    qkv = lambda rows: jax.ShapeDtypeStruct((rows, tokens, heads, config.head_dim), config.dtype)  # noqa: E731
    scale = config.head_dim**-0.5
    out: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    encoder = dataclasses.replace(plan.encoder, unroll_layers=True)
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    out["encoder"] = (lambda enc, ids, key: enc(_token_batch(ids), key).x, (encoder, ids, abstract_key()))
    if n_den:
        out["denoise branch"] = (lambda m, b, k: eqx.filter_value_and_grad(
            lambda m: objective.denoise_loss(m, b, k))(m), (model, _latents(n_den, length, dim), abstract_key()))
    if n_dec:
        out["decode branch"] = (lambda m, b, k: eqx.filter_value_and_grad(
            lambda m: objective.decode_loss(m, b, k))(m), (model, _latents(n_dec, length, dim), abstract_key()))

    def attention_passes(q, k, v, q2, k2, v2):
        fwd = core(q, k, v, scale)  # the denoise rows' no-gradient pass
        grad_den = jax.grad(lambda q, k, v: jnp.sum(core(q, k, v, scale).astype(jnp.float32)), (0, 1, 2))(q, k, v)
        grad_dec = jax.grad(lambda q, k, v: jnp.sum(core(q, k, v, scale).astype(jnp.float32)), (0, 1, 2))(q2, k2, v2)
        return fwd, grad_den, grad_dec

    out["attention (one layer)"] = (attention_passes, (qkv(n_den), qkv(n_den), qkv(n_den), qkv(n_dec), qkv(n_dec),
                                                      qkv(n_dec)))
    hidden = jax.ShapeDtypeStruct((n_dec, length, config.hidden_size), config.dtype)
    out["decode head"] = (lambda m, h: eqx.filter_grad(lambda m, h: jnp.sum(m.decode_head(h)))(m, h), (model, hidden))
    program_optimizer = plan_optimizer(plan)
    grads = jax.eval_shape(lambda m: jax.tree.map(jnp.zeros_like, m), model)
    opt_state = jax.eval_shape(program_optimizer.init, model)
    out["optimizer"] = (lambda g, s, m: program_optimizer.update(g, s, m), (grads, opt_state, model))
    out["EMA"] = (lambda e, m: ema_update(e, m, cfg.optimizer.ema_decay), (model, model))
    return out


def pallas_corrections(plan: TrainPlan) -> dict[str, float]:
    """Seconds the cost model misses for the Pallas attention backward in each piece holding it."""
    config, cfg = plan.elf_config, plan.cfg
    batch = cfg.optimizer.global_batch // cfg.optimizer.grad_accum
    groups, per_group = cfg.objective.objective().split_sizes(batch)
    n_dec = groups * per_group

    def correction(rows: int) -> float:
        return pallas_backward_correction(plan.target, [rows], tokens=cfg.data.max_length + config.num_prefix_tokens,
                                          heads=config.num_heads, head_dim=config.head_dim, dtype=config.dtype,
                                          layers=config.depth)["correction_s"]

    den, dec = correction(batch - n_dec), correction(n_dec)
    return {"denoise branch": den, "decode branch": dec, "attention": den + dec}


def _token_batch(ids):
    from elf_eqx.encoders.latent_encoder import TokenBatch

    mask = jnp.ones(ids.shape, bool)
    return TokenBatch(ids, mask, jnp.zeros(ids.shape, bool), mask)


def plan_optimizer(plan: TrainPlan) -> optax.GradientTransformation:
    """The run's optimizer (its schedule's constants do not matter to the program's cost)."""
    from elf_eqx.training.optim import make_optimizer

    opt = plan.cfg.optimizer
    model = plan.cfg.objective.model_family.network_template(plan.elf_config)
    return make_optimizer(model, opt.learning_rate, name=opt.name, b1=opt.b1, b2=opt.b2,
                          weight_decay=opt.weight_decay, clip_norm=opt.clip_norm)


def breakdown(argv: list[str], target_spelling: str, output: str | None) -> dict[str, Any]:
    """Compile the step and its pieces for the target; return (and print) the figures."""
    with flag_errors():
        cfg = parse_train_config([*argv, "--dry-run", "--target", target_spelling])
    target = parse_target(target_spelling)
    if target.device_count != 1:
        raise ConfigError(f"--target {target_spelling}: the breakdown compiles its pieces for one chip (e.g. v5p:1x1x1)")
    plan = TrainPlan.of(cfg, target)
    step = plan.report()
    mesh = target_mesh(target, cfg.mesh.config)
    corrections = pallas_corrections(plan) if step["attention"] == "pallas" else {}
    rows = {"step": {"flops": step["compiler_flops"], "seconds": step["estimate_s"],
                     "memory_gib": step["memory_gib_per_device"]}}
    for name, (fn, args) in pieces(plan).items():
        program = compile_for_target(fn, args, target=target, mesh=mesh)
        report = analyze(program, target)
        times = plan.elf_config.depth if name.startswith("attention") else 1
        seconds = None if report["compiler_estimate_s"] is None else report["compiler_estimate_s"] * times
        if seconds is not None and step["attention"] == "pallas":  # the backward kernels the cost model misses
            seconds += corrections.get(name.split(" (")[0], 0.0)
        rows[name.replace(" (one layer)", f" (× {times} layers)") if times > 1 else name] = {
            "flops": None if report["compiler_flops"] is None else report["compiler_flops"] * times,
            "seconds": seconds, "memory_gib": report["memory_gib_per_device"]}
    result = {"command": " ".join(argv), "target": target_spelling, "attention": step["attention"],
              "analytic_flops": step["analytic_flops"], "analytic_optimizer_flops": step["analytic_optimizer_flops"],
              "pieces": rows}
    lines = [f"{'piece':<28} {'compiler FLOPs':>15} {'estimate (s)':>13} {'share of step':>14}"]
    total = rows["step"]["seconds"] or 0.0
    for name, row in rows.items():
        share = f"{row['seconds'] / total:.1%}" if row["seconds"] and total else "–"
        flops = "–" if row["flops"] is None else f"{row['flops']:.3g}"
        secs = "–" if row["seconds"] is None else f"{row['seconds']:.4f}"
        lines.append(f"{name:<28} {flops:>15} {secs:>13} {share:>14}")
    print("\n".join(lines) + "\n(compiler estimates for one chip of " + target_spelling + "; the pieces overlap: "
          "the branches contain their attention and the decode branch its head)")
    if output:
        from elf_eqx.io.storage import user_path
        write_text_atomic(user_path(output, "--output"), json.dumps(result, indent=2) + "\n")
    return result


@cli_main
def main(argv: list[str]) -> None:
    """``step_breakdown.py [train flags] --target T [--output FILE]``."""
    target, output, rest = "v5p:1x1x1", None, []
    items = iter(argv)
    for item in items:
        if item == "--target":
            target = next(items)
        elif item == "--output":
            output = next(items)
        else:
            rest.append(item)
    jax.config.update("jax_platforms", "cpu")
    breakdown(rest, target, output)


if __name__ == "__main__":
    main(sys.argv[1:])
