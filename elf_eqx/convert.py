"""``python -m elf_eqx.convert``: write a released ELF checkpoint once into our orbax format.

    python -m elf_eqx.convert embedded-language-flows/ELF-B-owt runs/elf_b_owt
    python -m elf_eqx.convert ELF-B-de-en/checkpoint_100000 runs/elf_b_de_en --weights both --copy-encoder

The result is a run output directory (``OUTPUT/checkpoints/<step>/``) that
``load_model_source(OUTPUT)`` and ``load_model_from_checkpoint(OUTPUT)`` read directly, with the
release's data layout, latent normalisation and sampling defaults in its stored run config. The
release's optimizer state is not converted. Nothing existing is ever overwritten.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from elf_eqx.io.storage import AnyPath, check_bucket, is_remote, user_path
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.errors import ConfigError, OutputExistsError
from elf_eqx.io.atomic import refuse_existing, staged_file, staged_folder
from elf_eqx.release.model_source import ModelBundle, load_model_source_weights
from elf_eqx.release.as_run import release_data_spec_for, release_run_record  # noqa: F401  (release_run_record's old home)
from elf_eqx.release.tasks import task_of
from elf_eqx.training.checkpoint import CheckpointManager


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Convert a released ELF checkpoint (or any model source) into an elf_eqx run directory (orbax)."""

    source: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """Release checkpoint file (checkpoint_<step>), release orbax folder, local release folder, hub id
    org/repo[/subpath], or one of our run directories."""
    output_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT_DIR")]
    """New run directory to write OUTPUT_DIR/checkpoints/<step>/ into; must not hold checkpoints already."""
    weights: Literal["ema", "raw", "both"] = "ema"
    """Weights to store: ema (ema_params1), raw (params), or both (params as 'model', ema_params1 as 'ema')."""
    task: Literal["owt", "de-en", "xsum"] | None = None
    """Released task when the source's name does not say it (the default is owt): sets the data layout
    and sampling defaults."""
    encoder: str | None = None
    """Frozen encoder to record (default: the release's T5 pickle, else google-t5/t5-small)."""
    tokenizer: str | None = None
    """Tokenizer to record (default: google-t5/t5-small)."""
    architecture: str | None = None
    """Check that the weights are this preset (ELF-B, ELF-M, ELF-L); a misfit lists every name and shape that
    differs. Default: inferred from the shapes."""
    step: int | None = None
    """Which checkpoint_<step> of a release folder or hub repo (default: the newest)."""
    copy_encoder: bool = False
    """Copy the release's encoder pickle (or encoder folder) into OUTPUT_DIR and record that copy,
    so the converted directory is self-contained."""


def _stored_parts(bundles: dict[str, ModelBundle], weights: str) -> dict[str, Any]:
    """The state to save: our checkpoints keep the sampling weights under ``ema`` (what
    :func:`load_model_from_checkpoint` restores) and the raw ones under ``model``."""
    if weights == "both":
        return {"model": bundles["raw"].model, "ema": bundles["ema"].model}
    if weights == "raw":
        return {"model": bundles["raw"].model, "ema": bundles["raw"].model}
    return {"ema": bundles["ema"].model}


def _remove(path: Path) -> None:
    """Delete a file or folder this conversion wrote (if it is there)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _copy_encoder(encoder: str, out: AnyPath) -> AnyPath:
    """Copy a local encoder file or folder into ``out`` (staged under a hidden name, then renamed)."""
    source = Path(encoder)
    if not source.exists():
        raise ConfigError(f"--copy-encoder: the encoder {encoder!r} is not a local file or folder")
    target = refuse_existing(out / source.name, flag=None)
    if source.is_dir():
        with staged_folder(target, flag=None) as partial:
            shutil.copytree(source, partial, dirs_exist_ok=True)
    else:
        with staged_file(target) as partial:
            shutil.copyfile(source, partial)
    return target


def convert(cfg: ConvertConfig) -> AnyPath:
    """Write ``cfg.source`` into ``cfg.output_dir``; returns the step folder written."""
    out = user_path(cfg.output_dir, "--output-dir")
    check_bucket(out, "--output-dir")
    checkpoints = out / "checkpoints"
    # Only complete steps count: orbax replaces a killed save's temporary folder.
    if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
        raise OutputExistsError(f"{out} already holds checkpoints; converting never overwrites: choose a new directory")
    kinds = ("raw", "ema") if cfg.weights == "both" else (cfg.weights,)
    bundles = load_model_source_weights(cfg.source, kinds, step=cfg.step, encoder=cfg.encoder,
                                        tokenizer=cfg.tokenizer, task=cfg.task, architecture=cfg.architecture)
    bundle = bundles[kinds[-1]]
    if bundle.record is not None:  # one of ours (a run, an exported model): keep its run record, drop the optimizer state
        record = dataclasses.replace(bundle.record, encoder=bundle.encoder, tokenizer=bundle.tokenizer,
                                     converted_from=bundle.origin)
    else:
        task = task_of(cfg.source, cfg.task)
        record = release_run_record(bundle, release_data_spec_for(bundle, task, cfg.tokenizer))
    copied = _copy_encoder(bundle.encoder, out) if cfg.copy_encoder else None
    if copied is not None:
        record = dataclasses.replace(record, encoder=str(copied if is_remote(copied) else copied.absolute()))
    step = bundle.step or 0
    try:
        with CheckpointManager(out, max_to_keep=None, run_record=record) as manager:
            manager.save(step, _stored_parts(bundles, cfg.weights),
                         {"converted_from": bundle.origin, "weights": cfg.weights})
    except BaseException:
        if copied is not None:
            _remove(copied)
        raise
    return checkpoints / str(step)


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry; expected failures end as one line (exit 2, see :mod:`elf_eqx.cli.errors`;
    ``--debug`` shows the traceback)."""
    with flag_errors():
        cfg = tyro.cli(ConvertConfig, args=argv, description=__doc__)
    written = convert(cfg)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
