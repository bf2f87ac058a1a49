"""Exported models on the Hugging Face hub: found and fetched with ``huggingface_hub``
(``hf_hub_download`` of ``config.json``, then ``snapshot_download`` of the folder: the hub cache, so
``HF_HUB_OFFLINE=1`` serves what was fetched before), and pushed with ``upload_folder``.

Every call to the hub goes through :func:`hub_api` (push) or the two download functions named here,
so a test can stand in for the network."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from elf_eqx.errors import MissingInputError
from elf_eqx.sharing.record import CONFIG_NAME, is_export_config


def hub_export_config(repo: str, sub: str = "", revision: str | None = None) -> Path | None:
    """The folder holding the downloaded ``config.json`` of the export in hub repo ``repo`` (under
    ``sub``, at ``revision``), and nothing else of it (what a dry run reads): ``None`` when that file
    cannot be had or is not an elf_eqx export's (a release repo, read as one by
    :func:`elf_eqx.release.files.download_release`)."""
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo, f"{_prefix(sub)}{CONFIG_NAME}", revision=revision))
    except Exception:  # not there, offline and not cached, no access: not (reachable as) an export
        return None
    return config.parent if is_export_config(config) else None


def hub_export_folder(repo: str, sub: str = "", revision: str | None = None) -> Path | None:
    """The local copy of the whole export held by hub repo ``repo`` (under ``sub``, at
    ``revision``); ``None`` as :func:`hub_export_config` says."""
    from huggingface_hub import snapshot_download

    if hub_export_config(repo, sub, revision) is None:
        return None
    prefix = _prefix(sub)
    try:
        root = Path(snapshot_download(repo, revision=revision, allow_patterns=[f"{prefix}*"]))
    except Exception as err:  # hub client errors have many types; all mean "cannot have it"
        raise MissingInputError(f"could not fetch the exported model {repo}{'/' + sub if sub else ''} "
                                f"(revision {revision or 'main'}) from the Hugging Face hub "
                                f"({type(err).__name__}: {err})") from err
    return root / prefix if prefix else root


def _prefix(sub: str) -> str:
    return f"{sub.strip('/')}/" if sub.strip("/") else ""


def hub_api() -> Any:
    """The hub client the push uses (``huggingface_hub.HfApi``; a test replaces this function)."""
    from huggingface_hub import HfApi

    return HfApi()


@dataclasses.dataclass(frozen=True)
class PushResult:
    """Where a push went: the repo, the revision (branch) and the commit's URL, if the hub said it."""

    repo: str
    revision: str | None
    url: str | None


def push_folder(folder: Path, repo: str, *, private: bool = False, revision: str | None = None,
                commit_message: str) -> PushResult:
    """Upload the exported ``folder`` to the hub model repo ``repo`` (created, ``private`` if asked,
    when it does not exist; ``revision``: a branch, created from the default one when missing) in
    one commit of ``commit_message``. A hub that refuses or cannot be reached is a one-line
    :class:`~elf_eqx.errors.MissingInputError` naming the repo; the folder stays as written."""
    api = hub_api()
    try:
        api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id=repo, repo_type="model", branch=revision, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", revision=revision,
                                 commit_message=commit_message)
    except Exception as err:  # hub client errors have many types; all mean "the push did not happen"
        raise MissingInputError(f"could not push {folder} to the Hugging Face hub repo {repo} "
                                f"({type(err).__name__}: {' '.join(str(err).split())}); the exported folder is "
                                f"kept: push it later with hf upload {repo} {folder}") from err
    url = getattr(info, "commit_url", None) or (info if isinstance(info, str) else None)
    return PushResult(repo, revision, url)
