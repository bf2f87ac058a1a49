"""The export (``python -m elf_eqx.export``): a model source written as a Hugging Face-style folder
(see :mod:`elf_eqx.sharing`), staged under a hidden name beside ``--output`` and renamed into place
when complete, then pushed to the hub when asked.

The weights are written one tensor at a time (:func:`elf_eqx.io.safetensors_io.write_safetensors`),
each read from the run's checkpoint when its turn comes (:mod:`elf_eqx.sharing.sources`): an export
of a run sharded over many devices holds at most one tensor of it in memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import tyro
import yaml

from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.encoders.sources import is_hub_id
from elf_eqx.errors import ConfigError
from elf_eqx.io import storage
from elf_eqx.io.atomic import staged_folder
from elf_eqx.io.safetensors_io import write_safetensors
from elf_eqx.observe.run_folder import EvalRecord, read_eval
from elf_eqx.release.tasks import preset_name
from elf_eqx.sharing.card import model_card, training_figures
from elf_eqx.sharing.encoder import bundle_encoder, encoder_config, is_reference
from elf_eqx.sharing.hub import PushResult, push_folder
from elf_eqx.sharing.record import CONFIG_NAME, EncoderEntry, ExportRecord
from elf_eqx.sharing.sources import ExportSource, open_export_source

TRAINING_CONFIG = "training_config.yaml"
CARD = "README.md"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Export a trained model (a run, a checkpoint, a distilled student, a release, an exported
    model) as a Hugging Face-style folder: safetensors weights, config.json, tokenizer, model card."""

    source: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """A training output directory, its checkpoints/ folder or one step folder, a distillation's
    output folder (its newest student), a release (checkpoint file, folder or hub id), or an exported
    model (folder or hub id)."""
    output: str
    """The folder to write (refused if it exists and is not empty, unless --overwrite)."""
    weights: Literal["ema", "raw"] = "ema"
    """Export the EMA weights (what sampling uses) or the raw trained ones."""
    step: int | None = None
    """The checkpoint step of a run or release (default: the newest readable one)."""
    source_revision: str | None = None
    """A hub source's revision: branch, tag or commit (default: main)."""
    bundle_encoder: bool = False
    """Copy the frozen encoder into OUTPUT/encoder/ as safetensors (for offline use); default: the
    export names it (a hub id, or offline-minilm) and loaders fetch it."""
    encoder: str | None = None
    """The frozen encoder to name (a hub id) instead of the recorded one: needed when the run's
    encoder is a local path and it is not bundled (a release's T5 pickle: google-t5/t5-small)."""
    tokenizer: str | None = None
    """Save this tokenizer instead of the recorded one (it must have the same ids)."""
    task: Literal["owt", "de-en", "xsum"] | None = None
    """A release's task when its name does not say it."""
    architecture: str | None = None
    """Check that the model is this preset (ELF-B, ELF-M, ...)."""
    max_shard_size: str = "5GB"
    """Largest safetensors file: above it the weights are sharded with model.safetensors.index.json
    (5GB, 500MB, 2GiB, or bytes)."""
    eval_results: tuple[str, ...] = ()
    """python -m elf_eqx.eval result files (.eval.json) to show in the model card, beside those
    found in the run's folder."""
    license: str | None = None
    """The license named in the model card (a Hugging Face license id: apache-2.0, mit, ...)."""
    push_to_hub: str | None = None
    """Also upload the folder to this hub model repo (ORG/NAME), created if missing."""
    private: bool = False
    """Create the hub repo private (--push-to-hub)."""
    revision: str | None = None
    """The hub branch to push to (created if missing; default: main)."""
    overwrite: bool = False
    """Replace an existing output folder."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the folder, its record, and where it was pushed."""

    folder: storage.AnyPath
    record: ExportRecord
    files: list[str]
    pushed: PushResult | None = None

    @property
    def size(self) -> int:
        """Bytes in the folder."""
        return sum(storage.file_sizes(self.folder).values())


