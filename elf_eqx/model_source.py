"""One loader for every place an ELF to sample from can come from: a training run of ours, a
released checkpoint (file, orbax folder, local release folder) or a release on the hub."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from elf_eqx.checkpoint import STATE, load_model_from_checkpoint, stored_run_config
from elf_eqx.encoders.sources import is_hub_id
from elf_eqx.io.release_params import model_from_reference_params
from elf_eqx.model import ELF
from elf_eqx.release import (
    RELEASE_ENCODER_FALLBACK,
    RELEASE_LATENTS,
    RELEASE_TOKENIZER,
    RELEASED_TASKS,
    download_release,
    encoder_pickle,
    is_orbax_folder,
    newest_checkpoint,
    preset_name,
    release_params,
    task_of,
)


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model ready to sample from and everything sampling needs to know about it."""

    model: ELF
    tokenizer: str
    """Source for :func:`elf_eqx.encoders.load_tokenizer`."""
    encoder: str
    """Source for :func:`elf_eqx.encoders.load_text_encoder` (conditional sampling)."""
    latent_mean: float
    latent_std: float
    max_length: int
    max_input_length: int
    """0 for unconditional models."""
    pad_mode: str
    noise_scale: float
    t_eps: float
    p_mean: float
    p_std: float
    sampling: dict[str, Any]
    """Default sampler settings: method, num_steps, gamma, omega, cfg_weight, time_grid."""
    origin: str
    step: int | None


def _is_training_checkpoint(path: Path) -> bool:
    if (path / "checkpoints").is_dir() or (path / STATE).is_dir():
        return True
    return path.is_dir() and any(p.name.isdigit() and (p / STATE).is_dir() for p in path.iterdir())


def _from_training_run(path: Path, weights: str, step: int | None, encoder: str | None,
                       tokenizer: str | None) -> ModelBundle:
    run_config, step = stored_run_config(path, step)
    for needed in ("elf", "encoder", "data_spec"):
        if needed not in run_config:
            raise ValueError(f"{path}: the checkpoint's run config has no {needed!r} entry; cannot sample from it")
    model = load_model_from_checkpoint(path, "ema" if weights == "ema" else "model", step=step)
    run, spec = run_config.get("run", {}), run_config["data_spec"]
    sampling = {"method": run.get("sample_method", "sde"), "num_steps": run.get("sample_steps", 32),
                "gamma": run.get("sample_gamma", 1.5), "omega": run.get("sample_omega", 3.0),
                "cfg_weight": run.get("sample_cfg_weight", 1.0), "time_grid": run.get("sample_time_grid", "logit_normal")}
    defaults = RELEASE_LATENTS
    return ModelBundle(
        model=model,
        tokenizer=tokenizer or run_config.get("tokenizer") or run_config["encoder"],
        encoder=encoder or run_config["encoder"],
        latent_mean=run.get("latent_mean", defaults["latent_mean"]),
        latent_std=run.get("latent_std", defaults["latent_std"]),
        max_length=int(spec["max_length"]),
        max_input_length=int(spec.get("max_input_length") or 0),
        pad_mode=spec.get("pad_mode", "pad"),
        noise_scale=run.get("noise_scale", defaults["noise_scale"]),
        t_eps=run.get("t_eps", defaults["t_eps"]),
        p_mean=run.get("p_mean", defaults["p_mean"]),
        p_std=run.get("p_std", defaults["p_std"]),
        sampling=sampling,
        origin=f"{path} step {step} ({weights} weights)",
        step=step,
    )


def _from_release(checkpoint: Path, repo_root: Path, name: str, weights: str, encoder: str | None,
                  tokenizer: str | None, task: str | None) -> ModelBundle:
    chosen = task_of(name, task)
    flat, step = release_params(checkpoint, weights)
    model = model_from_reference_params(flat)
    layout = RELEASED_TASKS[chosen]
    pickle = encoder_pickle(repo_root)
    return ModelBundle(
        model=model,
        tokenizer=tokenizer or RELEASE_TOKENIZER,
        encoder=encoder or (str(pickle) if pickle is not None else RELEASE_ENCODER_FALLBACK),
        max_length=layout.max_length,
        max_input_length=layout.max_input_length,
        pad_mode=layout.pad_mode,
        sampling=dict(layout.sampling),
        origin=f"release {name} ({preset_name(model.config)}, task {chosen}, "
               f"{'ema_params1' if weights == 'ema' else 'params'}, step {step})",
        step=step,
        **RELEASE_LATENTS,
    )


def load_model_source(
    source: str,
    *,
    weights: Literal["ema", "raw"] = "ema",
    step: int | None = None,
    encoder: str | None = None,
    tokenizer: str | None = None,
    task: str | None = None,
) -> ModelBundle:
    """The :class:`ModelBundle` of ``source``:

    - a training output directory, its ``checkpoints/`` folder or one step folder (ours; latest
      step or ``step``): settings from the run config stored with the checkpoint;
    - a release checkpoint: a ``checkpoint_<step>`` Flax msgpack file or orbax folder, or a local
      folder holding release files (the newest ``checkpoint_<step>`` in it is used);
    - a hub release ``org/repo[/subpath]`` (downloaded once into the hub cache).

    ``weights``: ``ema`` (EMA / ``ema_params1``) or ``raw`` (``model`` / ``params``). ``encoder``,
    ``tokenizer`` and ``task`` (``owt``, ``de-en``, ``xsum``) override what is inferred.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and _is_training_checkpoint(path):
            return _from_training_run(path, weights, step, encoder, tokenizer)
        if path.is_file() or is_orbax_folder(path):
            return _from_release(path, path.parent, str(path), weights, encoder, tokenizer, task)
        return _from_release(newest_checkpoint(path), path, str(path), weights, encoder, tokenizer, task)
    parts = source.strip("/").split("/")
    if len(parts) >= 2 and is_hub_id("/".join(parts[:2])):
        root, checkpoint = download_release(source)
        return _from_release(checkpoint, root, source, weights, encoder, tokenizer, task)
    raise FileNotFoundError(f"model source not found: {source} (expected a training output directory, a "
                            "checkpoint file or folder, or a hub release org/repo[/subpath])")

