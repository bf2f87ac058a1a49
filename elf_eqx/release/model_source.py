"""One loader for every place an ELF to sample from can come from: a training run of ours, a
model exported from one (a folder, or a hub repo, written by ``python -m elf_eqx.export``), a
released checkpoint (msgpack file, orbax folder, local release folder) or a release on the hub.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import equinox as eqx

from elf_eqx.io import storage
from elf_eqx.training.checkpoint import STATE
from elf_eqx.training.run_directory import open_run
from elf_eqx.training.run_record import DistillationRecord, RunRecord
from elf_eqx.config import PRESETS
from elf_eqx.data.spec import SequenceLayout
from elf_eqx.data.cache import default_cache_dir
from elf_eqx.distillation.manifest import distilled_source
from elf_eqx.encoders.sources import is_hub_id
from elf_eqx.errors import ConfigError, IncompatibleModelError, MissingInputError, UserError
from elf_eqx.families import ELF_FAMILY, Family
from elf_eqx.flow import FlowConstants
from elf_eqx.io.safetensors_io import INDEX_NAME, SINGLE_NAME
from elf_eqx.release.checkpoint import WEIGHT_ENTRIES, orbax_item_folder, read_release_weights
from elf_eqx.release.files import (
    CHECKPOINT_NAME,
    download_release,
    encoder_pickle,
    pick_checkpoint,
    release_checkpoints,
    split_hub_release,
)
from elf_eqx.release.names import model_from_reference_params
from elf_eqx.release.tasks import (
    RELEASE_ENCODER_FALLBACK,
    RELEASE_FLOW,
    RELEASE_LATENT_MEAN,
    RELEASE_LATENT_STD,
    RELEASE_TOKENIZER,
    RELEASED_TASKS,
    preset_name,
    release_config,
    task_of,
)
from elf_eqx.sampling.settings_base import SamplerSettingsBase
from elf_eqx.sharing.folder import check_tokenizer, exported_encoder, load_exported_network
from elf_eqx.sharing.hub import hub_export_folder
from elf_eqx.sharing.record import CONFIG_NAME, is_export_folder, read_export_record

Weights = Literal["ema", "raw"]
# Our checkpoints' state parts for each weights kind.
_PART = {"ema": "ema", "raw": "model"}


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model ready to sample from and everything sampling needs to know about it."""

    model: eqx.Module
    """The network to sample with (EMA weights by default): an ELF, or a baseline's network."""
    tokenizer: str
    """Source for :func:`elf_eqx.encoders.load_tokenizer`."""
    encoder: str
    """Source for :func:`elf_eqx.encoders.load_text_encoder` (conditional sampling)."""
    latent_mean: float
    latent_std: float
    layout: SequenceLayout
    """The rows the model was trained on and samples at (``max_input_length`` 0: unconditional)."""
    flow: FlowConstants
    """The flow constants the model was trained with (the sampler must use them)."""
    sampling: SamplerSettingsBase
    """Default sampler settings (the family's own): the run's periodic-sample settings, or the released ones."""
    origin: str
    """What was loaded: the source, step, weights (and for releases preset and task)."""
    step: int | None
    kind: str = "release"
    """``release``, ``run`` (one of our training checkpoints) or ``export`` (a folder written by
    ``python -m elf_eqx.export``, local or from the hub)."""
    family: Family = ELF_FAMILY
    """The model's :class:`~elf_eqx.families.Family` (ELF, MDLM or AR); releases are ELF."""
    distillation: DistillationRecord | None = None
    """A distilled student's entry (its round, steps, teacher; :mod:`elf_eqx.distillation`), else ``None``."""
    record: RunRecord | None = None
    """The run record of a run or an exported model (its whole training config: what a distillation's
    teacher and ``--init-from`` read); ``None`` for a release."""


# -- our training checkpoints ------------------------------------------------------------


def is_training_checkpoint(path: storage.AnyPath) -> bool:
    """Whether ``path`` is a run output directory, its ``checkpoints/`` folder or one step folder."""
    if not path.is_dir():
        return False
    if (path / "checkpoints").is_dir() or (path.name.isdigit() and (path / STATE).is_dir()):
        return True
    return any(p.name.isdigit() and (p / STATE).is_dir() for p in path.iterdir())


def local_encoder(encoder: str, run_dir: storage.AnyPath) -> str:
    """``encoder``, or the copy beside the checkpoints when a recorded file path has moved with
    the run directory (``convert --copy-encoder``)."""
    recorded = Path(encoder)
    if recorded.is_absolute() and not recorded.exists() and (run_dir / recorded.name).exists():
        return str((run_dir / recorded.name).absolute())
    return encoder


