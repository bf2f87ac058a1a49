"""The producer of training steps: a run built from its config (data, frozen encoder, mesh,
optimizer, compiled step), its state restored from the newest readable checkpoint into a sharded
abstract template or initialised in place on the mesh, and :meth:`Trainer.steps`, a generator of
:class:`~elf_eqx.training.hooks.StepInfo` that the hooks of :mod:`elf_eqx.training.hooks` act on."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from elf_eqx.config import ELFConfig
from elf_eqx.encoders.latent_encoder import TokenBatch
from elf_eqx.errors import MeshError
from elf_eqx.families import Family
from elf_eqx.model import count_params
from elf_eqx.parallel.mesh import batch_sharding, batch_split, check_global_batch, make_mesh
from elf_eqx.parallel.partition import replicated_shardings, tree_shardings
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.compute import training_compute
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.hooks import CheckpointHook, Hook, MetricsHook, SampleHook, Schedule, StepInfo
from elf_eqx.training.metrics_log import MetricsLog
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.schedule import make_lr_schedule
from elf_eqx.training.setup import TrainingRun, build_run
from elf_eqx.training.state_sharding import train_state_shardings
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.step import TrainState, make_train_step


def abstract_on_mesh(tree: Any, shardings: Any) -> Any:
    """``tree``'s arrays (or ``ShapeDtypeStruct`` leaves) as ``ShapeDtypeStruct`` leaves carrying the
    matching sharding of ``shardings``: a template to restore into, or to compile against."""
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        if sharding is not None else leaf, tree, shardings, is_leaf=lambda x: x is None)


def restore_or_init(
    manager: CheckpointManager, init: Callable[[Any], TrainState], init_arg: Any, shardings: Any,
    resume_step: int | None, *, set_aside: bool,
) -> tuple[TrainState, dict[str, Any], int | None]:
    """``(state, saved metadata, step resumed from)``: the newest readable checkpoint (or
    ``resume_step``) restored straight into the sharded abstract state, else ``init(init_arg)`` (a
    key, or the weights to start from) built in place on the mesh (``None`` for the step and ``{}`` for the metadata). With
    ``set_aside`` (process 0) newer, superseded checkpoints are moved aside, so the resumed run can
    save their step numbers again."""
    if manager.all_steps() or resume_step is not None:
        template = abstract_on_mesh(eqx.filter_eval_shape(init, init_arg), shardings)
        (state, meta), start = manager.readable(lambda s: manager.restore(template, step=s), resume_step)
        if set_aside:
            manager.set_aside_after(start)
        return state, meta, start
    # Built in place on the mesh: no device (or host) ever holds the whole unsharded state.
    return jax.jit(init, out_shardings=shardings)(init_arg), {}, None


@dataclasses.dataclass(frozen=True)
class StepProgram:
    """The training step and everything it is compiled against, built without any data: the
    optimizer, the mesh, the state's initialiser and its shardings, the batch's and the frozen
    encoder's shardings, and the jitted step. A run (:class:`Trainer`) and a dry run
    (:mod:`elf_eqx.aot.train_plan`) build it the same way (:func:`build_step_program`)."""

    family: Family
    elf_config: ELFConfig
    optimizer: optax.GradientTransformation
    mesh: Mesh
    init: Callable[[Any], TrainState]
    init_arg: Any
    """What ``init`` starts from: a PRNG key (fresh weights), or the weights themselves (distillation)."""
    state_sharding: Any
    batch_sharding: NamedSharding
    encoder_sharding: Any
    teacher_sharding: Any
    step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]]

    def abstract_state(self) -> TrainState:
        """The state's shapes on the mesh (``ShapeDtypeStruct`` leaves with their shardings)."""
        return abstract_on_mesh(eqx.filter_eval_shape(self.init, self.init_arg), self.state_sharding)

    @staticmethod
    def token_batch(global_batch: int, length: int) -> TokenBatch:
        """A global token batch's shapes and dtypes (``ShapeDtypeStruct`` leaves)."""
        return jax.eval_shape(lambda: TokenBatch.from_numpy(collate_shapes(global_batch, length)))


def collate_shapes(batch: int, length: int) -> dict[str, np.ndarray]:
    """Zero arrays shaped like a collated batch of ``batch`` rows of ``length`` tokens."""
    return {"input_ids": np.zeros((batch, length), np.int32), "valid_mask": np.zeros((batch, length), bool),
            "cond_mask": np.zeros((batch, length), bool), "loss_mask": np.zeros((batch, length), bool)}


