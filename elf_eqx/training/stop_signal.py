"""Turn SIGTERM/SIGINT into a request to stop after the current step (then save and exit 0)."""

from __future__ import annotations

import signal
from types import FrameType


class StopRequest:
    """While active, SIGTERM and SIGINT set :attr:`requested` instead of killing the process;
    a second SIGINT falls back to the default (immediate) behaviour."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
