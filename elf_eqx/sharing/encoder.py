"""The frozen encoder of an exported model: named by a reference the hub resolves (``google-t5/t5-small``,
or ``offline-minilm``, which every elf_eqx install with the offline extra has), or bundled into the
folder (``--bundle-encoder``, for offline use) as a Hugging Face checkpoint folder — ``config.json``
and safetensors — that :func:`elf_eqx.encoders.load.load_text_encoder` reads like any other."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from elf_eqx.encoders.load import load_encoder_config, load_text_encoder, t5_hf_tensors
from elf_eqx.encoders.sources import OFFLINE_MINILM, is_hub_id, read_config, resolve_source
from elf_eqx.encoders.t5 import T5Encoder
from elf_eqx.errors import ConfigError, UserError
from elf_eqx.io.safetensors_io import INDEX_NAME, iter_infos, write_safetensors
from elf_eqx.sharing.record import BUNDLED_ENCODER, CONFIG_NAME


def is_reference(source: str) -> bool:
    """Whether ``source`` names an encoder another machine can load without this one's files: a
    hub id, or ``offline-minilm``; not a path that exists here."""
    return source == OFFLINE_MINILM or (is_hub_id(source) and not Path(source).expanduser().exists())


def encoder_config(source: str) -> dict[str, Any] | None:
    """The configuration of the encoder at ``source`` (``model_type`` and the fields the encoder
    uses), or ``None`` when it cannot be read without its weights (a pickle, the hub offline)."""
    try:
        config = load_encoder_config(source)
        model_type = read_config(resolve_source(source)).get("model_type")
    except UserError:
        return None
    return {"model_type": model_type, **dataclasses.asdict(config)}


def bundle_encoder(source: str, export: Path) -> tuple[str, dict[str, Any]]:
    """Write the encoder at ``source`` into ``export/encoder/`` as a Hugging Face checkpoint folder:
    a checkpoint folder's (or hub repo's) ``config.json`` and safetensors copied as they are, a
    pickled Flax T5 encoder (the release's) written as ``T5EncoderModel`` safetensors with its
    config. Returns the folder's name and the encoder's configuration."""
    path = resolve_source(source)
    target = export / BUNDLED_ENCODER
    target.mkdir()
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        files = [path / CONFIG_NAME, *sorted(path.glob("*.safetensors"))]
        if (path / INDEX_NAME).is_file():
            files.append(path / INDEX_NAME)
        if len(files) == 1:
            raise ConfigError(f"--bundle-encoder: the encoder {source} ({path}) holds no safetensors weights")
        for file in files:
            shutil.copyfile(file, target / file.name)
        config = encoder_config(str(target))
    else:  # a pickled Flax T5 encoder: written in Hugging Face's layout
        encoder = load_text_encoder(source)
        if not isinstance(encoder, T5Encoder):
            raise ConfigError(f"--bundle-encoder: cannot bundle the encoder {source}")
        tensors = t5_hf_tensors(encoder)
        write_safetensors(target, list(iter_infos(tensors)), lambda info: tensors[info.name],
                          metadata={"format": "pt"})
        (target / CONFIG_NAME).write_text(json.dumps(encoder.config.to_hf(), indent=2) + "\n")
        config = {"model_type": "t5", **dataclasses.asdict(encoder.config)}
    return BUNDLED_ENCODER, config or {}
