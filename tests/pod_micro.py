"""A stand-in for a training run over several processes, for integration/test_pod_faults.py: each
process joins the run as the commands do (:func:`elf_eqx.parallel.supervisor.launch`: a supervisor
and its worker, ``jax.distributed`` with JAX's preemption service), then "steps" (a short sleep)
and asks :meth:`StopRequest.after_step` once a step, as the trainer does, until it says stop; it
prints the step it stopped after. No device is touched and nothing is compiled, so a run takes
seconds.

    python -m pod_micro COORDINATOR PROCESSES INDEX HEARTBEAT_S WAIT_S [FAILING_PROCESS [MAX_RESTARTS [STEPS]]]

FAILING_PROCESS (when given and not -1; ``all``: every process) fails at step 20, as a bad input
would (a DataError: one line, exit 2); MAX_RESTARTS is the supervisor's ``--max-restarts``; with
STEPS the run ends after that many steps.
"""

from __future__ import annotations

import time

from elf_eqx.cli.args import ProcessFlags
from elf_eqx.cli.errors import cli_main
from elf_eqx.parallel.supervisor import launch


def work(wait_s: float, fails: bool, steps: int) -> None:
    from elf_eqx.errors import DataError
    from elf_eqx.training.stop_signal import StopRequest

    time.sleep(wait_s)  # a start-up (loading, compiling) before the first step
    with StopRequest() as stop:
        for step in range(1, steps + 1):
            time.sleep(0.02)
            if fails and step == 20:
                raise DataError("chapters.jsonl:3: not what it should be")
            why = stop.after_step()
            if why is not None:
                print(f"stopped after step {step}: {why}", flush=True)
                return


@cli_main
def main(argv: list[str]) -> None:
    coordinator, processes, index, heartbeat, wait = argv[:5]
    fails = len(argv) > 5 and argv[5] in (index, "all")
    restarts = int(argv[6]) if len(argv) > 6 else 0
    steps = int(argv[7]) if len(argv) > 7 else 1_000_000
    flags = ProcessFlags(coordinator, int(processes), int(index), heartbeat_timeout_s=int(heartbeat), init_timeout_s=120)
    launch("pod_micro", argv, lambda: work(float(wait), fails, steps), flags=flags, max_restarts=restarts)


if __name__ == "__main__":
    main()
