"""``OUTPUT_DIR/distillation.json``: what a distillation distils and which of its rounds are
complete; each round's student lives in ``OUTPUT_DIR/steps_<n>`` (docs/method.md#distillation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from elf_eqx.io.storage import AnyPath
from elf_eqx.errors import ConfigError
from elf_eqx.io.atomic import write_text_atomic

MANIFEST = "distillation.json"


def round_dir(out: AnyPath, steps: int) -> AnyPath:
    """Where the student of ``steps`` steps is trained: ``OUTPUT_DIR/steps_<steps>``."""
    return out / f"steps_{steps}"


def distilled_source(path: AnyPath) -> AnyPath | None:
    """The newest complete round's directory of a distillation output folder (``None``: not one,
    or no round complete yet), so the folder itself reads as a model source."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None
    complete = [int(n) for n, entry in json.loads(manifest.read_text())["rounds"].items() if entry["complete"]]
    return round_dir(path, min(complete)) if complete else None


class Manifest:
    """``OUTPUT_DIR/distillation.json``: what is distilled, and which rounds are complete. A folder
    holding another distillation (another teacher, steps or grid) is refused."""

    def __init__(self, out: AnyPath, identity: dict[str, Any], student_steps: list[int]):
        self.path = out / MANIFEST
        self.identity = identity
        self.rounds: dict[str, dict[str, Any]] = {str(n): {"dir": round_dir(Path("."), n).name, "complete": False}
                                                  for n in student_steps}
        if self.path.is_file():  # the rounds recorded before (complete or not) and any new ones
            stored = json.loads(self.path.read_text())
            differing = sorted(k for k, v in self.identity.items() if stored.get("distils", {}).get(k) != v)
            if differing:
                raise ConfigError(f"{out} holds another distillation (differing: {', '.join(differing)}); use another "
                                  "--output-dir or the original settings")
            self.rounds.update(stored["rounds"])

    def complete(self, steps: int) -> bool:
        return self.rounds[str(steps)]["complete"]

    def save(self, steps: int | None = None) -> None:
        """Write the manifest (atomically), marking the round of ``steps`` steps complete."""
        if steps is not None:
            self.rounds[str(steps)]["complete"] = True
        if jax.process_index() == 0:
            write_text_atomic(self.path, json.dumps({"distils": self.identity, "rounds": self.rounds}, indent=2) + "\n")
