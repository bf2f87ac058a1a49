"""The sampler grid and model bookkeeping of the benchmark sweeps (``benchmarks/steps_vs_ppl.py``
for unconditional models, ``benchmarks/conditional_scores.py`` for conditional ones): which
sampler settings a sweep runs for each family, how a row and its samples file are named, and each
model's training compute (docs/method.md#sampling, #baselines)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from elf_eqx.encoders.load import load_encoder_config
from elf_eqx.families import uses_encoder
from elf_eqx.model import count_params
from elf_eqx.parallel.mesh import MeshConfig
from elf_eqx.release.model_source import run_record
from elf_eqx.sampling.settings import SamplerSettings
from elf_eqx.sampling.text import TextSampler
from elf_eqx.training.compute import training_compute
from elf_eqx.training.config import TrainConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """The flags both sweeps share: the sampler grid (:func:`configurations` reads it) and how the
    models are loaded and drawn from. Each sweep's config subclasses it and adds its own."""

    names: tuple[str, ...] | None = None
    """A short name per source for the tables and plots (default: each source's folder name)."""
    steps: tuple[int, ...] = (8, 16, 32, 64, 128)
    """Sampling step counts of ELF and MDLM (unused with --nfe)."""
    nfe: tuple[int, ...] | None = None
    """Network-evaluation budgets: each sampler runs the most steps whose NFE fit each budget
    (CFG's second pass counts)."""
    methods: tuple[Literal["ode", "sde"], ...] = ("ode", "sde")
    """ELF samplers to sweep."""
    solvers: tuple[Literal["euler", "heun", "dpm2m"], ...] = ("euler",)
    """ELF step rules to sweep."""
    sde_noises: tuple[Literal["reference", "consistent"], ...] = ("reference",)
    """SDE churn noises to sweep (ODE ignores them)."""
    gammas: tuple[float, ...] = (1.5,)
    """SDE churn values (ODE ignores them)."""
    omegas: tuple[float, ...] = (3.0,)
    """SC-CFG scales ω."""
    time_grid: Literal["logit_normal", "logit_normal_quantile", "uniform", "power"] = "logit_normal"
    """Time grid of every ELF configuration."""
    grid_exponent: float = 2.0
    """Exponent of the power grid."""
    grid_seed: int | None = None
    """Draw the logit-normal grid once from this seed for every batch (None: per batch, as released)."""
    top_p: float = 1.0
    """AR sources: nucleus sampling probability (1 = plain temperature-1 sampling)."""
    batch_size: int = 32
    """Samples per compiled sampler call."""
    seed: int = 0
    """Same seed for every configuration."""
    weights: Literal["ema", "raw"] = "ema"
    """EMA or raw weights."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Matmul dtype of the networks (and of a conditional ELF's encoder)."""
    overwrite: bool = False
    """Replace earlier results in output_dir (otherwise an error)."""
    mesh_data: int = -1
    """Devices on the data axis (-1: all)."""


def steps_for_nfe(setting: SamplerSettings, budget: int) -> int | None:
    """The most steps whose NFE fit ``budget`` for ``setting``'s sampler (``None`` if even one does not)."""
    if setting.replace(steps=1).nfe() > budget:
        return None
    steps = 1
    while setting.replace(steps=steps + 1).nfe() <= budget:
        steps += 1
    return steps


def configurations(axes: SweepOptions, family: str = "elf", cfg_weights: Sequence[float] = (1.0,)) -> list[SamplerSettings]:
    """Every sampler setting of the sweep for a model of ``family``, steps (or NFE budgets)
    innermost: ELF's samplers × ω × CFG weight; MDLM's ancestral sampler at each step count
    (budget); AR's one. With ``axes.nfe`` a CFG weight ≠ 1 halves the steps that fit a budget."""
    if family == "ar":
        return [SamplerSettings(top_p=axes.top_p)]
    if family == "mdlm":
        return [SamplerSettings(steps=n) for n in dict.fromkeys(axes.steps if axes.nfe is None else axes.nfe)]
    out = []
    for method in axes.methods:
        for solver in axes.solvers:
            for noise in axes.sde_noises if method == "sde" else ("reference",):
                for gamma in axes.gammas if method == "sde" else (0.0,):
                    for omega in axes.omegas:
                        for weight in cfg_weights:
                            base = SamplerSettings(method=method, gamma=gamma, omega=omega, cfg_weight=weight,
                                                   time_grid=axes.time_grid, solver=solver, sde_noise=noise,
                                                   grid_exponent=axes.grid_exponent, grid_seed=axes.grid_seed)
                            counts = axes.steps if axes.nfe is None else [steps_for_nfe(base, b) for b in axes.nfe]
                            for steps in dict.fromkeys(c for c in counts if c is not None):
                                out.append(base.replace(steps=steps))
    return out


