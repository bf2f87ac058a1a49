"""A training config made ready to compile for a target, without its data: the same step a real
run builds (:func:`elf_eqx.training.trainer.build_step_program`: config resolution, mesh, shardings,
remat, grad accumulation, frozen encoder) from the shapes of its tokenizer and encoder
(:mod:`elf_eqx.aot.run_shapes`), with ``auto`` settings resolved for the target (:func:`runtime_for`).

XLA counts a ``lax.scan`` body once in its FLOPs and time estimate, so where the target has a cost
model (TPU) twins of the step with their layer scans unrolled are compiled too, for the FLOPs and the
estimate only: two shallow ones scaled to the depth (:mod:`elf_eqx.aot.twin`), or with ``full_twin``
the whole depth; memory is always the real program's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from elf_eqx.aot.analysis import analyze
from elf_eqx.aot.compile import CompiledProgram, abstract, compile_for_target, per_device_bytes, target_mesh
from elf_eqx.aot.kernels import pallas_backward_correction
from elf_eqx.aot.run_shapes import SourceShapes, source_shapes
from elf_eqx.aot.targets import Target
from elf_eqx.aot.twin import scaled_costs, twin_options, update_program
from elf_eqx.config import ComputeDtype, ELFConfig, resolve_compute_dtype
from elf_eqx.encoders.latent_encoder import LatentEncoder
from elf_eqx.parallel.mesh import batch_split
from elf_eqx.training.compute import training_compute
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.optim import muon_flops, newton_schulz_plan
from elf_eqx.training.schedule import make_lr_schedule
from elf_eqx.training.trainer import StepProgram, build_step_program


def abstract_key() -> jax.ShapeDtypeStruct:
    """A typed PRNG key, abstract (traced, not made: importing this module starts no backend)."""
    return jax.eval_shape(lambda: jax.random.key(0))


def runtime_for(target: Target, compute_dtype: ComputeDtype) -> dict[str, str]:
    """The runtime options a network compiled for ``target`` runs with: ``compute_dtype`` with
    ``auto`` resolved for the target's backend (not this machine's) and the target's platform,
    which resolves ``attention: auto`` (:func:`elf_eqx.nn.attention.choose_attention`)."""
    return {"compute_dtype": jnp.dtype(resolve_compute_dtype(compute_dtype, target.backend)).name,
            "platform": target.platform}


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """A training config made ready to compile for a target: its network, encoder and data shapes."""

    cfg: TrainConfig
    target: Target
    shapes: SourceShapes
    elf_config: ELFConfig
    encoder: LatentEncoder | None
    epoch_rows: int | None = None
    """Rows in an epoch of the run's data, when known (for the time per epoch)."""
    estimate: bool = True
    """Compile unrolled twins of a scanned step for the compiler's FLOPs and time (TPU)."""
    full_twin: bool = False
    """Estimate from the step unrolled at full depth, not from shallow twins scaled to it."""

    @staticmethod
    def of(cfg: TrainConfig, target: Target, *, epoch_rows: int | None = None, estimate: bool = True,
           full_twin: bool = False) -> "TrainPlan":
        """Read the shapes of ``cfg``'s tokenizer and encoder; resolve ``auto`` for ``target``."""
        family = cfg.objective.model_family
        shapes = source_shapes(cfg.data.tokenizer_source, cfg.data.encoder if family.uses_encoder else None)
        runtime = runtime_for(target, cfg.model.compute_dtype)
        dim = shapes.encoder_dim or ELFConfig.encoder_dim
        elf_config = dataclasses.replace(cfg.elf_config(dim, shapes.vocab_size), **runtime)
        encoder = None
        if family.uses_encoder:
            d = cfg.data
            encoder = LatentEncoder(shapes.abstract_encoder(), d.latent_mean, d.latent_std,
                                    cfg.objective.label_drop_prob, runtime["compute_dtype"],
                                    unroll_layers=cfg.model.scan_unroll)
        return TrainPlan(cfg, target, shapes, elf_config, encoder, epoch_rows, estimate, full_twin)

    def with_batch(self, global_batch: int) -> "TrainPlan":
        """The same plan at another global batch."""
        optimizer = dataclasses.replace(self.cfg.optimizer, global_batch=global_batch)
        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, optimizer=optimizer))

    def at_depth(self, depth: int) -> "TrainPlan":
        """The same plan for a network of ``depth`` layers (the shallow twins of the estimate)."""
        return dataclasses.replace(self, elf_config=dataclasses.replace(self.elf_config, depth=depth))

    def _encoder(self, unrolled: bool) -> LatentEncoder | None:
        if self.encoder is not None and unrolled:
            return dataclasses.replace(self.encoder, unroll_layers=True)
        return self.encoder

    def program(self, *, unrolled: bool = False) -> StepProgram:
        """The training step's program on the target's mesh (``unrolled``: every layer scan unrolled)."""
        cfg, opt = self.cfg, self.cfg.optimizer
        elf_config = dataclasses.replace(self.elf_config, scan_unroll=True) if unrolled else self.elf_config
        total = opt.max_steps or 1000  # the schedule's length changes its constants, not the program
        warmup = opt.warmup_steps if opt.warmup_steps is not None else total // 10
        schedule = make_lr_schedule(opt.learning_rate, total, min(warmup, total), opt.lr_schedule)
        mesh = target_mesh(self.target, cfg.mesh.config)
        return build_step_program(cfg, cfg.objective.model_family, elf_config, mesh, schedule,
                                  self._encoder(unrolled))

    def compile(self, *, unrolled: bool = False) -> tuple[CompiledProgram, tuple[Any, ...]]:
        """The training step compiled for the target (``unrolled``: every layer scan unrolled, as a
        twin for the estimate, :func:`~elf_eqx.aot.twin.twin_options`) and the sharded abstract
        arguments it was compiled against: ``(state, batch, key, objective, encoder)`` (the objective
        with its arrays, if any, abstract)."""
        cfg, opt = self.cfg, self.cfg.optimizer
        program = self.program(unrolled=unrolled)
        mesh, encoder = program.mesh, self._encoder(unrolled)
        state = program.abstract_state()
        batch = abstract(program.token_batch(opt.global_batch, cfg.data.max_length), program.batch_sharding)
        args = (state, batch, abstract_key(), program.abstract_objective(),
                None if encoder is None else abstract(encoder, program.encoder_sharding))
        options = twin_options(self.target) if unrolled else None
        return compile_for_target(program.step_fn, args, target=self.target, mesh=mesh, compiler_options=options), args

    def kernel_correction(self, compiled: CompiledProgram) -> float | None:
        """Seconds the cost model misses for the Pallas attention backward passes of one step
        (:mod:`elf_eqx.aot.kernels`), ``None`` when the blocks run another attention kernel."""
        config = self.elf_config
        if config.attention_kernel(training=True) != "pallas":
            return None
        opt = self.cfg.optimizer
        micro = opt.global_batch // opt.grad_accum
        family = self.cfg.objective.model_family
        if family.uses_encoder:  # the denoise and the decode rows each take a forward-backward pass
            groups, per_group = self.cfg.objective.objective().split_sizes(micro)
            rows, tokens = [micro - groups * per_group, groups * per_group], self.cfg.data.max_length + config.num_prefix_tokens
        else:
            rows, tokens = [micro], self.cfg.data.max_length
        split = batch_split(compiled.mesh)
        per_device = [-(-r // split) for r in rows] * opt.grad_accum
        return pallas_backward_correction(self.target, per_device, tokens=tokens, heads=config.num_heads,
                                          head_dim=config.head_dim, dtype=config.dtype,
                                          layers=config.depth)["correction_s"]

    def report(self) -> dict[str, Any]:
        """Compile and report the step (:func:`elf_eqx.aot.analysis.analyze`)."""
        cfg, opt = self.cfg, self.cfg.optimizer
        compiled, (state, batch, _, _, encoder) = self.compile()
        costed = self.estimate and self.target.has_cost_model and compiled.compiled is not None
        estimate = scaled = None  # an unrolled program (--scan-unroll) is counted in full; a scanned one needs twins
        if costed and not self.elf_config.scan_unroll:
            if self.full_twin:
                estimate = self.compile(unrolled=True)[0]
            else:
                scaled = scaled_costs(self.elf_config.depth, lambda k: self.at_depth(k).compile(unrolled=True)[0],
                                      lambda k: update_program(self.at_depth(k).program(), self.target, opt.ema_decay))
        per_step = training_compute(cfg, self.elf_config, 1, self.shapes.encoder_config)
        template = cfg.objective.model_family.network_template(self.elf_config)
        optimizer_flops = muon_flops(template) if opt.name == "muon" else 0.0
        shared = opt.name == "muon" and opt.share_newton_schulz and compiled.device_count > 1
        correction = self.kernel_correction(compiled) if costed else None
        report = analyze(compiled, self.target, program="train", global_batch=opt.global_batch,
                         analytic_flops=per_step["train_flops"], tokens_per_step=per_step["tokens"],
                         steps_per_epoch=None if self.epoch_rows is None else self.epoch_rows // opt.global_batch,
                         param_bytes_per_device=per_device_bytes(state.model),
                         opt_state_bytes_per_device=per_device_bytes(state.opt_state), cost_program=estimate,
                         cost_figures=None if scaled is None else scaled[0], kernel_correction_s=correction,
                         costed=costed)
        report.update(ema_bytes_per_device=per_device_bytes(state.ema), batch_bytes_per_device=per_device_bytes(batch),
                      encoder_bytes_per_device=per_device_bytes(encoder) if encoder is not None else 0)
        if estimate is not None:
            report["estimate_compile_s"] = estimate.compile_s
            report["estimate_memory_gib_per_device"] = analyze(estimate, self.target)["memory_gib_per_device"]
        if scaled is not None:
            report["estimate_compile_s"] = scaled[1]["compile_s"]
            report["scaled_twin"] = scaled[1]
        return {**report, "analytic_optimizer_flops": optimizer_flops,
                "analytic_total_flops": per_step["train_flops"] + optimizer_flops, "model": cfg.model.name,
                "family": cfg.objective.family, "length": cfg.data.max_length, "scan_unroll": self.elf_config.scan_unroll,
                "mesh": dict(compiled.mesh.shape), "compute_dtype": self.elf_config.compute_dtype,
                "attention": self.elf_config.attention_kernel(training=True), "remat": self.elf_config.remat,
                "grad_accum": opt.grad_accum, "share_newton_schulz": opt.share_newton_schulz,
                "shard_optimizer_state": opt.shard_optimizer_state,
                "newton_schulz": newton_schulz_plan(template, compiled.device_count).summary() if shared else None,
                "notes": [*self.shapes.notes, *report["notes"]]}


