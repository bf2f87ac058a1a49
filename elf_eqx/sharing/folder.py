"""An exported folder read back: its network, built from ``config.json``'s architecture and filled
from the safetensors weights one tensor at a time (on one device), and its tokenizer, checked against
the model. Every misfit is a one-line :class:`~elf_eqx.errors.UserError` naming the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from elf_eqx.data.spec import DataSpec
from elf_eqx.encoders.load import load_tokenizer
from elf_eqx.errors import DataError, IncompatibleModelError, UserError
from elf_eqx.io.safetensors_io import SafetensorsFolder, TensorInfo
from elf_eqx.release.tasks import preset_name
from elf_eqx.sharing.record import ExportRecord
from elf_eqx.training.state_tree import fill_template, named_leaves
from elf_eqx.tree_paths import dotted

_MAX_LISTED = 6


def network_tensors(model: Any) -> list[tuple[tuple[str, ...], TensorInfo]]:
    """The tensors an export stores for the network ``model`` (concrete or abstract): each array
    leaf under its checkpoint name (``blocks.attn.qkv.weight``: the names orbax stores, less the
    state's ``ema``/``model`` part), in the network's leaf order."""
    return [(names, TensorInfo(dotted(names), tuple(int(n) for n in leaf.shape), np.dtype(leaf.dtype)))
            for names, leaf in named_leaves(model)]


def weight_misfits(expected: dict[str, TensorInfo], stored: dict[str, TensorInfo]) -> list[str]:
    """Every tensor the network expects that the weights lack or hold in another shape or dtype,
    and every stored tensor the network has no place for."""
    problems = []
    for name, want in expected.items():
        have = stored.get(name)
        if have is None:
            problems.append(f"{name} missing (expected {list(want.shape)} {want.dtype})")
        elif have.shape != want.shape:
            problems.append(f"{name}: weights {list(have.shape)} vs config {list(want.shape)}")
        elif have.dtype != want.dtype:
            problems.append(f"{name}: weights dtype {have.dtype} vs config {want.dtype}")
    problems += [f"{name} in the weights but not in the network" for name in stored if name not in expected]
    return problems


def load_exported_network(folder: Path, record: ExportRecord) -> eqx.Module:
    """The network of the exported ``folder`` on this process's first device: built from its
    record's family and architecture, each array read from the safetensors files in turn. Weights
    that do not fit the architecture are one :class:`~elf_eqx.errors.IncompatibleModelError` listing
    the tensors that differ."""
    family = record.run.model_family
    template = family.network_template(record.run.architecture)
    expected = network_tensors(template)
    weights = SafetensorsFolder(folder)
    problems = weight_misfits({info.name: info for _, info in expected}, weights.info())
    if problems:
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise IncompatibleModelError(
            f"{folder}: the weights do not fit its config.json ({family.name} {preset_name(template.config)}): "
            f"{'; '.join(problems[:_MAX_LISTED])}{more}")
    device = jax.local_devices()[0]
    arrays = {names: jax.device_put(weights.read(info.name), device) for names, info in expected}
    return fill_template(template, arrays)


def check_tokenizer(folder: Path, record: ExportRecord, tokenizer: str) -> None:
    """The tokenizer ``tokenizer`` (the folder's own files, or an override) must be the one the
    model was trained with: as many ids as the data layout says, and the same pad and EOS ids;
    otherwise one line naming the folder and what differs."""
    spec = record.run.data_spec
    try:
        tok = load_tokenizer(tokenizer)
        found = DataSpec.from_tokenizer(tok, spec.max_length, max_input_length=spec.max_input_length,
                                        pad_mode=spec.pad_mode)
    except DataError as err:
        raise IncompatibleModelError(f"{folder}: the tokenizer {tokenizer} does not match the model ({err})") from None
    except UserError as err:
        raise type(err)(f"{folder}: the tokenizer {tokenizer} cannot be loaded ({' '.join(str(err).split())})") from None
    problems = [f"{what} {getattr(found, name)} vs the model's {getattr(spec, name)}"
                for name, what in (("vocab_size", "ids"), ("pad_id", "pad id"), ("eos_id", "EOS id"))
                if getattr(found, name) != getattr(spec, name)]
    if problems:
        raise IncompatibleModelError(f"{folder}: the tokenizer {tokenizer} does not match the model it was exported "
                                     f"with: {', '.join(problems)}")


def exported_encoder(folder: Path, record: ExportRecord) -> str:
    """Where the exported model's frozen encoder is: its bundled copy, else the source it names."""
    if record.encoder.bundled:
        return str((folder / record.encoder.bundled).absolute())
    return record.encoder.source or record.run.encoder or ""