def run_weights_check(path: storage.AnyPath, weights: Sequence[str]) -> Callable[[RunRecord, dict[str, Any], int], None]:
    """The check a run's step must pass to give ``weights``: a run record that can build and
    sample the network, and raw weights only where they were kept."""

    def check(record: RunRecord, metadata: dict[str, Any], step: int) -> None:
        record.require("elf", "encoder", "data_spec", where=f"{path}: the run config stored with step {step}")
        if "raw" in weights and metadata.get("weights") == "ema":
            raise ConfigError(f"{path} holds only EMA weights (converted with --weights ema); use weights='ema'")

    return check


def family_words(record: RunRecord) -> str:
    """How an origin names a model's family and distillation (``MDLM, ``; ``4-step student of round 2, ``)."""
    family = record.model_family
    words = f"{family.title}, " if family.title else ""
    if record.distillation is not None:
        words += f"{record.distillation.steps}-step student of round {record.distillation.round}, "
    return words


def run_origin(path: storage.AnyPath, step: int, kind: str, record: RunRecord, config: Any, metadata: dict[str, Any]) -> str:
    """What a run's weights are, as a loaded model's ``origin`` says it: path, step, weights kind,
    family (and distillation), preset, and what a converted checkpoint was converted from."""
    converted = f", converted from {metadata['converted_from']}" if "converted_from" in metadata else ""
    return f"{path} step {step} ({kind} weights, {family_words(record)}{preset_name(config)}{converted})"


def training_run_of(source: str) -> storage.AnyPath | None:
    """``source`` as one of our training runs, on this machine or in a bucket (a distillation's
    folder: its newest complete round's student), or ``None`` when it is none."""
    if storage.scheme_of(source) is not None:
        remote = storage.user_path(source, "the model source")
        storage.check_bucket(remote, "the model source")
        return remote if is_training_checkpoint(remote) else None
    path = Path(source).expanduser()
    if path.is_dir() and (student := distilled_source(path)) is not None:
        path = student
    return path if path.exists() and is_training_checkpoint(path) else None


def check_architecture(path: storage.AnyPath | str, model: eqx.Module, architecture: str | None) -> None:
    """A model that is not the preset ``architecture`` asked for is an error naming both."""
    if architecture is not None and preset_name(model.config) != architecture:
        raise IncompatibleModelError(f"{path}: the model is {preset_name(model.config)} ({model.config}), "
                                     f"not {architecture}")


def _from_training_run(path: storage.AnyPath, weights: Sequence[str], step: int | None, encoder: str | None,
                       tokenizer: str | None, architecture: str | None) -> dict[str, ModelBundle]:
    with open_run(path, step) as ckpts:  # weights and record from one readable step
        models, record, metadata, step = ckpts.models(tuple(_PART[kind] for kind in weights),
                                                      run_weights_check(path, weights))
        run_dir = ckpts.run_dir
    spec, run, family = record.data_spec, record.run, record.model_family
    bundles = {}
    for kind in weights:
        model = models[_PART[kind]]
        check_architecture(path, model, architecture)
        bundles[kind] = ModelBundle(
            model=model,
            tokenizer=tokenizer or record.tokenizer,
            encoder=encoder or local_encoder(record.encoder, run_dir),
            layout=spec.layout(),
            latent_mean=run.data.latent_mean,
            latent_std=run.data.latent_std,
            flow=run.objective.flow,
            sampling=run.sampling.settings_for(family),
            origin=run_origin(path, step, kind, record, model.config, metadata),
            step=step,
            kind="run",
            family=family,
            distillation=record.distillation,
            record=record,
        )
    return bundles


# -- exported models ---------------------------------------------------------------------


def _from_export(folder: Path, name: str, weights: Sequence[str], encoder: str | None, tokenizer: str | None,
                 architecture: str | None) -> dict[str, ModelBundle]:
    """The model of an exported folder (``python -m elf_eqx.export``), ``name`` being how it was
    asked for (a path, or a hub id and revision)."""
    export = read_export_record(folder)
    other = [kind for kind in weights if kind != export.weights]
    if other:
        raise ConfigError(f"{name} holds the {export.weights} weights only (exported with --weights "
                          f"{export.weights}), not the {other[0]} ones; use weights='{export.weights}'")
    record, spec = export.run, export.run.data_spec
    model = load_exported_network(folder, export)
    check_architecture(name, model, architecture)
    tokenizer_source = tokenizer or str(folder.absolute())
    check_tokenizer(folder, export, tokenizer_source)
    bundle = ModelBundle(
        model=model,
        tokenizer=tokenizer_source,
        encoder=encoder or exported_encoder(folder, export),
        layout=spec.layout(),
        latent_mean=record.run.data.latent_mean,
        latent_std=record.run.data.latent_std,
        flow=record.run.objective.flow,
        sampling=record.run.sampling.settings_for(record.model_family),
        origin=(f"{name} (exported {export.weights} weights, step {export.step}, {family_words(record)}"
                f"{preset_name(model.config)}; from {export.origin})"),
        step=export.step,
        kind="export",
        family=record.model_family,
        distillation=record.distillation,
        record=record,
    )
    return {kind: bundle for kind in weights}


