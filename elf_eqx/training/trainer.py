"""The producer of training steps: a run built from its config (data, frozen encoder, mesh,
optimizer, compiled step), its state restored from the newest readable checkpoint into a sharded
abstract template or initialised in place on the mesh, and :meth:`Trainer.steps`, a generator of
:class:`~elf_eqx.training.hooks.StepInfo` that the hooks of :mod:`elf_eqx.training.hooks` act on."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
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
from elf_eqx.io import storage
from elf_eqx.io.storage import AnyPath
from elf_eqx.model import count_params
from elf_eqx.parallel import agreement
from elf_eqx.parallel.mesh import batch_sharding, batch_split, check_global_batch, make_mesh, place_global
from elf_eqx.parallel.partition import replicated_shardings, tree_shardings
from elf_eqx.training.checkpoint import CheckpointManager
from elf_eqx.training.compute import training_compute
from elf_eqx.training.config import TrainConfig
from elf_eqx.observe.step_clock import StepStopwatch, Throughput
from elf_eqx.training.init_from import initial_weights
from elf_eqx.training.hooks import CheckpointHook, Hook, MetricsHook, SampleHook, Schedule, StepInfo, profile_hooks
from elf_eqx.training.metrics_log import MetricsLog
from elf_eqx.training.optim import make_optimizer
from elf_eqx.training.schedule import make_lr_schedule
from elf_eqx.training.run_record import DistillationRecord
from elf_eqx.training.setup import TrainingRun, build_run
from elf_eqx.training.state_sharding import train_state_shardings
from elf_eqx.training.stop_signal import StopRequest
from elf_eqx.training.step import TrainState, make_train_step, objective_parts, objective_shardings, place_objective


def abstract_on_mesh(tree: Any, shardings: Any) -> Any:
    """``tree``'s arrays (or ``ShapeDtypeStruct`` leaves) as ``ShapeDtypeStruct`` leaves carrying the
    matching sharding of ``shardings``: a template to restore into, or to compile against."""
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        if sharding is not None else leaf, tree, shardings, is_leaf=lambda x: x is None)


def restore_or_init(
    manager: CheckpointManager, init: Callable[[Any], TrainState], init_arg: Any, shardings: Any,
    resume_step: int | None,
) -> tuple[TrainState, dict[str, Any], int | None]:
    """``(state, saved metadata, step resumed from)``: the newest readable checkpoint (or
    ``resume_step``) restored straight into the sharded abstract state, else ``init(init_arg)`` (a
    key, or the weights to start from) built in place on the mesh (``None`` for the step and ``{}``
    for the metadata). Newer, superseded checkpoints are then moved aside, so the resumed run can
    save their step numbers again. Every process of a multi-process run takes the same branch and
    the same step (process 0's listing; see :meth:`CheckpointManager.readable` and
    :meth:`~CheckpointManager.set_aside_after`)."""
    if agreement.from_process_0("resume-or-init", bool(manager.all_steps()) or resume_step is not None):
        template = abstract_on_mesh(eqx.filter_eval_shape(init, init_arg), shardings)
        (state, meta), start = manager.readable(lambda s: manager.restore(template, step=s), resume_step)
        manager.set_aside_after(start)
        return state, meta, start
    if jax.process_count() > 1:
        manager.check_same_listing()
    # Built in place on the mesh: no device (or host) ever holds the whole unsharded state.
    return jax.jit(init, out_shardings=shardings)(init_arg), {}, None


@dataclasses.dataclass(frozen=True)
class StepProgram:
    """The training step and everything it is compiled against, built without any data: the
    optimizer, the mesh, the state's initialiser and its shardings, the objective and the shardings
    of its arrays, the batch's and the frozen encoder's shardings, and the jitted step. A run
    (:class:`Trainer`) and a dry run (:mod:`elf_eqx.aot.train_plan`) build it the same way
    (:func:`build_step_program`)."""

    family: Family
    elf_config: ELFConfig
    optimizer: optax.GradientTransformation
    mesh: Mesh
    init: Callable[[Any], TrainState]
    init_arg: Any
    """What ``init`` starts from: a PRNG key (fresh weights), or the weights themselves (distillation)."""
    state_sharding: Any
    objective: Any
    """The loss the step takes as its argument (:func:`~elf_eqx.training.step.make_train_step`)."""
    objective_sharding: Any
    batch_sharding: NamedSharding
    encoder_sharding: Any
    step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]]

    def abstract_state(self) -> TrainState:
        """The state's shapes on the mesh (``ShapeDtypeStruct`` leaves with their shardings)."""
        return abstract_on_mesh(eqx.filter_eval_shape(self.init, self.init_arg), self.state_sharding)

    def abstract_objective(self) -> Any:
        """The objective with its arrays as ``ShapeDtypeStruct`` leaves carrying their shardings."""
        arrays, rest = objective_parts(self.objective)
        return eqx.combine(abstract_on_mesh(arrays, self.objective_sharding), rest)

    @staticmethod
    def token_batch(global_batch: int, length: int) -> TokenBatch:
        """A global token batch's shapes and dtypes (``ShapeDtypeStruct`` leaves)."""
        return jax.eval_shape(lambda: TokenBatch.from_numpy(collate_shapes(global_batch, length)))