def parse_size(text: str) -> int:
    """Bytes of ``5GB``, ``500MB``, ``2GiB`` or a plain number."""
    match = _SIZE.match(str(text))
    unit = (match.group(2) or "").upper() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"--max-shard-size {text!r} is not a size (e.g. 5GB, 500MB, 2GiB, or bytes)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"--max-shard-size must be positive, got {text!r}")
    return size


def _elf_eqx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("elf_eqx")
    except PackageNotFoundError:
        return "unknown"


def _evals(src: ExportSource, files: Sequence[str]) -> list[EvalRecord]:
    """The eval records to show: those in the run's folder, then the files given."""
    found = []
    if src.run_dir is not None and not storage.is_remote(src.run_dir):  # a bucket run's are given by name
        found = [e for p in sorted(src.run_dir.rglob("*.eval.json")) if "checkpoints" not in p.parts
                 and (e := read_eval(p)) is not None]
    for name in files:
        record = read_eval(storage.user_path(name, "--eval-results"))
        if record is None:
            raise ConfigError(f"--eval-results {name} is not a python -m elf_eqx.eval result file")
        found.append(record)
    return found


def _save_tokenizer(source: str, folder: Path) -> tuple[str, ...]:
    """Save the tokenizer ``source`` into ``folder`` (``save_pretrained``); the files it wrote."""
    before = {p.name for p in folder.iterdir()}
    load_tokenizer(source).save_pretrained(str(folder))
    written = sorted(p.name for p in folder.iterdir() if p.name not in before)
    if CONFIG_NAME in written:  # a tokenizer never owns config.json: the export's record does
        (folder / CONFIG_NAME).unlink()
        written.remove(CONFIG_NAME)
    return tuple(written)


def _encoder_entry(cfg: ExportConfig, src: ExportSource, folder: Path) -> EncoderEntry:
    """The encoder's entry: bundled into ``folder``, or named (refused when the name is a path
    that exists only here)."""
    if not src.record.model_family.uses_encoder:
        return EncoderEntry(source=None)  # the baselines read tokens
    reference = cfg.encoder or src.record.encoder
    if cfg.bundle_encoder:
        bundled, config = bundle_encoder(cfg.encoder or src.encoder, folder)
        return EncoderEntry(source=reference, bundled=bundled, config=config)
    if not is_reference(reference):
        raise ConfigError(f"the model's frozen encoder {reference} is a local file or folder that another machine "
                          "does not have: pass --bundle-encoder to copy it into the export, or --encoder HUB_ID to "
                          "name it on the hub (the ELF release's T5 pickle is google-t5/t5-small's encoder)")
    return EncoderEntry(source=reference, config=encoder_config(reference))


def _export_command(cfg: ExportConfig) -> str:
    parts = ["python -m elf_eqx.export", cfg.source, "--output", cfg.output]
    if cfg.weights != "ema":
        parts += ["--weights", cfg.weights]
    if cfg.step is not None:
        parts += ["--step", str(cfg.step)]
    if cfg.bundle_encoder:
        parts.append("--bundle-encoder")
    if cfg.encoder:
        parts += ["--encoder", cfg.encoder]
    if cfg.push_to_hub:
        parts += ["--push-to-hub", cfg.push_to_hub] + (["--revision", cfg.revision] if cfg.revision else [])
    return " ".join(parts)


