"""Decisions every process of a run must make alike (which checkpoint to resume from, whether it
can be read, when process 0 has moved superseded steps aside), agreed through ``jax.distributed``'s
key-value store: no device and no compiled program take part, so agreeing costs a few round trips
to the coordinator. With one process (or no ``jax.distributed``) every call is a no-op that
returns this process's own value.

Every process must make the same calls in the same order for each ``name`` (they are numbered per
name). A process lost meanwhile fails the wait (JAX's coordination service, within the heartbeat
timeout), as every collective does.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from jax._src import distributed as jax_distributed

WAIT_S = 1800
"""The longest a process waits for the others at one agreement (a peer that is alive but slow)."""
_calls: dict[str, int] = {}


def _client() -> Any:
    state = jax_distributed.global_state
    return state.client if state.client is not None and state.num_processes > 1 else None


def gather(name: str, value: Any) -> list[Any]:
    """Every process's ``value`` (JSON-serialisable), in process order, on every process."""
    client = _client()
    if client is None:
        return [value]
    state = jax_distributed.global_state
    _calls[name] = _calls.get(name, 0) + 1
    key = f"elf_eqx/{name}/{_calls[name]}"
    client.key_value_set(f"{key}/values/{state.process_id}", json.dumps(value))
    client.wait_at_barrier(f"{key}/barrier", WAIT_S * 1000)
    found = {int(k.rsplit("/", 1)[1]): json.loads(v) for k, v in client.key_value_dir_get(f"{key}/values/")}
    return [found[i] for i in range(state.num_processes)]


def from_process_0(name: str, value: Any) -> Any:
    """Process 0's ``value``, on every process."""
    return gather(name, value)[0]


def first_reason(name: str, reason: Any) -> Any:
    """The reason (a JSON value; ``None``: none) given by the lowest-numbered process that gave one
    (``None`` from all: ``None``): one process's failure becomes every process's, with the same words."""
    return next((r for r in gather(name, reason) if r is not None), None)


E = TypeVar("E", bound=BaseException)


def everywhere(error: E) -> E:
    """Mark ``error`` as raised by every process alike (after an agreement), and return it: the
    processes then end together, through JAX's orderly shutdown, each with its own line and code,
    instead of the first to fail leaving at once (:mod:`elf_eqx.parallel.supervisor`)."""
    error.raised_everywhere = True
    return error


def raised_everywhere(error: BaseException) -> bool:
    """Whether ``error`` was marked by :func:`everywhere`."""
    return bool(getattr(error, "raised_everywhere", False))


def barrier(name: str) -> None:
    """Wait until every process has reached this point."""
    gather(name, None)