def build_step_program(cfg: TrainConfig, family: Family, elf_config: ELFConfig, mesh: Mesh, schedule: Any,
                       latent_encoder: Any, *, objective: Any = None, initial: eqx.Module | None = None,
                       teacher: eqx.Module | None = None) -> StepProgram:
    """The training step of ``cfg`` on ``mesh`` for a network of ``family`` with ``elf_config``, the
    learning-rate ``schedule`` and the frozen ``latent_encoder`` (concrete or abstract; ``None`` for
    the baselines): the optimizer, the shardings of state, batch and encoder, and the jitted step.
    A distillation gives its ``objective`` (default: the config's loss), the ``initial`` weights
    the state starts from (default: fresh ones from the run's seed) and the frozen ``teacher``
    the step takes as an argument. Errors (a batch that does not split over the mesh) name the flags."""
    opt = cfg.optimizer
    optimizer = make_optimizer(family.network_template(elf_config), schedule, name=opt.name, b1=opt.b1, b2=opt.b2,
                               weight_decay=opt.weight_decay, clip_norm=opt.clip_norm, platform=elf_config.platform,
                               share_newton_schulz=opt.share_newton_schulz)
    check_global_batch(opt.global_batch, mesh)
    if (opt.global_batch // opt.grad_accum) % batch_split(mesh):
        raise MeshError(f"micro-batches of {opt.global_batch // opt.grad_accum} (--global-batch / --grad-accum) "
                        f"do not split over the {batch_split(mesh)} devices of the data×fsdp axes")

    def init(start: Any) -> TrainState:
        model = start if initial is not None else family.build_network(elf_config, start)
        return TrainState.create(model, optimizer)

    init_arg = initial if initial is not None else jax.random.fold_in(jax.random.key(cfg.run.seed), 0)
    state_sharding = train_state_shardings(eqx.filter_eval_shape(init, init_arg), mesh,
                                           shard_optimizer_state=opt.shard_optimizer_state)
    teacher_sharding = None if teacher is None else tree_shardings(teacher, mesh)
    encoder_sharding = None
    if latent_encoder is not None:  # ELF's frozen encoder; the baselines read tokens
        encoder_sharding = (tree_shardings(latent_encoder, mesh, tensor_rules=False) if cfg.mesh.shard_encoder
                            else replicated_shardings(latent_encoder, mesh))
    split = batch_sharding(mesh)
    loss = objective if objective is not None else cfg.objective.loss(elf_config.vocab_size)
    step_fn = make_train_step(loss, optimizer, ema_decay=opt.ema_decay, grad_accum=opt.grad_accum,
                              state_sharding=state_sharding, batch_sharding=split, encoder_sharding=encoder_sharding,
                              teacher_sharding=teacher_sharding)
    return StepProgram(family, elf_config, optimizer, mesh, init, init_arg, state_sharding, split, encoder_sharding,
                       teacher_sharding, step_fn)


@dataclasses.dataclass
class Trainer:
    """A training run ready to step (see :meth:`build`)."""

    cfg: TrainConfig
    run: TrainingRun
    mesh: Mesh
    learning_rate: Callable[[int], float]
    total_steps: int
    key: jax.Array
    """The run's base PRNG key: ``key(seed)`` on a fresh start, the saved one on resume."""
    manager: CheckpointManager
    state: TrainState
    start: int | None
    """The checkpoint step resumed from (``None``: a fresh start)."""
    step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    batch_sharding: NamedSharding
    latent_encoder: Any
    per_step: dict[str, int | float]
    """One step's ``tokens`` and ``train_flops`` (:func:`~elf_eqx.training.compute.training_compute`)."""
    teacher: Any = None
    """A distillation's frozen teacher, on the mesh (an argument of every step)."""

    @property
    def out(self) -> Path:
        return Path(self.cfg.run.output_dir)

    @staticmethod
    def build(cfg: TrainConfig, *, objective: Any = None, initial: eqx.Module | None = None,
              teacher: eqx.Module | None = None, record: dict[str, Any] | None = None,
              compute: Callable[[TrainingRun], dict[str, int | float]] | None = None) -> "Trainer":
        """Build the run's data, encoder, mesh, optimizer and compiled step; restore its state (the
        data position and key with it) or initialise it. A distillation round gives its
        ``objective``, the ``initial`` student weights, the ``teacher``, what its checkpoints
        record beside the run config (``record``) and its ``compute(run)`` per step (see
        :func:`build_step_program`)."""
        opt, r = cfg.optimizer, cfg.run
        run = build_run(cfg)
        total_steps = opt.max_steps or max(1, math.ceil(opt.epochs * run.steps_per_epoch))
        warmup = opt.warmup_steps if opt.warmup_steps is not None else round(opt.warmup_epochs * run.steps_per_epoch)
        schedule = make_lr_schedule(opt.learning_rate, total_steps, min(warmup, total_steps), opt.lr_schedule)
        program = build_step_program(cfg, run.family, run.elf_config, make_mesh(cfg.mesh.config), schedule,
                                     run.latent_encoder, objective=objective, initial=initial, teacher=teacher)
        latent_encoder = None
        if run.latent_encoder is not None:
            latent_encoder = jax.device_put(run.latent_encoder, program.encoder_sharding)
        if teacher is not None:
            teacher = jax.device_put(teacher, program.teacher_sharding)
        manager = CheckpointManager(cfg.run.output_dir, max_to_keep=r.keep_checkpoints,
                                    run_config={**run.signature_config(cfg), **(record or {})})
        state, meta, start = restore_or_init(manager, program.init, program.init_arg, program.state_sharding,
                                             r.resume_step, set_aside=jax.process_index() == 0)
        key = jax.random.key(r.seed)
        if start is not None:
            run.loader.restore(meta["data"])
            key = meta.get("key", key)
        encoder_config = None if run.latent_encoder is None else run.latent_encoder.encoder.config
        per_step = compute(run) if compute is not None else training_compute(cfg, run.elf_config, 1, encoder_config)
        return Trainer(cfg, run, program.mesh, lambda s: float(schedule(s)), total_steps, key, manager, state, start,
                       program.step_fn, program.batch_sharding, latent_encoder, per_step, teacher)

    def steps(self, stop: StopRequest) -> Iterator[StepInfo]:
        """One :class:`StepInfo` per optimizer step until the run's length, or the step a stop
        signal arrives during (read once a step: a later signal waits for the next)."""
        step_key = jax.random.fold_in(self.key, 1)
        step = int(self.state.step)
        while step < self.total_steps:
            batch = self.run.next_batch(self.batch_sharding)
            self.state, metrics = self.step_fn(self.state, batch, step_key, self.latent_encoder, self.teacher)
            step += 1
            info = StepInfo(step, self.state, metrics, self.total_steps, stop.requested)
            yield info
            if info.stopping is not None:
                return

    def hooks(self) -> list[Hook]:
        """Metrics (and NaN checks, before any checkpoint), checkpoints, sample files, as the run config schedules them."""
        cfg, r, is_main = self.cfg, self.cfg.run, jax.process_index() == 0
        log = (MetricsLog(self.out, config=cfg.to_dict(), wandb=r.wandb, tensorboard=r.tensorboard,
                          resume_step=self.start or 0) if is_main else None)
        saves = Schedule(r.save_every)
        return [
            MetricsHook(log, log_every=r.log_every, flush=(Schedule(r.log_every), saves),
                        learning_rate=self.learning_rate, tokens_per_step=self.per_step["tokens"],
                        flops_per_step=self.per_step["train_flops"], initial_step=int(self.state.step),
                        total_steps=self.total_steps, show=is_main),
            CheckpointHook(self.manager, saves, lambda: {"data": self.run.loader.state()}, self.key),
            SampleHook(Schedule(cfg.sampling.every, at_stop=False),
                       lambda model, step: self.run.write_samples(model, step, self.out, cfg, self.mesh)),
        ]

    def describe(self) -> str:
        """One line: family, preset, parameters, steps, learning rate, FLOPs a step, mesh, processes."""
        cfg, flops = self.cfg, self.per_step["train_flops"]
        return (f"{self.run.family.name.upper()} {cfg.model.name}: {count_params(self.state.model):,} parameters, "
                f"{self.total_steps} steps, {self.run.steps_per_epoch} steps/epoch, lr {cfg.optimizer.learning_rate:g}, "
                f"{flops:.3g} FLOPs/step, mesh {dict(self.mesh.shape)}, {jax.process_count()} process(es)")

    def close(self) -> None:
        """Wait for a pending save, release the checkpoint manager, stop a prefetching loader."""
        self.manager.close()
        self.run.close()
