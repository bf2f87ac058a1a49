"""Progressive distillation as rounds of training (docs/method.md#distillation).

Round ``r`` trains a student of ``n_r = from_steps / 2^r`` steps, initialised from its teacher (the
given run for the first round, the previous round's EMA after that), with
:class:`~elf_eqx.distillation.objective.DistillObjective`, which carries the teacher. Each round is
an ordinary training run in ``OUTPUT_DIR/steps_<n>``: the training machinery's step, checkpoints,
resume, metrics, sample files, SIGTERM handling, sharding and loop
(:class:`~elf_eqx.training.trainer.Trainer`, its hooks, :func:`~elf_eqx.training.loop.run_to_end`);
its run record is the teacher's with the student's sampler settings and a ``distillation`` entry, so
the student samples and sweeps like any run. ``OUTPUT_DIR/distillation.json`` records the rounds
and which are complete; rerunning the command resumes the first incomplete round.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from elf_eqx.io.storage import as_path, user_path
from elf_eqx.distillation.config import DistillConfig
from elf_eqx.distillation.objective import DistillObjective, nested_grids
from elf_eqx.errors import ConfigError, IncompatibleModelError
from elf_eqx.flops import distill_step_flops
from elf_eqx.distillation.manifest import Manifest, round_dir
from elf_eqx.release.model_source import ModelBundle, load_model_source
from elf_eqx.sampler import SamplerSettings
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.loop import run_to_end
from elf_eqx.training.run_directory import load_model_from_checkpoint
from elf_eqx.training.run_record import DistillationRecord
from elf_eqx.training.sections import InitSection, SamplingSection
from elf_eqx.training.trainer import Trainer

@dataclasses.dataclass(frozen=True)
class Teacher:
    """The distilled run: its weights, and the training config and layout it was trained with."""

    bundle: ModelBundle
    config: TrainConfig

    @staticmethod
    def load(cfg: DistillConfig) -> "Teacher":
        t = cfg.teacher
        if not t.teacher:
            raise ConfigError("give the teacher: a training run of ours (its output directory) or a converted release")
        bundle = load_model_source(t.teacher, weights=t.teacher_weights, step=t.teacher_step,
                                   revision=t.teacher_revision)
        if not bundle.family.uses_encoder or bundle.record is None:
            what = f"an {bundle.family.name.upper()} baseline" if not bundle.family.uses_encoder else "a release"
            raise IncompatibleModelError(f"teacher {t.teacher} is {what}; distillation needs an ELF run of ours or "
                                         "a model exported from one (convert a release first: python -m elf_eqx.convert)")
        run = bundle.record.run  # its data read with the encoder and tokenizer found here (a bundled copy)
        data = dataclasses.replace(run.data, encoder=bundle.encoder, tokenizer=bundle.tokenizer)
        return Teacher(bundle, dataclasses.replace(run, data=data))


def student_config(cfg: DistillConfig, teacher: Teacher, steps: int, index: int, omega: float) -> TrainConfig:
    """The training config of the round whose student has ``steps`` steps: the teacher's model,
    data layout and flow; this command's data, optimizer, mesh and run settings; the student's own
    sampler (Euler ODE, ``steps`` steps on the fixed grid, ω) for its sample files and as its default."""
    base, d = teacher.config, cfg.data
    data = dataclasses.replace(base.data, source=d.data or base.data.source,
                               data_split=d.data_split or base.data.data_split,
                               cache_dir=d.cache_dir or base.data.cache_dir, prefetch=d.prefetch)
    sampling = SamplingSection(method="ode", steps=steps, omega=omega, cfg_weight=1.0, time_grid=cfg.rounds.time_grid,
                               solver="euler", every=cfg.rounds.samples_every, num_samples=cfg.rounds.num_samples)
    optimizer = dataclasses.replace(cfg.optimizer, max_steps=cfg.rounds.steps_per_round)
    run = dataclasses.replace(cfg.run, output_dir=str(round_dir(as_path(cfg.run.output_dir), steps)),
                              seed=cfg.run.seed + index)
    objective = dataclasses.replace(base.objective, label_drop_prob=0.0)
    return dataclasses.replace(base, config=None, preset=None, data=data, objective=objective, optimizer=optimizer,
                               sampling=sampling, mesh=cfg.mesh, run=run, init=InitSection())


def distill(cfg: DistillConfig) -> Any:
    """Run (or resume) the rounds ``cfg`` describes; returns the output directory."""
    out = user_path(cfg.run.output_dir, "--output-dir")
    teacher = Teacher.load(cfg)
    own = teacher.bundle.sampling
    omega = cfg.rounds.omega if cfg.rounds.omega is not None else own.omega
    cfg_weight = cfg.rounds.cfg_weight if cfg.rounds.cfg_weight is not None else own.cfg_weight
    # --to-steps is not part of what is distilled: a later command may go on to fewer steps.
    identity = {"teacher": teacher.bundle.origin, "from_steps": cfg.rounds.from_steps,
                "time_grid": cfg.rounds.time_grid, "omega": omega, "cfg_weight": cfg_weight}
    manifest = Manifest(out, identity, cfg.rounds.student_steps)
    manifest.save()
    model, flow = teacher.bundle.model, teacher.bundle.flow
    is_main = jax.process_index() == 0
    for index, steps in enumerate(cfg.rounds.student_steps):
        where = round_dir(out, steps)
        if manifest.complete(steps):
            model = load_model_from_checkpoint(where, "ema")
            continue
        grid = SamplerSettings(time_grid=cfg.rounds.time_grid, steps=2 * steps).sampler(flow).grid(jax.random.key(0))
        student_grid, mid = nested_grids(grid)
        decode = dataclasses.replace(teacher.config.objective.objective(), flow=flow)
        objective = DistillObjective(model, student_grid, mid, flow, omega, cfg_weight, decode, cfg.rounds.decode_share)
        train_cfg = student_config(cfg, teacher, steps, index, omega)
        length, batch = train_cfg.data.max_length, train_cfg.optimizer.global_batch
        record = DistillationRecord(**manifest.identity, round=index + 1, steps=steps, teacher_steps=2 * steps,
                                    decode_share=cfg.rounds.decode_share)
        trainer = Trainer.build(train_cfg, objective=objective, initial=model, distillation=record,
                                compute=lambda run: {"tokens": float(batch * length), "train_flops": distill_step_flops(
                                    model.config, batch, length, objective.decode_share, objective.cfg_weight,
                                    run.latent_encoder.encoder.config)})
        if is_main:
            print(f"round {index + 1}: {2 * steps} → {steps} steps ({cfg.rounds.time_grid} grid, ω {omega:g}"
                  + (f", CFG {cfg_weight:g} learnt in one pass" if cfg_weight != 1.0 else "")
                  + (f"; resumed at step {trainer.start}" if trainer.start is not None else "") + f") in {where}")
        if run_to_end(trainer, f" of round {index + 1}"):
            return out
        manifest.save(steps)
        model = trainer.state.ema
    return out