def _refuse_unreadable_folder(path: Path) -> None:
    """A folder that looks like an export but is not one is a one-line error naming what it lacks."""
    if (path / CONFIG_NAME).is_file():
        read_export_record(path)  # raises: not an elf_eqx export, or a version this reader does not know
    if (path / SINGLE_NAME).is_file() or (path / INDEX_NAME).is_file():
        raise MissingInputError(f"{path} holds safetensors weights but no {CONFIG_NAME}: not an exported elf_eqx "
                                "model (write one with python -m elf_eqx.export)")


# -- released checkpoints ----------------------------------------------------------------


def _from_release(checkpoint: Path, folder: Path, repo_root: Path, name: str, weights: Sequence[str],
                  encoder: str | None, tokenizer: str | None, task: str | None,
                  architecture: str | None) -> dict[str, ModelBundle]:
    chosen = task_of(name, task)
    released = RELEASED_TASKS[chosen]
    release = read_release_weights(checkpoint, weights)
    pickle = encoder_pickle(folder, repo_root)
    bundles = {}
    for kind in weights:
        flat = release.params[kind]
        try:
            model = model_from_reference_params(flat, release_config(flat, architecture))
        except UserError as err:  # weights that are no ELF, or not the --architecture asked for
            raise type(err)(f"{checkpoint} ({WEIGHT_ENTRIES[kind]}): {err}") from err
        except ValueError as err:  # ELFConfig refusing the architecture the weights' shapes imply
            raise IncompatibleModelError(f"{checkpoint} ({WEIGHT_ENTRIES[kind]}): {err}") from err
        bundles[kind] = ModelBundle(
            model=model,
            tokenizer=tokenizer or RELEASE_TOKENIZER,
            encoder=encoder or (str(pickle) if pickle is not None else RELEASE_ENCODER_FALLBACK),
            layout=released.layout,
            latent_mean=RELEASE_LATENT_MEAN,
            latent_std=RELEASE_LATENT_STD,
            flow=RELEASE_FLOW,
            sampling=released.sampling,
            origin=f"release {name} ({preset_name(model.config)}, task {chosen}, {WEIGHT_ENTRIES[kind]}, "
                   f"step {release.step})",
            step=release.step,
        )
    return bundles


# -- the entry points --------------------------------------------------------------------


