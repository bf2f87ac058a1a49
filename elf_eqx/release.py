"""The ELF reference release's checkpoints: where they are, how to read them, what they were
trained for (ELF_SPEC.md §2–§4).

A release repo (``embedded-language-flows/ELF-B-owt``, ``…/ELF-B-de-en``, ``…/ELF-B-xsum``,
``ELF-M-owt``, ``ELF-L-owt``) holds ``checkpoint_<step>`` — a Flax msgpack file, or a folder
holding an orbax PyTree checkpoint of the same dict ``{params, ema_params1, opt_state, step, …}``
— and the pickled T5 encoder ``t5_small_encoder_jax/t5_small_encoder_jax.pkl``. Neither format
needs Flax: msgpack is decoded by :mod:`elf_eqx.io.flax_msgpack`, orbax folders by orbax.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from elf_eqx.config import PRESETS, ELFConfig
from elf_eqx.io.flax_msgpack import flatten_params, read_flax_msgpack

RELEASE_TOKENIZER = "google-t5/t5-small"
RELEASE_ENCODER_FALLBACK = "google-t5/t5-small"
CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")
WEIGHTS_ENTRY = {"ema": "ema_params1", "raw": "params"}


@dataclasses.dataclass(frozen=True)
class ReleasedTask:
    """The data layout a released model was trained on and its released sampling settings."""

    max_length: int
    max_input_length: int
    pad_mode: str
    sampling: dict[str, Any]


_UNCONDITIONAL_SAMPLING = {"method": "sde", "num_steps": 32, "gamma": 1.5, "omega": 3.0, "cfg_weight": 1.0,
                           "time_grid": "logit_normal"}
_CONDITIONAL_SAMPLING = {"method": "ode", "num_steps": 64, "gamma": 0.0, "omega": 1.0, "cfg_weight": 2.0,
                         "time_grid": "logit_normal"}
RELEASED_TASKS: dict[str, ReleasedTask] = {
    "owt": ReleasedTask(1024, 0, "pad", _UNCONDITIONAL_SAMPLING),
    "de-en": ReleasedTask(128, 64, "eos", _CONDITIONAL_SAMPLING),
    "xsum": ReleasedTask(1088, 1024, "eos", _CONDITIONAL_SAMPLING),
}
# Shared by every release (ELF_SPEC.md §1, §3).
RELEASE_LATENTS = {"latent_mean": 0.0, "latent_std": 0.2, "noise_scale": 2.0, "t_eps": 0.05,
                   "p_mean": -1.5, "p_std": 0.8}


def task_of(name: str, task: str | None = None) -> str:
    """The released task of a source named ``name`` (``owt``, ``de-en``, ``xsum``), ``task`` if given;
    ``owt`` when the name does not say."""
    if task is not None:
        if task not in RELEASED_TASKS:
            raise ValueError(f"--task {task!r} is unknown; released tasks: {sorted(RELEASED_TASKS)}")
        return task
    lowered = name.lower()
    if "xsum" in lowered:
        return "xsum"
    if re.search(r"de[-_]?en|wmt", lowered):
        return "de-en"
    return "owt"


def preset_name(config: ELFConfig) -> str:
    """``ELF-B``/``ELF-M``/… when ``config``'s depth, width and heads are a preset's, else ``custom``."""
    for name, shape in PRESETS.items():
        if (config.depth, config.hidden_size, config.num_heads) == tuple(shape.values()):
            return name
    return "custom"


def is_orbax_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding one orbax checkpoint (its metadata files)."""
    return path.is_dir() and any((path / name).exists() for name in ("_METADATA", "_CHECKPOINT_METADATA",
                                                                          "manifest.ocdbt", "checkpoint"))


def newest_checkpoint(folder: Path) -> Path:
    """The ``checkpoint_<step>`` (file or folder) with the largest step in ``folder`` or below it."""
    found = [(int(m.group(1)), p) for p in folder.rglob("checkpoint_*") if (m := CHECKPOINT_NAME.match(p.name))]
    found = [(s, p) for s, p in found if not any(CHECKPOINT_NAME.match(q.name) for q in p.parents)]
    if not found:
        raise FileNotFoundError(f"{folder} holds no release checkpoint (checkpoint_<step> file or folder)")
    return max(found, key=lambda item: item[0])[1]


def encoder_pickle(folder: Path) -> Path | None:
    """The release's pickled T5 encoder under ``folder`` (``t5_small_encoder_jax.pkl`` preferred,
    else the only ``*.pkl``), or ``None``."""
    pickles = sorted(folder.rglob("*.pkl"))
    named = [p for p in pickles if p.name == "t5_small_encoder_jax.pkl"]
    if named:
        return named[0]
    return pickles[0] if len(pickles) == 1 else None


def read_release_tree(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a release file (Flax msgpack) or orbax folder, arrays as NumPy."""
    path = Path(path)
    if path.is_file():
        return read_flax_msgpack(path)
    if not is_orbax_folder(path):
        raise FileNotFoundError(f"{path} is neither a Flax msgpack checkpoint file nor an orbax checkpoint folder")
    import orbax.checkpoint as ocp

    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            tree = checkpointer.restore(path.absolute())
    except Exception as err:  # orbax raises many types for a damaged folder
        raise ValueError(f"{path}: cannot read this orbax checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(tree, dict):
        raise ValueError(f"{path} holds a {type(tree).__name__}, not a release checkpoint dict")
    return _to_numpy(tree)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree) if hasattr(tree, "shape") else tree


def release_params(path: str | Path, weights: str = "ema") -> tuple[dict[str, np.ndarray], int | None]:
    """The ``/``-joined parameters of a release checkpoint (``ema`` → ``ema_params1``, ``raw`` →
    ``params``; ``opt_state`` is ignored) and its step."""
    if weights not in WEIGHTS_ENTRY:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS_ENTRY)}, got {weights!r}")
    tree = read_release_tree(path)
    entry = WEIGHTS_ENTRY[weights]
    if entry not in tree:
        raise KeyError(f"{path} has no {entry!r} entry; it holds {sorted(tree)}")
    step = tree.get("step")
    return flatten_params(tree[entry]), None if step is None else int(np.asarray(step))


def download_release(hub_id: str) -> tuple[Path, Path]:
    """Fetch the newest checkpoint of a hub release ``org/repo[/subpath]`` and its encoder pickle;
    returns (the local repo root, the local checkpoint path)."""
    from huggingface_hub import list_repo_files, snapshot_download

    parts = hub_id.strip("/").split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    prefix = f"{sub}/" if sub else ""
    try:
        files = list_repo_files(repo)
        steps = {}
        for name in files:
            if not name.startswith(prefix):
                continue
            head = name[len(prefix):].split("/")[0]
            if m := CHECKPOINT_NAME.match(head):
                steps[int(m.group(1))] = prefix + head
        if not steps:
            raise FileNotFoundError(f"hub repo {repo} has no checkpoint_<step> under {prefix or 'its root'}")
        chosen = steps[max(steps)]
        root = Path(snapshot_download(repo, allow_patterns=[chosen, f"{chosen}/*", f"{chosen}/**", "*.pkl", "**/*.pkl"]))
    except FileNotFoundError:
        raise
    except Exception as err:  # hub client errors have many types; all mean "cannot have it"
        raise FileNotFoundError(f"could not fetch the release {hub_id!r} from the Hugging Face hub "
                                f"({type(err).__name__}: {err}); offline, pass a local checkpoint path") from err
    return root, root / chosen
