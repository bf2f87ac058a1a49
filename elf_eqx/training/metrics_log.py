"""What a training run writes besides checkpoints: metrics as JSONL (append-only, flushed per
record), optional wandb/TensorBoard mirrors, and sample text files written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elf_eqx.io.atomic import write_text_atomic  # noqa: F401  (moved to elf_eqx.io.atomic; old imports keep working)


class MetricsLog:
    """Appends one JSON object per line to ``<dir>/metrics.jsonl``; never truncates what is there.

    With ``wandb``/``tensorboard`` the same scalars go to those too (imported only when asked).
    """

    def __init__(self, directory: str | Path, *, config: dict | None = None, wandb: bool = False, tensorboard: bool = False):
        self.path = Path(directory) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)
        self._wandb = None
        self._tb = None
        if wandb:
            import wandb as wandb_lib  # optional dependency

            self._wandb = wandb_lib.init(config=config, dir=str(directory), resume="allow")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency

            self._tb = SummaryWriter(str(Path(directory) / "tensorboard"))

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` (numbers or strings) for ``step``."""
        record = {"step": int(step), **{k: (float(v) if not isinstance(v, str) else v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        numeric = {k: v for k, v in record.items() if isinstance(v, float)}
        if self._wandb is not None:
            self._wandb.log(numeric, step=int(step))
        if self._tb is not None:
            for name, value in numeric.items():
                self._tb.add_scalar(name, value, int(step))

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
