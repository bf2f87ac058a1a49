"""The sampler grid and model bookkeeping of the benchmark sweeps (``benchmarks/steps_vs_ppl.py``
for unconditional models, ``benchmarks/conditional_scores.py`` for conditional ones): which
sampler settings a sweep runs for each family, how a row and its samples file are named, and each
model's training compute (docs/method.md#sampling, #baselines)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from elf_eqx.config import ComputeDtype
from elf_eqx.errors import ConfigError
from elf_eqx.encoders.load import load_encoder_config
from elf_eqx.families.ar import ARSettings
from elf_eqx.model import count_params
from elf_eqx.parallel.mesh import MeshConfig
from elf_eqx.sampler import SamplerMethod, SamplerSettings
from elf_eqx.sampling.settings import setting, setting_axis
from elf_eqx.sampling.settings_base import SamplerSettingsBase, StepsSetting
from elf_eqx.sampling.text import TextSampler
from elf_eqx.flops import distill_step_flops
from elf_eqx.training.compute import training_compute
from elf_eqx.training.run_directory import read_run_record


# A sweep's axes: tuples of a setting's values, typed and documented by the setting's declaration.
StepCounts = setting_axis(StepsSetting, "steps", note="Swept (ELF and MDLM; unused with --nfe):")
Methods = setting_axis(SamplerSettings, "method", note="Swept (ELF):")
Solvers = setting_axis(SamplerSettings, "solver", note="Swept (ELF):")
SdeNoises = setting_axis(SamplerSettings, "sde_noise", note="Swept (ELF SDE):")
Gammas = setting_axis(SamplerSettings, "gamma", note="Swept (ELF SDE):")
Omegas = setting_axis(SamplerSettings, "omega", note="Swept (ELF):")
CfgWeights = setting_axis(SamplerSettings, "cfg_weight", note="Swept (ELF):")
# Settings a sweep holds fixed for every configuration.
SweptTimeGrid = setting(SamplerSettings, "time_grid", note="Every ELF configuration's:")
SweptGridExponent = setting(SamplerSettings, "grid_exponent", note="Every ELF configuration's:")
SweptGridSeed = setting(SamplerSettings, "grid_seed", note="Every ELF configuration's:")
SweptTopP = setting(ARSettings, "top_p")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """The flags both sweeps share: the sampler grid (each family's ``sweep_settings`` reads it) and how the
    models are loaded and drawn from. Each sweep's config subclasses it and adds its own."""

    names: tuple[str, ...] | None = None
    """A short name per source for the tables and plots (default: each source's folder name)."""
    steps: StepCounts = (8, 16, 32, 64, 128)
    nfe: tuple[int, ...] | None = None
    """Network-evaluation budgets: each sampler runs the most steps whose NFE fit each budget
    (CFG's second pass counts)."""
    methods: Methods = typing.get_args(SamplerMethod)
    solvers: Solvers = (SamplerSettings.solver,)
    sde_noises: SdeNoises = (SamplerSettings.sde_noise,)
    gammas: Gammas = (SamplerSettings.gamma,)
    omegas: Omegas = (SamplerSettings.omega,)
    time_grid: SweptTimeGrid = SamplerSettings.time_grid
    grid_exponent: SweptGridExponent = SamplerSettings.grid_exponent
    grid_seed: SweptGridSeed = SamplerSettings.grid_seed
    top_p: SweptTopP = ARSettings.top_p
    batch_size: int = 32
    """Samples per compiled sampler call."""
    seed: int = 0
    """Same seed for every configuration."""
    weights: Literal["ema", "raw"] = "ema"
    """EMA or raw weights."""
    compute_dtype: ComputeDtype = "float32"
    """Matmul dtype of the networks (and of a conditional ELF's encoder)."""
    overwrite: bool = False
    """Replace earlier results in output_dir (otherwise an error)."""
    mesh_data: int = -1
    """Devices on the data axis (-1: all)."""


def sweep_settings(session: TextSampler, axes: SweepOptions,
                   cfg_weights: Sequence[float] = (1.0,)) -> list[SamplerSettingsBase]:
    """What a sweep draws from one model: a distilled student its own sampler (its steps, grid and
    ω: the one it was distilled for), any other model its family's grid of settings
    (:meth:`~elf_eqx.families.Family.sweep_settings`)."""
    if session.bundle.distillation is not None:
        return [session.bundle.sampling]
    return session.bundle.family.sweep_settings(axes, cfg_weights)


def model_names(sources: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """One short name per source: ``names``, or each source's folder name."""
    if names is not None:
        if len(names) != len(sources):
            raise ConfigError(f"--names gives {len(names)} names for {len(sources)} sources")
        return list(names)
    return [Path(source.rstrip("/")).name or source for source in sources]


def open_models(
    sources: Sequence[str], options: SweepOptions, *, conditional: bool, hint: str, length: int | None = None
) -> list[TextSampler]:
    """Open every source for sampling (``options``' weights, dtype and data mesh); a source that is
    not ``conditional`` as required is an error ending with ``hint`` (where to take it instead)."""
    if not sources:
        raise ConfigError("give at least one model source")
    sessions = []
    for source in sources:
        session = TextSampler.open(source, weights=options.weights, compute_dtype=options.compute_dtype,
                                   length=length, mesh=MeshConfig(options.mesh_data, 1, 1))
        if session.conditional != conditional:
            kind = "a conditional" if session.conditional else "an unconditional"
            raise ConfigError(f"{source} is {kind} model; {hint}")
        sessions.append(session)
    return sessions


def model_compute(session: TextSampler, source: str) -> dict:
    """Training compute of one of our runs at the loaded step (see elf_eqx.training.compute) for an
    opened model; empty for releases. ELF's encoder passes are counted when its config.json can be
    read. A distilled student's is its own round's (:func:`elf_eqx.flops.distill_step_flops`; the
    teacher's and earlier rounds' compute is theirs)."""
    bundle = session.bundle
    if bundle.kind != "run" or bundle.step is None:
        return {}
    record, step = read_run_record(Path(source), bundle.step)
    cfg = record.run
    encoder_config = None
    if bundle.family.uses_encoder:
        try:
            encoder_config = load_encoder_config(record.encoder)
        except (OSError, ValueError) as err:
            print(f"note: {source}: encoder FLOPs not counted ({err})")
    if bundle.distillation is None:
        return training_compute(cfg, session.model.config, step, encoder_config)
    batch, length = cfg.optimizer.global_batch, cfg.data.max_length
    per_step = distill_step_flops(session.model.config, batch, length, bundle.distillation.decode_share,
                                  bundle.distillation.cfg_weight, encoder_config)
    return {"train_steps": step, "tokens": float(step * batch * length), "train_flops": step * per_step}


def model_entry(name: str, session: TextSampler, compute: dict) -> dict:
    """The models-table entry of one opened model: name, family, parameters, origin and its
    training ``compute`` (:func:`model_compute`)."""
    return {"model": name, "family": session.bundle.family.name, "parameters": count_params(session.model),
            "origin": session.bundle.origin, **compute}


def sampler_columns(name: str, setting: SamplerSettingsBase, session: TextSampler, records: Sequence[dict]) -> dict:
    """The columns of one sweep row that say what drew it: model, family, sampler label, the ELF
    sampler's settings (blank for the baselines, whose ``method`` is their family), steps (AR: its
    length), nominal NFE and the mean evaluations ``records`` report as made (MDLM's cache)."""
    family = session.bundle.family
    nfe = session.sampler(setting).nfe()
    used = [r["nfe_used"] for r in records if "nfe_used" in r]
    return {"model": name, "family": family.name, "sampler": family.sweep_label(setting),
            **family.sweep_columns(setting, nfe), "nfe": nfe, "nfe_used": sum(used) / len(used) if used else None}


def nfe_cell(row: dict) -> str:
    """A row's NFE, with the evaluations MDLM's cache actually made when fewer."""
    used = row.get("nfe_used")
    return f"{row['nfe']} ({used:.1f} made)" if used is not None and used < row["nfe"] else str(row["nfe"])


def compute_table(models: Sequence[dict], judge: bool = True) -> list[str]:
    """Markdown lines of the models' table: family, parameters, training steps, tokens, FLOPs,
    weights (and the judge column when ``judge``)."""
    tail = " judge |" if judge else ""
    lines = [f"| model | family | parameters | train steps | tokens | train FLOPs | weights |{tail}",
             "|---|---|---|---|---|---|---|" + ("---|" if judge else "")]
    for m in models:
        compute = [f"{m[k]:,.0f}" if m.get(k) is not None else "—" for k in ("train_steps", "tokens")]
        flops = f"{m['train_flops']:.3g}" if m.get("train_flops") is not None else "—"
        lines.append(f"| {m['model']} | {m['family']} | {m['parameters']:,} | {compute[0]} | {compute[1]} | "
                     f"{flops} | {m['origin']} |" + (f" {m['judge']} |" if judge else ""))
    return lines