def label(setting: SamplerSettings, family: str = "elf") -> str:
    """``"SDE γ=1.5 ω=3"`` / ``"ODE ω=3"`` (then the solver and ``consistent`` when not the
    reference's, ``CFG 2`` when guided), ``"MDLM ancestral"``, ``"AR"`` (``top-p=…``): one curve."""
    if family == "mdlm":
        return "MDLM ancestral"
    if family == "ar":
        return "AR" + (f" top-p={setting.top_p:g}" if setting.top_p < 1 else "")
    gamma = f" γ={setting.gamma:g}" if setting.method == "sde" else ""
    solver = "" if setting.solver == "euler" else f" {setting.solver}"
    noise = " consistent" if setting.method == "sde" and setting.sde_noise == "consistent" else ""
    guidance = f" CFG {setting.cfg_weight:g}" if setting.cfg_weight != 1.0 else ""
    return f"{setting.method.upper()}{gamma} ω={setting.omega:g}{solver}{noise}{guidance}"


def file_name(setting: SamplerSettings, family: str = "elf") -> str:
    """The samples file stem of one configuration, e.g. ``sde-g1.5-w3-steps32`` (``-heun``,
    ``-consistent``, ``-cfg2``), ``mdlm-steps32``, ``ar`` (``-p0.9``)."""
    if family != "elf":
        return setting.tag(family).replace("mdlm", "mdlm-steps")
    solver = "" if setting.solver == "euler" else f"-{setting.solver}"
    noise = "-consistent" if setting.method == "sde" and setting.sde_noise == "consistent" else ""
    guidance = f"-cfg{setting.cfg_weight:g}" if setting.cfg_weight != 1.0 else ""
    return f"{setting.method}-g{setting.gamma:g}-w{setting.omega:g}{solver}{noise}{guidance}-steps{setting.steps}"


def model_names(sources: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """One short name per source: ``names``, or each source's folder name."""
    if names is not None:
        if len(names) != len(sources):
            raise ValueError(f"--names gives {len(names)} names for {len(sources)} sources")
        return list(names)
    return [Path(source.rstrip("/")).name or source for source in sources]


def open_models(
    sources: Sequence[str], options: SweepOptions, *, conditional: bool, hint: str, length: int | None = None
) -> list[TextSampler]:
    """Open every source for sampling (``options``' weights, dtype and data mesh); a source that is
    not ``conditional`` as required is an error ending with ``hint`` (where to take it instead)."""
    if not sources:
        raise ValueError("give at least one model source")
    sessions = []
    for source in sources:
        session = TextSampler.open(source, weights=options.weights, compute_dtype=options.compute_dtype,
                                   length=length, mesh=MeshConfig(options.mesh_data, 1, 1))
        if session.conditional != conditional:
            kind = "a conditional" if session.conditional else "an unconditional"
            raise ValueError(f"{source} is {kind} model; {hint}")
        sessions.append(session)
    return sessions


def model_compute(session: TextSampler, source: str) -> dict:
    """Training compute of one of our runs at the loaded step (see elf_eqx.training.compute) for an
    opened model; empty for releases. ELF's encoder passes are counted when its config.json can be read."""
    bundle = session.bundle
    if bundle.kind != "run" or bundle.step is None:
        return {}
    record, step, _ = run_record(Path(source), bundle.step)
    run_config = record["run_config"]
    cfg = TrainConfig.from_dict(run_config.get("run") or {}, where=f"{source}: the stored run config")
    encoder_config = None
    if uses_encoder(bundle.family):
        try:
            encoder_config = load_encoder_config(run_config["encoder"])
        except (OSError, ValueError) as err:
            print(f"note: {source}: encoder FLOPs not counted ({err})")
    return training_compute(cfg, session.model.config, step, encoder_config)


def model_entry(name: str, session: TextSampler, compute: dict) -> dict:
    """The models-table entry of one opened model: name, family, parameters, origin and its
    training ``compute`` (:func:`model_compute`)."""
    return {"model": name, "family": session.bundle.family, "parameters": count_params(session.model),
            "origin": session.bundle.origin, **compute}


def sampler_columns(name: str, setting: SamplerSettings, session: TextSampler, records: Sequence[dict]) -> dict:
    """The columns of one sweep row that say what drew it: model, family, sampler label, the ELF
    sampler's settings (blank for the baselines, whose ``method`` is their family), steps (AR: its
    length), nominal NFE and the mean evaluations ``records`` report as made (MDLM's cache)."""
    family = session.bundle.family
    nfe = session.sampler(setting).nfe()
    used = [r["nfe_used"] for r in records if "nfe_used" in r]
    if family == "elf":
        elf = {"method": setting.method, "solver": setting.solver,
               "sde_noise": setting.sde_noise if setting.method == "sde" else "", "gamma": setting.gamma,
               "omega": setting.omega, "cfg_weight": setting.cfg_weight}
    else:
        elf = {"method": family, "solver": "", "sde_noise": "", "gamma": "", "omega": "", "cfg_weight": ""}
    return {"model": name, "family": family, "sampler": label(setting, family), **elf,
            "steps": nfe if family == "ar" else setting.steps, "nfe": nfe,
            "nfe_used": sum(used) / len(used) if used else None}


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
