"""ELF: flow matching in the embedding space of a frozen text encoder (docs/method.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from elf_eqx.config import ELFConfig
from elf_eqx.families.base import Family
from elf_eqx.flops import elf_forward_flops, encoder_forward_flops
from elf_eqx.flow import FlowConstants
from elf_eqx.model import ELF
from elf_eqx.objective import FlowObjective
from elf_eqx.sampler import Condition, Sampler, SamplerSettings


def steps_for_nfe(setting: SamplerSettings, budget: int) -> int | None:
    """The most steps whose NFE fit ``budget`` for ``setting``'s sampler (``None`` if even one does not)."""
    if setting.replace(steps=1).nfe() > budget:
        return None
    steps = 1
    while setting.replace(steps=steps + 1).nfe() <= budget:
        steps += 1
    return steps


class ELFFamily(Family):
    name: ClassVar[str] = "elf"
    network: ClassVar[type] = ELF
    uses_encoder: ClassVar[bool] = True
    settings_class: ClassVar[type] = SamplerSettings

    def objective(self, section: Any, vocab_size: int) -> FlowObjective:
        """:class:`FlowObjective` of the section's hyperparameters and flow constants."""
        return section.objective()

    def train_step_flops(self, config: ELFConfig, batch: int, length: int, *, objective: Any = None,
                         encoder_config: Any = None) -> float:
        """Of the batch, ``B_dec`` samples decode (the ``objective``'s split) and the rest denoise.
        A denoise sample costs a no-grad pass plus a forward-backward (4 passes of body and denoise
        head; 5 when dropout adds the guided no-grad pass; with ``self_cond_draw="split"`` only the
        self-conditioned share takes the no-grad pass), a decode sample a forward-backward (3
        passes of body and decode head), and every sample one pass of the frozen encoder
        (``encoder_config``; none if not given)."""
        if objective is None:
            raise ValueError("ELF's step FLOPs need its FlowObjective (the denoise/decode split)")
        fwd = elf_forward_flops(config, length)
        groups, per_group = objective.split_sizes(batch)
        n_dec = groups * per_group
        n_den = batch - n_dec
        first_passes = n_den  # the no-gradient self-conditioning pass
        if objective.self_cond_draw == "split":
            first_passes = groups * round(objective.self_cond_prob * (n_den // groups))
        extra = n_den if (config.attn_dropout > 0 or config.proj_dropout > 0) else 0  # the guided pass
        flops = (3 * n_den + first_passes + extra) * (fwd["body"] + fwd["denoise_head"])
        flops += n_dec * 3 * (fwd["body"] + fwd["decode_head"])
        if encoder_config is not None:
            flops += batch * encoder_forward_flops(encoder_config, length)
        return flops

    def sample_flops(self, config: ELFConfig, batch: int, length: int, nfe: int) -> float:
        """``nfe`` denoising passes and one decode pass per sample."""
        fwd = elf_forward_flops(config, length)
        return batch * (nfe * (fwd["body"] + fwd["denoise_head"]) + fwd["body"] + fwd["decode_head"])

    def sampler(self, settings: SamplerSettings, flow: FlowConstants, *, vocab_size: int, length: int) -> Sampler:
        return settings.sampler(flow)

    def sampler_record(self, settings: SamplerSettings, flow: FlowConstants) -> dict[str, Any]:
        """The settings and the flow constants the sampler ran with."""
        return {**settings.to_dict(), **flow.to_dict()}

    def no_condition(self, batch: int, length: int, config: ELFConfig) -> Condition:
        return Condition.none(batch, length, config.encoder_dim)

    def sample_tag(self, settings: SamplerSettings) -> str:
        return settings.tag()

    def sweep_settings(self, axes: Any, cfg_weights: Sequence[float] = (1.0,)) -> list[SamplerSettings]:
        """The samplers × ω × CFG weight, steps (or NFE budgets: a CFG weight ≠ 1 halves the steps
        that fit) innermost."""
        out = []
        for method in axes.methods:
            churned = SamplerSettings(method=method).uses_churn  # noise and γ sweep only where they act
            for solver in axes.solvers:
                for noise in axes.sde_noises if churned else ("reference",):
                    for gamma in axes.gammas if churned else (0.0,):
                        for omega in axes.omegas:
                            for weight in cfg_weights:
                                base = SamplerSettings(method=method, gamma=gamma, omega=omega, cfg_weight=weight,
                                                       time_grid=axes.time_grid, solver=solver, sde_noise=noise,
                                                       grid_exponent=axes.grid_exponent, grid_seed=axes.grid_seed)
                                counts = axes.steps if axes.nfe is None else [steps_for_nfe(base, b) for b in axes.nfe]
                                for steps in dict.fromkeys(c for c in counts if c is not None):
                                    out.append(base.replace(steps=steps))
        return out

    def sweep_label(self, settings: SamplerSettings) -> str:
        return settings.label()

    def sweep_file_stem(self, settings: SamplerSettings) -> str:
        return settings.file_stem()

    def sweep_columns(self, settings: SamplerSettings, nfe: int) -> dict[str, Any]:
        return {"method": settings.method, "solver": settings.solver,
                "sde_noise": settings.sde_noise if settings.uses_churn else "", "gamma": settings.gamma,
                "omega": settings.omega, "cfg_weight": settings.cfg_weight, "steps": settings.steps}
