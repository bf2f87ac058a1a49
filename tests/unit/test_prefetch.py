"""The prefetching loader (elf_eqx.data.prefetch): the plain Loader's batches, in its order, with its
exact positions; failures reach the consumer; the thread stops. No timing is asserted."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time

import datasets
import numpy as np
import pytest

from elf_eqx.data import DataSpec, Loader
from elf_eqx.errors import DataError
from elf_eqx.data.layout import ROW_FEATURES
from elf_eqx.data.prefetch import Prefetcher, prefetch
from elf_eqx.training.stop_signal import StopRequest

SPEC = DataSpec(vocab_size=50, pad_id=0, eos_id=1, max_length=8)
BATCH = 4


@pytest.fixture(scope="module")
def rows() -> datasets.Dataset:
    """30 rows of 1–8 ids (7 global batches of 4 per epoch, 2 rows dropped)."""
    rng = np.random.default_rng(0)
    ids = [rng.integers(2, 50, rng.integers(1, 9)).tolist() for _ in range(30)]
    return datasets.Dataset.from_dict({"input_ids": ids, "cond_length": [0] * len(ids)}, features=ROW_FEATURES)


def loader(rows, **kwargs) -> Loader:
    return Loader(rows, SPEC, BATCH, seed=3, **kwargs)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key])


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "elf_eqx-prefetch"]


def wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_same_batches_order_and_state_as_the_plain_loader_over_epochs(rows, depth):
    plain = loader(rows)
    with Prefetcher(loader(rows), depth) as fetched:
        assert fetched.steps_per_epoch == plain.steps_per_epoch == 7
        assert fetched.state() == plain.state()
        for _ in range(2 * plain.steps_per_epoch + 3):  # across two epoch boundaries
            assert_same(next(fetched), next(plain))
            assert fetched.state() == plain.state() and fetched.epoch == plain.epoch


def test_state_is_the_consumers_position_not_the_read_ahead(rows):
    plain = loader(rows)
    with Prefetcher(loader(rows), depth=3) as fetched:
        for _ in range(2):
            next(fetched), next(plain)
        # the thread fills its queue (batches 2-4) and fetches batch 5, then waits: the loader is at 6
        wait_for(lambda: fetched.loader.state()["step"] == 6)
        assert fetched.state() == plain.state() == {**plain.state(), "epoch": 0, "step": 2}
    assert fetched.loader.state() == plain.state()  # close() rewound the loader to the consumer


def test_restore_in_a_fresh_prefetcher_continues_identically(rows):
    full = loader(rows)
    steps = 2 * full.steps_per_epoch + 3
    uninterrupted = [next(full) for _ in range(steps)]
    for cut in (0, 5, 7, 8):
        with Prefetcher(loader(rows), depth=2) as first:
            head = [next(first) for _ in range(cut)]
            saved = json.loads(json.dumps(first.state()))
        with Prefetcher(loader(rows), depth=2) as resumed:
            resumed.restore(saved)
            tail = [next(resumed) for _ in range(steps - cut)]
        for a, b in zip(head + tail, uninterrupted, strict=True):
            assert_same(a, b)
        # a plain loader takes the prefetcher's state too, and the other way round
        plain = loader(rows)
        plain.restore(saved)
        assert_same(next(plain), uninterrupted[cut])


def test_restore_while_running_drops_the_read_ahead(rows):
    plain = loader(rows)
    expected = [next(plain) for _ in range(12)]
    with Prefetcher(loader(rows), depth=4) as fetched:
        for _ in range(6):
            next(fetched)
        fetched.restore({**fetched.state(), "epoch": 0, "step": 2})
        for b in expected[2:]:
            assert_same(next(fetched), b)
        with pytest.raises(DataError, match="seed"):
            fetched.restore({**fetched.state(), "seed": 4})


def test_a_stop_signal_between_steps_saves_the_exact_position(rows):
    """As the training loop does on SIGTERM: finish the step, save ``state()``, stop; resume there."""
    plain = loader(rows)
    expected = [next(plain) for _ in range(15)]
    got = []
    with StopRequest() as stop, Prefetcher(loader(rows), depth=3) as fetched:
        while True:
            got.append(next(fetched))
            if len(got) == 4:
                os.kill(os.getpid(), signal.SIGTERM)
            wait_for(lambda: fetched._queue.full())  # the thread has read ahead when the signal is seen
            if stop.requested:
                saved = fetched.state()
                break
    assert stop.requested == "SIGTERM" and len(got) == 4
    resumed = prefetch(loader(rows), 2)
    resumed.restore(saved)
    for a, b in zip(got + [next(resumed) for _ in range(11)], expected, strict=True):
        assert_same(a, b)
    resumed.close()


class FailingOnce:
    """A loader whose ``fail_at``-th ``__next__`` raises once (the failed batch is not consumed)."""

    def __init__(self, inner: Loader, fail_at: int) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def __next__(self):
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("disk gone")
        return next(self.inner)

    def state(self):
        return self.inner.state()

    def restore(self, state):
        self.inner.restore(state)


def test_a_loader_exception_reaches_the_consumer_in_order(rows):
    plain = loader(rows)
    expected = [next(plain) for _ in range(8)]
    with Prefetcher(FailingOnce(loader(rows), fail_at=4), depth=2) as fetched:
        for b in expected[:3]:
            assert_same(next(fetched), b)
        with pytest.raises(OSError, match="disk gone"):
            next(fetched)
        assert not prefetch_threads()
        assert fetched.state()["step"] == 3
        for b in expected[3:]:  # the next call starts a new thread at the failed batch
            assert_same(next(fetched), b)


def test_close_stops_the_thread_and_next_resumes(rows):
    plain = loader(rows)
    expected = [next(plain) for _ in range(6)]
    fetched = Prefetcher(loader(rows), depth=2)
    assert not prefetch_threads()  # started lazily, by the first batch
    assert_same(next(fetched), expected[0])
    (thread,) = prefetch_threads()
    wait_for(lambda: fetched._queue.full())  # blocked on a full queue
    fetched.close()
    assert not thread.is_alive() and not prefetch_threads()
    fetched.close()  # idempotent
    for b in expected[1:]:
        assert_same(next(fetched), b)
    fetched.close()
    assert not prefetch_threads()


def test_an_unreferenced_prefetcher_stops_its_thread(rows):
    fetched = Prefetcher(loader(rows), depth=2)
    next(fetched)
    (thread,) = prefetch_threads()
    del fetched
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_depth_zero_is_the_loader_itself(rows):
    plain = loader(rows)
    assert prefetch(plain, 0) is plain
    with pytest.raises(DataError, match="depth"):
        Prefetcher(plain, 0)


def test_the_prefetcher_answers_for_its_loader_but_keeps_its_own_state(rows):
    """Attributes a prefetcher does not have are its loader's; its private state and the
    consumer's position are its own (the loader runs ahead of the consumer)."""
    plain = loader(rows)
    with Prefetcher(loader(rows), 2) as fetched:
        assert (fetched.spec, fetched.global_batch_size, fetched.steps_per_epoch, fetched.num_rows) == (
            plain.spec, plain.global_batch_size, plain.steps_per_epoch, plain.num_rows)
        np.testing.assert_array_equal(fetched.batch_indices(1, 2), plain.batch_indices(1, 2))
        next(fetched)
        assert fetched.state() == {**plain.state(), "step": 1}  # the consumer's, whatever the read-ahead did
        with pytest.raises(AttributeError):
            fetched._epoch  # noqa: B018  (the loader's private state is not forwarded)
        with pytest.raises(AttributeError):
            fetched.no_such_attribute  # noqa: B018
