"""What differs between the model families one harness trains, samples and scores
(docs/method.md#baselines): each family is one :class:`Family` object, chosen once from the config
(:func:`elf_eqx.families.family_named`) and asked for its network, objective, sampler, conditions,
FLOP count and how its sampler settings are named. Data, optimizer, step, checkpoints, sharding and
evaluation are shared."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray

from elf_eqx.config import ELFConfig
from elf_eqx.flow import FlowConstants
from elf_eqx.sampling.settings_base import SamplerSettingsBase

if TYPE_CHECKING:
    from elf_eqx.baselines.token_sampling import TokenCondition
    from elf_eqx.sampler import Condition


@runtime_checkable
class ModelSampler(Protocol):
    """A family's sampler: ``sampler(model, key, condition=…, eos_id=…, pad_id=…)`` and its ``nfe()``."""

    def __call__(self, model: Any, key: PRNGKeyArray, *, condition: Any = None, eos_id: int | None = None,
                 pad_id: int = 0) -> Any: ...

    def nfe(self) -> int: ...


class Family(abc.ABC):
    """A model family. Instances are the singletons of :data:`elf_eqx.families.FAMILIES`."""

    name: ClassVar[str]
    """``elf``, ``mdlm`` or ``ar``: the ``--objective`` value and what run configs and sample records store."""
    network: ClassVar[type[eqx.Module]]
    """The network class, built from an :class:`~elf_eqx.config.ELFConfig`."""
    uses_encoder: ClassVar[bool] = False
    """Whether the family trains on latents of a frozen text encoder (only ELF does)."""
    title: ClassVar[str] = ""
    """How a loaded model's origin names the family ("" for ELF)."""
    settings_class: ClassVar[type[SamplerSettingsBase]]
    """The family's sampler settings: what its sampler is built from, its flags and its records' fields."""

    def __repr__(self) -> str:
        return f"<{self.name} family>"

    # -- the network --------------------------------------------------------------------------

    def build_network(self, config: ELFConfig, key: PRNGKeyArray) -> eqx.Module:
        """A freshly initialised network with architecture ``config``."""
        return self.network(config, key=key)

    def network_template(self, config: ELFConfig) -> eqx.Module:
        """The network's shapes and structure without its values (for restoring checkpoints)."""
        return eqx.filter_eval_shape(self.build_network, config, jax.random.key(0))

    # -- training ------------------------------------------------------------------------------

    @abc.abstractmethod
    def objective(self, section: Any, vocab_size: int) -> eqx.Module:
        """The training loss, called ``loss(model, batch, key)``, from the training config's
        objective section (``vocab_size`` places a baseline's extra ``[MASK]``/``[BOS]`` id)."""

    @abc.abstractmethod
    def train_step_flops(self, config: ELFConfig, batch: int, length: int, *, objective: Any = None,
                         encoder_config: Any = None) -> float:
        """Analytic FLOPs of one training step on ``batch`` rows of ``length`` tokens (:mod:`elf_eqx.flops`)."""

    # -- sampling ------------------------------------------------------------------------------

    @abc.abstractmethod
    def sample_flops(self, config: ELFConfig, batch: int, length: int, nfe: int) -> float:
        """Analytic FLOPs of drawing ``batch`` samples of ``length`` positions with ``nfe`` network
        evaluations each (and, for ELF, the decode pass)."""

    def sampler_settings(self, values: Mapping[str, Any]) -> SamplerSettingsBase:
        """This family's settings from ``values``, which may hold other families' settings and more
        (a training run's sampling flags, a sample record's settings, also one written before the
        families had settings of their own); missing ones take their defaults."""
        return self.settings_class.from_dict(self.settings_class.own(values))

    def sampler_record(self, settings: SamplerSettingsBase, flow: FlowConstants) -> dict[str, Any]:
        """What a sample record says of the sampler: the settings, by name (ELF adds the flow constants)."""
        return settings.to_dict()

    @abc.abstractmethod
    def sampler(self, settings: SamplerSettingsBase, flow: FlowConstants, *, vocab_size: int,
                length: int) -> ModelSampler:
        """The family's sampler for its ``settings`` (:attr:`settings_class`; ELF's with the flow
        constants ``flow`` it was trained with)."""

    @abc.abstractmethod
    def no_condition(self, batch: int, length: int, config: ELFConfig) -> "Condition | TokenCondition":
        """The condition of ``batch`` unconditional samples of ``length`` positions."""

    @abc.abstractmethod
    def sample_tag(self, settings: SamplerSettingsBase) -> str:
        """A short name of ``settings`` for file names (``sde32-w3``, ``mdlm32``, ``ar``)."""

    # -- sweeps (benchmarks/steps_vs_ppl.py, benchmarks/conditional_scores.py) -----------------

    @abc.abstractmethod
    def sweep_settings(self, axes: Any, cfg_weights: Sequence[float] = (1.0,)) -> list[SamplerSettingsBase]:
        """Every sampler setting a sweep (:class:`elf_eqx.sampling.sweep.SweepOptions`) runs for this family."""

    @abc.abstractmethod
    def sweep_label(self, settings: SamplerSettingsBase) -> str:
        """The curve ``settings`` belong to in a sweep's table and plots."""

    @abc.abstractmethod
    def sweep_file_stem(self, settings: SamplerSettingsBase) -> str:
        """The samples file stem of one sweep configuration."""

    @abc.abstractmethod
    def sweep_columns(self, settings: SamplerSettingsBase, nfe: int) -> dict[str, Any]:
        """A sweep row's sampler columns: ``method, solver, sde_noise, gamma, omega, cfg_weight``
        (blank where they do not apply) and ``steps``."""