def place_weights(model: eqx.Module, shardings: Any) -> eqx.Module:
    """``model``'s concrete arrays placed with the matching sharding of ``shardings`` (a tree like
    ``model`` with a sharding on each array leaf): weights loaded on one device (a model source,
    a distillation's teacher), on every process, become global arrays on the run's mesh, whatever
    mesh they were trained on. Abstract leaves (a dry run) are left as they are."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    targets = treedef.flatten_up_to(shardings)  # the sharding (or None) at each leaf of the model
    placed = [place_global(leaf, target) if isinstance(leaf, jax.Array) and target is not None else leaf
              for leaf, target in zip(leaves, targets, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, placed)


def collate_shapes(batch: int, length: int) -> dict[str, np.ndarray]:
    """Zero arrays shaped like a collated batch of ``batch`` rows of ``length`` tokens."""
    return {"input_ids": np.zeros((batch, length), np.int32), "valid_mask": np.zeros((batch, length), bool),
            "cond_mask": np.zeros((batch, length), bool), "loss_mask": np.zeros((batch, length), bool)}


def build_step_program(cfg: TrainConfig, family: Family, elf_config: ELFConfig, mesh: Mesh, schedule: Any,
                       latent_encoder: Any, *, objective: Any = None,
                       initial: eqx.Module | None = None) -> StepProgram:
    """The training step of ``cfg`` on ``mesh`` for a network of ``family`` with ``elf_config``, the
    learning-rate ``schedule`` and the frozen ``latent_encoder`` (concrete or abstract; ``None`` for
    the baselines): the optimizer, the shardings of state, objective, batch and encoder, and the
    jitted step. ``objective`` is the loss the step takes (default: the config's; a distillation
    gives its own, which carries its teacher), ``initial`` the weights the state starts from
    (default: fresh ones from the run's seed). Errors (a batch that does not split over the mesh)
    name the flags."""
    opt = cfg.optimizer
    optimizer = make_optimizer(family.network_template(elf_config), schedule, name=opt.name, b1=opt.b1, b2=opt.b2,
                               weight_decay=opt.weight_decay, clip_norm=opt.clip_norm,
                               ns_dtype=elf_config.compute_dtype, platform=elf_config.platform,
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
    if initial is not None:  # weights loaded on one device: laid out on the mesh as the state holds them
        init_arg = place_weights(initial, state_sharding.model)
    encoder_sharding = None
    if latent_encoder is not None:  # ELF's frozen encoder; the baselines read tokens
        encoder_sharding = (tree_shardings(latent_encoder, mesh, tensor_rules=False) if cfg.mesh.shard_encoder
                            else replicated_shardings(latent_encoder, mesh))
    split = batch_sharding(mesh)
    loss = objective if objective is not None else cfg.objective.loss(elf_config.vocab_size)
    loss_sharding = objective_shardings(loss, mesh)
    step_fn = make_train_step(optimizer, ema_decay=opt.ema_decay, grad_accum=opt.grad_accum,
                              state_sharding=state_sharding, batch_sharding=split, objective_sharding=loss_sharding,
                              encoder_sharding=encoder_sharding)
    return StepProgram(family, elf_config, optimizer, mesh, init, init_arg, state_sharding, loss, loss_sharding, split,
                       encoder_sharding, step_fn)


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
    objective: Any
    """The loss every step takes, its arrays (a distillation's teacher) on the mesh."""
    batch_sharding: NamedSharding
    latent_encoder: Any
    per_step: dict[str, int | float]
    """One step's ``tokens`` and ``train_flops`` (:func:`~elf_eqx.training.compute.training_compute`)."""

    @property
    def out(self) -> AnyPath:
        """The output directory: a local folder or a bucket path (:mod:`elf_eqx.io.storage`)."""
        return storage.as_path(self.cfg.run.output_dir)

    @staticmethod
    def build(cfg: TrainConfig, *, objective: Any = None, initial: eqx.Module | None = None,
              distillation: DistillationRecord | None = None,
              compute: Callable[[TrainingRun], dict[str, int | float]] | None = None) -> "Trainer":
        """Build the run's data, encoder, mesh, optimizer and compiled step; restore its state (the
        data position and key with it) or initialise it. Another task than the config's trains
        through the same machinery by giving its ``objective`` (the loss the step takes, carrying any
        frozen network it needs), the ``initial`` weights, the ``distillation`` entry of its run
        record and its ``compute(run)`` per step (see :func:`build_step_program`). Without ``initial``, a
        fresh run starts from ``--init-from``'s weights when given (:mod:`elf_eqx.training.init_from`)."""
        opt, r = cfg.optimizer, cfg.run
        run = build_run(cfg)
        total_steps = opt.max_steps or max(1, math.ceil(opt.epochs * run.steps_per_epoch))
        warmup = opt.warmup_steps if opt.warmup_steps is not None else round(opt.warmup_epochs * run.steps_per_epoch)
        schedule = make_lr_schedule(opt.learning_rate, total_steps, min(warmup, total_steps), opt.lr_schedule)
        if initial is None and cfg.init.init_from is not None:  # --init-from: a trained model's weights
            initial = initial_weights(cfg.init, run.family, run.elf_config)
        program = build_step_program(cfg, run.family, run.elf_config, make_mesh(cfg.mesh.config), schedule,
                                     run.latent_encoder, objective=objective, initial=initial)
        latent_encoder = None
        if run.latent_encoder is not None:
            latent_encoder = jax.device_put(run.latent_encoder, program.encoder_sharding)
        manager = CheckpointManager(cfg.run.output_dir, max_to_keep=r.keep_checkpoints, async_save=r.async_save,
                                    run_record=run.run_record(cfg, distillation))
        state, meta, start = restore_or_init(manager, program.init, program.init_arg, program.state_sharding,
                                             r.resume_step)
        key = jax.random.key(r.seed)
        if start is not None:
            run.loader.restore(meta["data"])
            key = meta.get("key", key)
        encoder_config = None if run.latent_encoder is None else run.latent_encoder.encoder.config
        per_step = compute(run) if compute is not None else training_compute(cfg, run.elf_config, 1, encoder_config)
        return Trainer(cfg, run, program.mesh, lambda s: float(schedule(s)), total_steps, key, manager, state, start,
                       program.step_fn, place_objective(program.objective, program.objective_sharding),
                       program.batch_sharding, latent_encoder, per_step)

    def steps(self, stop: StopRequest) -> Iterator[StepInfo]:
        """One :class:`StepInfo` per optimizer step until the run's length, or the step ``stop``
        says is the last (:meth:`StopRequest.after_step`, asked once a step: the step a signal
        arrives during on one process; in a multi-process run the same step on every process)."""
        step_key = jax.random.fold_in(self.key, 1)
        step = int(self.state.step)
        stopwatch = StepStopwatch()
        while step < self.total_steps:
            (self.state, metrics), timing = stopwatch.step(
                step + 1, lambda: self.run.next_batch(self.batch_sharding),
                lambda batch: self.step_fn(self.state, batch, step_key, self.objective, self.latent_encoder))
            step += 1
            info = StepInfo(step, self.state, metrics, self.total_steps, stop.after_step(), timing)
            yield info
            if info.stopping is not None:
                return

    def hooks(self) -> list[Hook]:
        """Metrics (and NaN checks, before any checkpoint), checkpoints, sample files, as the run config schedules them."""
        cfg, r, is_main = self.cfg, self.cfg.run, jax.process_index() == 0
        log = (MetricsLog(self.out, config=cfg.to_dict(), wandb=r.wandb and r.wandb_settings,
                          tensorboard=r.tensorboard, resume_step=self.start or 0) if is_main else None)
        saves, samples = Schedule(r.save_every), Schedule(cfg.sampling.every, at_stop=False)
        profile = profile_hooks(r, int(self.state.step))
        return [
            MetricsHook(log, log_every=r.log_every, flush=(Schedule(r.log_every), saves),
                        sync=(samples, *(p.boundaries for p in profile)),
                        learning_rate=self.learning_rate, initial_step=int(self.state.step),
                        throughput=Throughput.of(self.per_step, list(self.mesh.devices.flat), r.peak_flops),
                        local_devices=self.mesh.local_devices, total_steps=self.total_steps, show=is_main),
            CheckpointHook(self.manager, saves, lambda: {"data": self.run.loader.state()}, self.key),
            SampleHook(samples, lambda model, step: self.run.write_samples(model, step, self.out, cfg, self.mesh), log),
            *profile,  # last: a trace starts after the other hooks of its step
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
