"""A process with a prefetching loader exits promptly: on SIGTERM through the training loop's
StopRequest (the saved position is exact), and at interpreter exit without close()."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np

from elf_eqx.data import DataSpec, Loader
from elf_eqx.data.layout import ROW_FEATURES

CHILD = """
import json, sys, time
import datasets
from elf_eqx.data import DataSpec, Loader
from elf_eqx.data.prefetch import Prefetcher
from elf_eqx.training.stop_signal import StopRequest

rows = datasets.load_from_disk(sys.argv[1])
fetched = Prefetcher(Loader(rows, DataSpec(vocab_size=50, pad_id=0, eos_id=1, max_length=8), 4, seed=3), depth=3)
if sys.argv[2] == "exit":
    next(fetched)
    time.sleep(0.5)  # the thread is now blocked on its full queue
    print("leaving", flush=True)
    sys.exit(0)  # no close()
n = 0
with StopRequest() as stop:
    while not stop.requested:  # a "step": take a batch, work a little, check for a signal
        next(fetched)
        n += 1
        print(n, flush=True)
        time.sleep(0.02)
json.dump({"batches": n, "state": fetched.state(), "signal": stop.requested}, open(sys.argv[3], "w"))
"""


def make_rows(path: Path) -> Path:
    rng = np.random.default_rng(0)
    ids = [rng.integers(2, 50, rng.integers(1, 9)).tolist() for _ in range(30)]
    rows = datasets.Dataset.from_dict({"input_ids": ids, "cond_length": [0] * 30}, features=ROW_FEATURES)
    rows.save_to_disk(str(path))
    return path


def test_exit_without_close_does_not_hang(tmp_path):
    rows = make_rows(tmp_path / "rows")
    done = subprocess.run([sys.executable, "-c", CHILD, str(rows), "exit"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "leaving"


def test_sigterm_saves_the_consumers_exact_position(tmp_path):
    rows = make_rows(tmp_path / "rows")
    out = tmp_path / "saved.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(rows), "run", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(10):  # ten steps in, a whole epoch (7 steps) behind it
            assert child.stdout.readline().strip()
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    saved = json.loads(out.read_text())
    assert saved["signal"] == "SIGTERM" and saved["batches"] >= 10
    plain = Loader(datasets.load_from_disk(str(rows)), DataSpec(vocab_size=50, pad_id=0, eos_id=1, max_length=8), 4,
                   seed=3)
    for _ in range(saved["batches"]):
        next(plain)
    assert saved["state"] == plain.state()
