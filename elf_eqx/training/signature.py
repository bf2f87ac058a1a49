"""What identifies the model a checkpoint directory belongs to, and the JSON form of PRNG keys."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from elf_eqx.config import RUNTIME_FIELDS, ELFConfig

# Top-level entries of a run config that must match to resume a directory. The resolved run
# config as a whole ("run": learning rate, max_steps, ...) may change between resumes.
# "family" (elf, mdlm, ar) is absent from runs written before the baselines: those are ELF runs.
SIGNATURE_KEYS: tuple[str, ...] = ("family", "elf", "encoder", "tokenizer", "data_spec")
# ELFConfig fields a resume may change, left out of the signature: the run-time fields (bf16
# matmuls, rematerialisation, other dropout rates, ...) but the attention kernel, which every stored
# signature carries (it was added after this list) and which therefore still has to match.
UNSIGNED_ELF_FIELDS: tuple[str, ...] = tuple(name for name in RUNTIME_FIELDS if name != "attention")


def as_json(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip (tuples become lists), so it compares equal to what is read back."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as err:
        raise TypeError(f"checkpoint {what} must be JSON-serialisable: {err}") from None


def model_signature(run_config: Mapping[str, Any] | None, elf_config: ELFConfig | None) -> dict[str, Any]:
    """The :data:`SIGNATURE_KEYS` entries of ``run_config``; ``elf`` from ``elf_config`` when given."""
    sig = {k: run_config[k] for k in SIGNATURE_KEYS if run_config is not None and k in run_config}
    if elf_config is not None:
        sig["elf"] = dataclasses.asdict(elf_config)
    if isinstance(sig.get("elf"), Mapping):
        sig["elf"] = {k: v for k, v in sig["elf"].items() if k not in UNSIGNED_ELF_FIELDS}
    return as_json(sig, "run config")


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


_ABSENT = "<absent>"


def signature_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"field: stored → current"`` for each differing field. Top-level entries that only one side
    records are not compared (a directory saved without a run config cannot vouch for its encoder)."""
    diffs = []
    for key in sorted(set(stored) & set(current)):
        old, new = _flat(stored[key], key), _flat(current[key], key)
        for field in sorted(set(old) | set(new)):
            a, b = old.get(field, _ABSENT), new.get(field, _ABSENT)
            if a != b:
                diffs.append(f"{field}: {a!r} → {b!r}")
    return diffs


def key_to_json(key: jax.Array) -> dict[str, Any]:
    """A PRNG key (typed, or a legacy ``uint32`` key) as ``{"impl": name | None, "data": nested list}``."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"impl": str(jax.random.key_impl(key)), "data": np.asarray(jax.random.key_data(key)).tolist()}
    return {"impl": None, "data": np.asarray(key).tolist()}


def key_from_json(record: Mapping[str, Any]) -> jax.Array:
    """The key :func:`key_to_json` wrote: typed again when it was typed."""
    data = np.asarray(record["data"], np.uint32)
    if record["impl"] is None:
        return jax.numpy.asarray(data)
    return jax.random.wrap_key_data(data, impl=record["impl"])
