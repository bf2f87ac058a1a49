"""Where a release's files are: the ``checkpoint_<step>`` files or folders and the pickled T5
encoder inside a local release folder, and the download of a hub release ``org/repo[/subpath]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from elf_eqx.errors import MissingInputError

CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")
ENCODER_PICKLE_NAME = "t5_small_encoder_jax.pkl"


def release_checkpoints(folder: Path) -> dict[int, Path]:
    """Step → ``checkpoint_<step>`` file or folder anywhere under ``folder`` (not inside another
    checkpoint folder)."""
    found: dict[int, Path] = {}
    for path in sorted(folder.rglob("checkpoint_*")):
        match = CHECKPOINT_NAME.match(path.name)
        inside_checkpoint = any(CHECKPOINT_NAME.match(p.name) for p in path.relative_to(folder).parents)
        if match and not inside_checkpoint:
            found.setdefault(int(match.group(1)), path)
    return found


def pick_checkpoint(folder: Path, step: int | None = None) -> Path:
    """The newest ``checkpoint_<step>`` under ``folder``, or the one of ``step``."""
    found = release_checkpoints(folder)
    if not found:
        raise MissingInputError(f"{folder} holds no release checkpoint (a checkpoint_<step> file or folder), "
                                "no training checkpoints (checkpoints/<step>/) and no config.json of an exported model")
    if step is None:
        return found[max(found)]
    if step not in found:
        raise MissingInputError(f"{folder} has no checkpoint_{step}; its steps: {sorted(found)}")
    return found[step]


def encoder_pickle(folder: Path, repo_root: Path | None = None) -> Path | None:
    """The release's pickled T5 encoder: ``t5_small_encoder_jax.pkl`` or the only ``*.pkl``,
    looked for under ``folder`` and then under ``repo_root``; ``None`` when neither has one."""
    for where in [folder] + ([repo_root] if repo_root is not None and repo_root != folder else []):
        if not where.is_dir():
            continue
        pickles = sorted(where.rglob("*.pkl"))
        named = [p for p in pickles if p.name == ENCODER_PICKLE_NAME]
        if named:
            return named[0]
        if len(pickles) == 1:
            return pickles[0]
    return None


def split_hub_release(hub_id: str) -> tuple[str, str]:
    """``org/repo[/subpath]`` → (``org/repo``, ``subpath`` or ``""``)."""
    parts = [p for p in hub_id.strip("/").split("/") if p]
    return "/".join(parts[:2]), "/".join(parts[2:])


def _newest_on_hub(repo: str, prefix: str, step: int | None, revision: str | None = None) -> str | None:
    """The repo path of the ``checkpoint_<step>`` to fetch, from the repo's file list; ``None``
    when the list cannot be had (offline: the local cache decides)."""
    from huggingface_hub import list_repo_files

    try:
        files = list_repo_files(repo, **({"revision": revision} if revision else {}))
    except Exception:  # offline or unreachable; snapshot_download may still serve the cache
        return None
    steps: dict[int, str] = {}
    for name in files:
        if name.startswith(prefix) and (match := CHECKPOINT_NAME.match(name[len(prefix):].split("/")[0])):
            steps[int(match.group(1))] = prefix + name[len(prefix):].split("/")[0]
    if not steps:
        raise MissingInputError(f"hub repo {repo} has no checkpoint_<step> under {prefix or 'its root'}")
    if step is not None and step not in steps:
        raise MissingInputError(f"hub repo {repo} has no {prefix}checkpoint_{step}; its steps: {sorted(steps)}")
    return steps[step if step is not None else max(steps)]


def download_release(hub_id: str, step: int | None = None, revision: str | None = None) -> tuple[Path, Path]:
    """Fetch a hub release ``org/repo[/subpath]`` with ``huggingface_hub.snapshot_download``: one
    ``checkpoint_<step>`` (the newest, or ``step``) and the ``*.pkl`` encoder, nothing else (at
    ``revision``: a branch, tag or commit; default the main branch).
    Returns (the local repo root, the local release folder ``root/subpath``)."""
    from huggingface_hub import snapshot_download

    repo, sub = split_hub_release(hub_id)
    prefix = f"{sub}/" if sub else ""
    chosen = _newest_on_hub(repo, prefix, step, revision)
    # fnmatch patterns: "*" also matches "/", so "x/*" takes a whole orbax folder.
    checkpoints = [chosen, f"{chosen}/*"] if chosen else [f"{prefix}checkpoint_*"]
    try:
        at = {"revision": revision} if revision else {}
        root = Path(snapshot_download(repo, allow_patterns=[*checkpoints, "*.pkl"], **at))
    except Exception as err:  # hub client errors have many types; all mean "cannot have it"
        raise MissingInputError(f"could not fetch the release {hub_id!r} from the Hugging Face hub "
                                f"({type(err).__name__}: {err}); offline, pass a local checkpoint path") from err
    folder = root / sub if sub else root
    if not folder.is_dir():
        raise MissingInputError(f"hub release {hub_id!r}: the downloaded repo has no folder {sub!r}")
    return root, folder