def load_model_source_weights(
    source: str,
    weights: Sequence[Weights] = ("ema",),
    *,
    step: int | None = None,
    encoder: str | None = None,
    tokenizer: str | None = None,
    task: str | None = None,
    architecture: str | None = None,
    revision: str | None = None,
) -> dict[str, ModelBundle]:
    """:func:`load_model_source` for several ``weights`` kinds at once (the checkpoint is read
    once): ``{kind: bundle}``."""
    if not weights or any(w not in _PART for w in weights):
        raise ConfigError(f"weights must be among 'ema', 'raw', got {list(weights)}")
    if architecture is not None and architecture not in PRESETS:
        raise ConfigError(f"unknown ELF preset {architecture!r}; choose one of {sorted(PRESETS)}")
    args = dict(weights=weights, encoder=encoder, tokenizer=tokenizer, task=task, architecture=architecture)
    exported = dict(weights=weights, encoder=encoder, tokenizer=tokenizer, architecture=architecture)
    run_path = training_run_of(source)  # one of our runs, here or in a bucket
    if run_path is not None:
        return _from_training_run(run_path, weights, step, encoder, tokenizer, architecture)
    if storage.scheme_of(source) is not None:  # a bucket holding no run: an exported model, or nothing
        remote = storage.user_path(source, "the model source")
        if is_export_folder(remote):
            _no_step(step, source)
            return _from_export(storage.cached_copy(remote, default_cache_dir() / "exports"), source, **exported)
        raise MissingInputError(f"model source not found: {source} holds no training checkpoints and no exported "
                                "model (a bucket source is a training output directory, its checkpoints/ folder, one "
                                "step folder or an exported model's folder)")
    path = Path(source).expanduser()
    if path.is_dir() and (student := distilled_source(path)) is not None:
        path = student  # a distillation's folder: its newest complete round's student
    if path.exists():
        if is_export_folder(path):
            _no_step(step, path)
            return _from_export(path, str(path), **exported)
        if path.is_file() or orbax_item_folder(path) is not None:
            named = CHECKPOINT_NAME.match(path.name)
            if step is not None and not (named and int(named.group(1)) == step):
                raise ConfigError(f"step={step} cannot be chosen for the single checkpoint {path}")
            return _from_release(path, path.parent, path.parent, str(path), **args)
        if not release_checkpoints(path):
            _refuse_unreadable_folder(path)
        return _from_release(pick_checkpoint(path, step), path, path, str(path), **args)
    if (hub := hub_repo_of(source)) is not None:
        repo, sub = hub
        folder = hub_export_folder(repo, sub, revision)
        if folder is not None:  # a model exported by python -m elf_eqx.export
            _no_step(step, source)
            return _from_export(folder, source + (f"@{revision}" if revision else ""), **exported)
        try:
            root, folder = download_release(source, step, revision)
        except FileNotFoundError as err:
            raise MissingInputError(f"model source not found: {source} is no local file or folder; as a hub "
                                    f"repo org/repo[/subpath] (an exported model, or a release): {err}") from err
        return _from_release(pick_checkpoint(folder, step), folder, root, source, **args)
    raise MissingInputError(f"model source not found: {source} (looked for a local training output directory, "
                            "an exported model folder, a checkpoint file or folder, or a release folder; a hub "
                            "repo is org/repo[/subpath])")


def _no_step(step: int | None, where: storage.AnyPath | str) -> None:
    if step is not None:
        raise ConfigError(f"step={step} cannot be chosen for the exported model {where}: it holds one step")


def hub_repo_of(source: str) -> tuple[str, str] | None:
    """``source`` read as a hub repo: (``org/repo``, the subpath in it or ``""``); ``None`` when it
    names a bucket, reads as a local path or is no ``org/repo[/subpath]``."""
    if storage.scheme_of(source) is not None or _reads_as_local_path(source):
        return None
    repo, sub = split_hub_release(source)
    return (repo, sub) if repo.count("/") == 1 and is_hub_id(repo) else None


def _reads_as_local_path(source: str) -> bool:
    """Whether a ``source`` that does not exist is a mistyped local path rather than a hub id: it is
    absolute or starts with ``.``/``~``, or its first folder exists here (``runs/typo``)."""
    parts = Path(source).parts
    return source.startswith(("/", ".", "~")) or (len(parts) > 1 and Path(parts[0]).is_dir())


def load_model_source(
    source: str,
    *,
    weights: Weights = "ema",
    step: int | None = None,
    encoder: str | None = None,
    tokenizer: str | None = None,
    task: str | None = None,
    architecture: str | None = None,
    revision: str | None = None,
) -> ModelBundle:
    """The :class:`ModelBundle` of ``source``:

    - a training output directory, its ``checkpoints/`` folder or one step folder (ours; latest
      step or ``step``): encoder, tokenizer, data layout, latent normalisation and sampling
      defaults from the run config stored with the checkpoint;
    - an exported model (``python -m elf_eqx.export``): its folder (``config.json``, safetensors
      weights, tokenizer, encoder reference or copy), or a hub repo ``org/name[/subpath]`` holding
      one (fetched at ``revision``, a branch, tag or commit; default the main branch);
    - a release checkpoint: a ``checkpoint_<step>`` Flax msgpack file or orbax folder, or a local
      folder holding release files (its newest ``checkpoint_<step>``, or ``step``);
    - a hub release ``org/repo[/subpath]`` (only that checkpoint and the encoder pickle are
      downloaded, once, into the hub cache; at ``revision``).

    ``weights``: ``ema`` (EMA / ``ema_params1``) or ``raw`` (``model`` / ``params``). ``encoder``,
    ``tokenizer`` and ``task`` (``owt``, ``de-en``, ``xsum``; releases) override what is inferred.
    ``architecture`` (a preset name: ``ELF-B``, ``ELF-M``, ``ELF-L``, ...) is checked: a release
    that does not fit it is an error listing every parameter name and shape that differs.
    """
    bundles = load_model_source_weights(source, (weights,), step=step, encoder=encoder, tokenizer=tokenizer,
                                        task=task, architecture=architecture, revision=revision)
    return bundles[weights]