def _write_folder(cfg: ExportConfig, src: ExportSource, folder: Path, max_shard: int) -> tuple[ExportRecord, list[str]]:
    """Write every file of the export of ``src`` into the (empty) ``folder``."""
    family = src.record.model_family
    weights_files = write_safetensors(folder, src.tensors, src.read, max_shard_bytes=max_shard,
                                      metadata={"format": "elf_eqx", "family": family.name,
                                                "architecture": preset_name(src.config)})
    tokenizer_files = _save_tokenizer(cfg.tokenizer or src.tokenizer, folder)
    encoder = _encoder_entry(cfg, src, folder)
    record = dataclasses.replace(src.record, encoder=encoder.source or src.record.encoder,
                                 tokenizer=cfg.tokenizer or src.record.tokenizer)
    provenance = {
        "elf_eqx_version": _elf_eqx_version(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": cfg.source,
        **training_figures(src.run_dir, src.step),
    }
    dtypes = sorted({str(t.dtype) for t in src.tensors})
    export = ExportRecord(run=record, weights=src.weights, step=src.step, origin=src.origin, encoder=encoder,
                          tokenizer_files=tokenizer_files, weights_files=tuple(weights_files),
                          parameters=src.parameters, dtype="/".join(dtypes), provenance=provenance)
    (folder / CONFIG_NAME).write_text(json.dumps(export.to_dict(), indent=2) + "\n")
    training = json.loads(json.dumps(record.run.to_dict()))  # tuples as lists
    training.pop("config", None)
    training.pop("preset", None)
    (folder / TRAINING_CONFIG).write_text(
        "# The resolved training config of the exported model's run: python -m elf_eqx.train --config "
        f"{TRAINING_CONFIG}\n" + yaml.safe_dump(training, sort_keys=False))
    title = cfg.push_to_hub or storage.as_path(cfg.output).name
    card = model_card(export, title=title, sample_source=cfg.push_to_hub or cfg.output, source=cfg.source,
                      export_command=_export_command(cfg), evals=_evals(src, cfg.eval_results), license_id=cfg.license)
    (folder / CARD).write_text(card)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return export, files


def commit_message(record: ExportRecord) -> str:
    """The hub commit's message: what model, which weights of which step, by which elf_eqx."""
    run = record.run
    student = f", {run.distillation.steps}-step student" if run.distillation is not None else ""
    return (f"Upload {run.family.upper()} {preset_name(run.architecture)}{student} ({record.weights} weights, step "
            f"{record.step}) exported by elf_eqx {record.provenance.get('elf_eqx_version', '')}".rstrip())


def export_model(cfg: ExportConfig) -> ExportResult:
    """Write the export ``cfg`` describes (see :class:`ExportConfig`) and push it when asked."""
    max_shard = parse_size(cfg.max_shard_size)
    if cfg.push_to_hub is not None and not (cfg.push_to_hub.count("/") == 1 and is_hub_id(cfg.push_to_hub)):
        raise ConfigError(f"--push-to-hub {cfg.push_to_hub!r} is not a hub repo id ORG/NAME")
    if cfg.push_to_hub is None and (cfg.private or cfg.revision is not None):
        raise ConfigError("--private and --revision say how to push: give --push-to-hub ORG/NAME with them")
    out = storage.user_path(cfg.output, "--output")
    storage.check_bucket(out, "--output")  # a bucket that answers (local paths pass)
    if out.is_file():
        raise ConfigError(f"--output {out} is a file")
    if not storage.is_remote(out) and out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder holds nothing to lose
    with open_export_source(cfg.source, weights=cfg.weights, step=cfg.step, encoder=None, tokenizer=cfg.tokenizer,
                            task=cfg.task, architecture=cfg.architecture, revision=cfg.source_revision) as src:
        # Every file is written into a local staging folder renamed to --output when complete (in a
        # bucket: uploaded, config.json, what a reader takes as "an export", last): the one place the
        # destination is touched.
        with staged_folder(out, overwrite=cfg.overwrite, marker=CONFIG_NAME) as stage:
            export, files = _write_folder(cfg, src, stage, max_shard)
    pushed = None
    if cfg.push_to_hub:
        with storage.local_copy(out) as local:
            pushed = push_folder(local, cfg.push_to_hub, private=cfg.private, revision=cfg.revision,
                                 commit_message=commit_message(export))
    return ExportResult(out, export, files, pushed)
