"""The training loop: build the run, restore or initialise the state on the mesh, step, log,
checkpoint, sample, stop cleanly (``python -m elf_eqx.train`` is its command line)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import equinox as eqx
import jax
from tqdm.auto import tqdm

from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.families import build_network, network_template
from elf_eqx.training.compute import training_compute
from elf_eqx.model import count_params
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.schedule import make_lr_schedule
from elf_eqx.parallel.mesh import batch_sharding, batch_split, check_global_batch, make_mesh
from elf_eqx.parallel.partition import replicated_shardings, tree_shardings
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.metrics_log import MetricsLog
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.setup import TrainingRun, build_run
from elf_eqx.training.step import TrainState, make_train_step


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _check_finite(pending: list[tuple[int, dict]]) -> list[tuple[int, dict[str, float]]]:
    """Fetch the queued step metrics; raise naming the first step whose loss is not finite."""
    fetched = [(step, {k: float(v) for k, v in m.items()}) for step, m in jax.device_get(pending)]
    for step, m in fetched:
        if not math.isfinite(m["loss"]):
            raise NonFiniteLoss(f"loss is {m['loss']} at step {step}; stopping (the last saved checkpoint is kept)")
    return fetched


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) the training described by ``cfg``; returns the output directory."""
    opt, r = cfg.optimizer, cfg.run
    out = Path(r.output_dir)
    run: TrainingRun = build_run(cfg)
    is_main = jax.process_index() == 0
    family = run.family
    objective = cfg.objective.loss(run.elf_config.vocab_size)
    total_steps = opt.max_steps or max(1, math.ceil(opt.epochs * run.steps_per_epoch))
    warmup = opt.warmup_steps if opt.warmup_steps is not None else round(opt.warmup_epochs * run.steps_per_epoch)
    schedule = make_lr_schedule(opt.learning_rate, total_steps, min(warmup, total_steps), opt.lr_schedule)

    key = jax.random.key(r.seed)
    model_key = jax.random.fold_in(key, 0)
    abstract_model = network_template(family, run.elf_config)
    optimizer = make_optimizer(abstract_model, schedule, name=opt.name, b1=opt.b1, b2=opt.b2,
                               weight_decay=opt.weight_decay, clip_norm=opt.clip_norm)
    mesh = make_mesh(cfg.mesh.config)
    check_global_batch(opt.global_batch, mesh)
    if (opt.global_batch // opt.grad_accum) % batch_split(mesh):
        raise ValueError(f"micro-batches of {opt.global_batch // opt.grad_accum} (--global-batch / --grad-accum) "
                         f"do not split over the {batch_split(mesh)} devices of the data×fsdp axes")
    split = batch_sharding(mesh)

    def init_state(k: jax.Array) -> TrainState:
        return TrainState.create(build_network(family, run.elf_config, k), optimizer)

    # Built in place on the mesh: no device (or host) ever holds the whole unsharded state.
    state_sharding = tree_shardings(eqx.filter_eval_shape(init_state, model_key), mesh)
    state = jax.jit(init_state, out_shardings=state_sharding)(model_key)
    encoder_sharding = latent_encoder = None
    if run.latent_encoder is not None:  # ELF's frozen encoder; the baselines read tokens
        encoder_sharding = (tree_shardings(run.latent_encoder, mesh, tensor_rules=False) if cfg.mesh.shard_encoder
                            else replicated_shardings(run.latent_encoder, mesh))
        latent_encoder = jax.device_put(run.latent_encoder, encoder_sharding)

    manager = CheckpointManager(out, max_to_keep=r.keep_checkpoints, run_config=run.signature_config(cfg))
    start = None
    if manager.all_steps() or r.resume_step is not None:
        # The newest readable checkpoint (or --resume-step); damaged ones are reported and kept.
        template = state
        (state, meta), start = manager.readable(lambda s: manager.restore(template, step=s), r.resume_step)
        if is_main:
            manager.set_aside_after(start)  # superseded steps, so this run can save their numbers again
        run.loader.restore(meta["data"])
        if is_main:
            print(f"resumed from {out} at step {start}")
    step_fn = make_train_step(objective, optimizer, ema_decay=opt.ema_decay, grad_accum=opt.grad_accum,
                              state_sharding=state_sharding, batch_sharding=split, encoder_sharding=encoder_sharding)
    step_key = jax.random.fold_in(key, 1)
    log = (MetricsLog(out, config=cfg.to_dict(), wandb=r.wandb, tensorboard=r.tensorboard, resume_step=start or 0)
           if is_main else None)
    per_step = training_compute(cfg, run.elf_config, 1,
                                None if run.latent_encoder is None else run.latent_encoder.encoder.config)
    tokens_per_step, flops_per_step = per_step["tokens"], per_step["train_flops"]
    if is_main and start is None:
        print(f"{family.upper()} {cfg.model.name}: {count_params(state.model):,} parameters, {total_steps} steps, "
              f"{run.steps_per_epoch} steps/epoch, lr {opt.learning_rate:g}, {flops_per_step:.3g} FLOPs/step, "
              f"mesh {dict(mesh.shape)}, {jax.process_count()} process(es)")

    step = int(state.step)
    pending: list[tuple[int, dict]] = []
    last_time, last_step = time.perf_counter(), step

    def save(step: int) -> None:
        manager.save(step, state, {"data": run.loader.state()}, key=key)

    try:
        with StopRequest() as stop, tqdm(total=total_steps, initial=step, disable=not is_main, dynamic_ncols=True) as bar:
            while step < total_steps:
                batch = run.next_batch(split)
                state, metrics = step_fn(state, batch, step_key, latent_encoder)
                step += 1
                pending.append((step, metrics))
                stopping = stop.requested  # read once: a signal landing later in this iteration waits for the next
                at_end = step == total_steps or stopping is not None
                if step % r.log_every == 0 or at_end or step % r.save_every == 0:
                    fetched = _check_finite(pending)
                    pending.clear()
                    now = time.perf_counter()
                    tok_s = tokens_per_step * (step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    lr = float(schedule(step - 1))
                    for s, m in fetched:
                        if log is not None and (s % r.log_every == 0 or s == step):
                            log.write(s, {**m, "lr": float(schedule(s - 1)), "tokens_per_s": tok_s,
                                          "tokens": s * tokens_per_step, "train_flops": s * flops_per_step})
                    last = fetched[-1][1]
                    shown = {k: f"{v:.4f}" for k, v in last.items() if k in ("loss", "l2", "ce")}
                    bar.set_postfix(**shown, lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")
                bar.update(1)
                if step % r.save_every == 0 or at_end:
                    save(step)
                if step % cfg.sampling.every == 0 or step == total_steps:  # every process samples; 0 writes
                    run.write_samples(state.ema, step, out, cfg, mesh)
                if stopping is not None:
                    if is_main:
                        print(f"{stopping}: saved step {step} to {out}; exiting")
                    break
    finally:
        manager.close()  # waits for a pending save
        if log is not None:
            log.close()
    return out
