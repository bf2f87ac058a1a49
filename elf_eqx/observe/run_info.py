"""``<output_dir>/run_info.json``: what a run is and what each of its starts ran on, written by
process 0 when a run starts or resumes (atomically), read by ``python -m elf_eqx.inspect``.

    {"config": {... the resolved run config, sections nested ...},
     "starts": [{"time": "2026-01-02T03:04:05Z", "from_step": 0, "total_steps": 250, "processes": 1,
                 "jax": "0.10.2", "tokens_per_step": 2048.0, "flops_per_step": 1.9e11, "devices": 1,
                 "device_kind": "cpu", "platform": "cpu", "peak_flops_per_device": null, "peak_from": "unknown"}],
     "wandb": {"id": "3f9a0c2b71de", "project": "elf", "entity": null}}

``wandb`` is kept across restarts so a resumed run continues the same wandb run
(:mod:`elf_eqx.observe.wandb_run`).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from elf_eqx.io import storage
from elf_eqx.io.atomic import write_text_atomic

RUN_INFO = "run_info.json"


def read_run_info(directory: str | Path | storage.AnyPath) -> dict[str, Any]:
    """The run info of ``directory`` (``{}`` when there is none, or it does not read)."""
    path = storage.as_path(directory) / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def write_run_info(directory: str | Path | storage.AnyPath, info: dict[str, Any]) -> None:
    """Replace ``directory``'s run info with ``info`` (atomically)."""
    write_text_atomic(storage.as_path(directory) / RUN_INFO, json.dumps(info, indent=1, sort_keys=True) + "\n")


def record_start(directory: str | Path | storage.AnyPath, config: dict[str, Any] | None, start: dict[str, Any]) -> dict[str, Any]:
    """Add one start (``start``: step, devices, ... with the time added) and the current ``config``
    to ``directory``'s run info; returns the info written."""
    import jax

    info = read_run_info(directory)
    if config is not None:
        info["config"] = config
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    info.setdefault("starts", []).append({"time": now, "jax": jax.__version__, **start})
    write_run_info(directory, info)
    return info
