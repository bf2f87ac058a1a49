"""``python -m elf_eqx.convert``: write a released ELF checkpoint once into our orbax format.

    python -m elf_eqx.convert embedded-language-flows/ELF-B-owt runs/elf_b_owt
    python -m elf_eqx.convert ELF-B-de-en/checkpoint_100000 runs/elf_b_de_en --weights both --copy-encoder

The result is a run output directory (``OUTPUT/checkpoints/<step>/``) that
``python -m elf_eqx.sample OUTPUT`` and ``load_model_from_checkpoint(OUTPUT)`` read directly,
with the release's data layout, latent normalisation and sampling defaults recorded. The
release's optimizer state is not converted.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Literal

import tyro

from elf_eqx.checkpoint import CheckpointManager
from elf_eqx.model_source import ModelBundle, load_model_source


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Convert a released ELF checkpoint into an elf_eqx run directory (orbax)."""

    source: tyro.conf.Positional[str]
    """Release checkpoint file (checkpoint_<step>), orbax folder, local release folder, or hub id org/repo[/subpath]."""
    output_dir: tyro.conf.Positional[str]
    """New run directory to write; must not hold checkpoints already."""
    weights: Literal["ema", "raw", "both"] = "ema"
    """Which weights to keep: ema_params1, params, or both (params as the raw model)."""
    task: str | None = None
    """Released task when the source's name does not say: owt, de-en or xsum."""
    encoder: str | None = None
    """Frozen encoder to record (default: the release's pickle, else google-t5/t5-small)."""
    tokenizer: str | None = None
    """Tokenizer to record (default: google-t5/t5-small)."""
    copy_encoder: bool = False
    """Copy the release's encoder pickle into the output directory, so it is self-contained."""


def run_config_of(bundle: ModelBundle, origin: str) -> dict:
    """The run config a converted checkpoint is stored with (what :mod:`elf_eqx.model_source` reads)."""
    s = bundle.sampling
    return {
        "elf": dataclasses.asdict(bundle.model.config),
        "encoder": bundle.encoder,
        "tokenizer": bundle.tokenizer,
        "data_spec": {"max_length": bundle.max_length, "max_input_length": bundle.max_input_length or None,
                      "pad_mode": bundle.pad_mode},
        "run": {"latent_mean": bundle.latent_mean, "latent_std": bundle.latent_std,
                "noise_scale": bundle.noise_scale, "t_eps": bundle.t_eps, "p_mean": bundle.p_mean,
                "p_std": bundle.p_std, "sample_method": s["method"], "sample_steps": s["num_steps"],
                "sample_gamma": s["gamma"], "sample_omega": s["omega"], "sample_cfg_weight": s["cfg_weight"],
                "sample_time_grid": s["time_grid"]},
        "converted_from": origin,
    }


def convert(cfg: ConvertConfig) -> Path:
    """Write ``cfg.source`` into ``cfg.output_dir``; returns the step folder written."""
    out = Path(cfg.output_dir)
    if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise FileExistsError(f"{out} already holds checkpoints; converting never overwrites: choose a new directory")
    load = dict(task=cfg.task, encoder=cfg.encoder, tokenizer=cfg.tokenizer)
    ema = load_model_source(cfg.source, weights="raw" if cfg.weights == "raw" else "ema", **load)
    state = {"ema": ema.model}
    if cfg.weights == "both":
        state["model"] = load_model_source(cfg.source, weights="raw", **load).model
    elif cfg.weights == "raw":
        state = {"ema": ema.model, "model": ema.model}
    encoder = ema.encoder
    if cfg.copy_encoder and Path(encoder).is_file():
        out.mkdir(parents=True, exist_ok=True)
        copied = out / Path(encoder).name
        if copied.exists():
            raise FileExistsError(f"{copied} exists; converting never overwrites")
        shutil.copyfile(encoder, copied)
        encoder = str(copied.absolute())
    bundle = dataclasses.replace(ema, encoder=encoder)
    step = ema.step or 0
    with CheckpointManager(out, max_to_keep=None, run_config=run_config_of(bundle, ema.origin)) as manager:
        manager.save(step, state, {"converted_from": ema.origin, "weights": cfg.weights})
    return out / "checkpoints" / str(step)


def main(argv: list[str] | None = None) -> None:
    """CLI entry; known failures end as one line naming the culprit."""
    cfg = tyro.cli(ConvertConfig, args=argv)
    try:
        written = convert(cfg)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
