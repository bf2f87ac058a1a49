"""Test-wide settings.

Every ``elf_eqx`` module is imported under jaxtyping's import hook with beartype (see
``--jaxtyping-packages`` in pyproject.toml and ``strict_beartype.py``), so each annotated shape,
and every item of an annotated container, is checked at run time.

Layout: ``unit/`` tests one module in process; ``integration/`` runs CLIs, subprocesses,
several devices or whole training runs. Shared helpers (``helpers``, ``run_fixtures``,
``metrics_fixtures``, ``sharding_check.py``) stay here, on pytest's ``pythonpath``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA flags given to the suite (e.g. ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``, which .ci/run uses to
# compile for a narrower CPU) are kept, here and in every subprocess (helpers.xla_flags), with:
# - XLA's cheapest optimisation level unless another is given: the test models are tiny, so compile
#   time dominates, and it halves the suite's wall time without changing what is computed;
# - no forced device count: in-process tests see one CPU device whatever the host exposes, and a test
#   that needs several starts a subprocess with its own count (integration/test_sharding.py).
_flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
if not any(f.startswith("--xla_backend_optimization_level") for f in _flags):
    _flags.append("--xla_backend_optimization_level=0")
os.environ["XLA_FLAGS"] = " ".join(_flags)
# One persistent compilation cache for the whole run: its in-process tests, its pytest-xdist workers
# and every subprocess they start (CLIs, multi-process jobs, restarts) compile each program once.
# Most of the suite's time is compiling the same tiny programs again in a new process; what is
# computed does not change. A cache given by the caller is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="elf_eqx_tests_xla_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The TPU targets are compile-only (no chip is opened), and the suite's workers and subprocesses load
# libtpu side by side: they share it rather than race for its process lock. The one test of the lock
# (integration/test_aot_libtpu_lock.py) removes this from its subprocesses' environment.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The package under test is this checkout's, here and in every subprocess (CLIs, multi-process
# runs), even where another checkout of it is the one installed.
_CHECKOUT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _CHECKOUT)
os.environ["PYTHONPATH"] = os.pathsep.join([_CHECKOUT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])

import jax  # noqa: E402  (after the environment above)

# Run CPU computations in the calling thread: under heavy load on the 2-core machines the tests
# run on, a wait for an asynchronously dispatched CPU result was seen never to be woken (every XLA
# thread idle, the caller blocked); synchronous dispatch has no such hand-over. Nothing computed
# changes.
jax.config.update("jax_cpu_enable_async_dispatch", False)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout: reference fixtures and data (CI provides it)."""
    if not SHARED.is_dir():
        raise FileNotFoundError(f"expected the shared folder at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, shared_dir: Path) -> Path:
    """Twelve real chapters (KJV, ``../shared/data``) as a JSONL file: the training runs' data."""
    path = tmp_path_factory.mktemp("corpus") / "chapters.jsonl"
    lines = (shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:12]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference"


@pytest.fixture(scope="session")
def baseline_runs(tmp_path_factory, shared_dir: Path) -> dict[str, Path]:
    """Tiny MDLM and AR training runs (ELF-T blocks, 16 tokens, 2 steps on 12 KJV chapters, a
    sample file at step 2), trained once for every test that needs one. Copy before writing."""
    from elf_eqx.train import main as train_main

    root = tmp_path_factory.mktemp("baselines")
    corpus = root / "chapters.jsonl"
    corpus.write_text("\n".join((shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:12]) + "\n")
    runs = {}
    for family in ("mdlm", "ar"):
        runs[family] = root / family
        train_main(["--preset", "quickstart", "--model", "ELF-T", "--objective", family, "--global-batch", "4",
                    "--max-length", "16", "--warmup-steps", "2", "--lr-schedule", "constant", "--log-every", "1",
                    "--max-steps", "2", "--sampling.every", "2", "--sampling.steps", "3", "--sampling.num-samples", "2",
                    "--data", str(corpus), "--cache-dir", str(root / "cache"), "--output-dir", str(runs[family])])
    return runs
