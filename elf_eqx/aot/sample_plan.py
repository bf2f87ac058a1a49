"""A sampling command made ready to compile for a target: the model source's architecture, flow
constants, default sampler and layout read without its weights (our runs: the run record stored
with the checkpoint, :class:`~elf_eqx.training.run_record.RunRecord`; releases: the preset and task
their name gives), and the sampler program :func:`elf_eqx.sampling.compiled.make_sample_fn` builds,
compiled on the target's mesh.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax

from elf_eqx.io.storage import user_path
from elf_eqx.aot.analysis import analyze
from elf_eqx.aot.compile import CompiledProgram, abstract, compile_for_target, per_device_bytes, target_mesh
from elf_eqx.aot.run_shapes import T5_SMALL_ENCODER, T5_SMALL_VOCAB
from elf_eqx.aot.targets import Target
from elf_eqx.aot.train_plan import runtime_for
from elf_eqx.config import ComputeDtype, ELFConfig, preset
from elf_eqx.data.spec import DataSpec
from elf_eqx.errors import ConfigError
from elf_eqx.families import ELF_FAMILY, Family
from elf_eqx.flow import FlowConstants
from elf_eqx.parallel.mesh import MeshConfig, batch_sharding
from elf_eqx.release.model_source import hub_repo_of, is_training_checkpoint
from elf_eqx.release.tasks import RELEASE_FLOW, RELEASED_TASKS, release_data_spec, task_of
from elf_eqx.sampling.compiled import make_sample_fn
from elf_eqx.sampling.settings_base import SamplerSettingsBase
from elf_eqx.sharing.hub import hub_export_config
from elf_eqx.sharing.record import is_export_folder, read_export_record
from elf_eqx.training.run_directory import read_run_record

_PRESET_IN_NAME = re.compile(r"ELF-([BML])(?![A-Za-z])", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class SourceArchitecture:
    """What sampling a model source compiles against, read without its weights."""

    family: Family
    elf_config: ELFConfig
    flow: FlowConstants
    sampling: SamplerSettingsBase
    data_spec: DataSpec
    """Its rows and the tokenizer's pad and EOS ids."""
    origin: str


def source_architecture(source: str, *, step: int | None = None, task: str | None = None,
                        revision: str | None = None) -> SourceArchitecture:
    """The architecture of ``source``: a training run of ours (its stored run config), an exported
    model's folder or hub id (its ``config.json``, at ``revision``), or a release whose name says
    its preset (``ELF-B``/``ELF-M``/``ELF-L``) and task."""
    path = user_path(source, "the model source")
    if not path.exists() and (hub := hub_repo_of(str(source))) is not None:
        path = hub_export_config(*hub, revision) or path  # an export on the hub: its config.json alone
    if path.exists() and (is_training_checkpoint(path) or is_export_folder(path)):
        if is_export_folder(path):  # an exported model: its config.json
            export = read_export_record(path)
            record, chosen = export.run, export.step
        else:
            record, chosen = read_run_record(path, step)
        record.require("elf", "data_spec", where=f"{source}: the run config stored with step {chosen}",
                       purpose="compile its sampler")
        spec, run = record.data_spec, record.run
        return SourceArchitecture(record.model_family, record.elf, run.objective.flow,
                                  run.sampling.settings_for(record.model_family), spec, f"{source} step {chosen}")
    named = _PRESET_IN_NAME.search(str(source))
    if named is None:
        raise ConfigError(f"{source}: a dry run reads a release's architecture from its name (ELF-B, ELF-M or "
                          "ELF-L in the path, as the released repositories are named); this one names none")
    chosen = task_of(str(source), task)
    config = preset(f"ELF-{named.group(1).upper()}", encoder_dim=T5_SMALL_ENCODER.d_model, vocab_size=T5_SMALL_VOCAB)
    return SourceArchitecture(ELF_FAMILY, config, RELEASE_FLOW, RELEASED_TASKS[chosen].sampling,
                              release_data_spec(chosen, T5_SMALL_VOCAB),
                              f"release {source} (ELF-{named.group(1).upper()}, task {chosen}; from its name)")


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """One sampler program of a source, for a target."""

    source: SourceArchitecture
    target: Target
    settings: SamplerSettingsBase
    batch_size: int
    length: int
    mesh: MeshConfig
    compute_dtype: ComputeDtype = "auto"

    def with_batch(self, batch_size: int) -> "SamplePlan":
        """The same plan at another batch size."""
        return dataclasses.replace(self, batch_size=batch_size)

    def compile(self) -> tuple[CompiledProgram, Any]:
        """The sampler compiled for the target, and the sharded abstract model it was compiled against."""
        src = self.source
        elf_config = dataclasses.replace(src.elf_config, **runtime_for(self.target, self.compute_dtype))
        model = src.family.network_template(elf_config)
        sampler = src.family.sampler(self.settings, src.flow, vocab_size=elf_config.vocab_size, length=self.length)
        mesh = target_mesh(self.target, self.mesh)
        sample = make_sample_fn(sampler, mesh, model, eos_id=src.data_spec.eos_id, pad_id=src.data_spec.pad_id)
        condition = jax.eval_shape(lambda: src.family.no_condition(self.batch_size, self.length, elf_config))
        key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
        params = sample.abstract_params(model)
        args = (params, key_data, abstract(condition, batch_sharding(mesh)))
        return compile_for_target(sample.jitted, args, target=self.target, mesh=mesh), params

    def report(self) -> dict[str, Any]:
        """Compile and report the sampler (:func:`elf_eqx.aot.analysis.analyze`)."""
        src = self.source
        compiled, params = self.compile()
        nfe = src.family.sampler(self.settings, src.flow, vocab_size=src.elf_config.vocab_size, length=self.length).nfe()
        flops = src.family.sample_flops(src.elf_config, self.batch_size, self.length, nfe)
        # The sampler's step loop and block loop are each counted once by XLA, and it has no
        # unrolled twin (steps × layers copies of the network would take long to compile): memory only.
        report = analyze(compiled, self.target, program="sample", global_batch=self.batch_size, analytic_flops=flops,
                         tokens_per_step=self.batch_size * self.length, param_bytes_per_device=per_device_bytes(params),
                         costed=False)
        config = dataclasses.replace(src.elf_config, **runtime_for(self.target, self.compute_dtype))
        return {**report, "source": src.origin, "family": src.family.name, "length": self.length, "nfe": nfe,
                "compute_dtype": config.compute_dtype, "attention": config.attention_kernel(training=False),
                "sampler": src.family.sample_tag(self.settings), "mesh": dict(compiled.mesh.shape),
                "samples_per_s": None if not report["compiler_estimate_s"] else
                self.batch_size / report["compiler_estimate_s"]}

