"""Joining a multi-host run and surviving it, the parts that need no second process: which
launcher started this process (from the environment and a stand-in for JAX's detection: nothing
here contacts the cloud metadata server or any address off 127.0.0.1), the process flags, how the
supervisor reads a worker's end (JAX's own messages, as captured from real runs) and restarts it,
and what a rerun resumes from."""

from __future__ import annotations

import json
import signal
import socket
import sys
import textwrap
import time

import pytest

from elf_eqx.cli.args import ProcessFlags
from elf_eqx.errors import RETRYABLE_EXIT, ConfigError
from elf_eqx.parallel import agreement, distributed
from elf_eqx.parallel.supervisor import Outcome, ResumeHint, Supervisor, classify, lost_peer, newest_complete_checkpoint
from elf_eqx.training.checkpoint_integrity import record_sizes

LAUNCHER_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "OMPI_MCA_orte_hnp_uri", "JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "TPU_SKIP_MDS_QUERY", "KUBERNETES_SERVICE_HOST")


@pytest.fixture
def plain_host(monkeypatch):
    """No launcher in the environment; not a Cloud TPU VM; any connection off 127.0.0.1 fails the test."""
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    from jax._src import cloud_tpu_init

    monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False)
    real = socket.create_connection

    def local_only(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"a test tried to reach {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", local_only)
    return monkeypatch


def test_a_plain_machine_is_no_cluster(plain_host):
    assert distributed.cluster_environment() is None
    assert not distributed.joins_a_cluster(ProcessFlags())
    assert distributed.initialize_distributed(ProcessFlags()) is False


@pytest.mark.parametrize("env, found", [
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "16", "SLURM_PROCID": "3",
      "SLURM_LOCALID": "3"}, "slurm"),
    ({"SLURM_JOB_ID": "7"}, None),  # an sbatch script outside srun: one process
    ({"OMPI_MCA_orte_hnp_uri": "1234.0;tcp://10.0.0.1:5000"}, "openmpi"),
    ({"TPU_WORKER_HOSTNAMES": "w-0,w-1"}, "TPU_WORKER_HOSTNAMES"),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
])
def test_launchers_are_found_in_the_environment(plain_host, env, found):
    for name, value in env.items():
        plain_host.setenv(name, value)
    assert distributed.cluster_environment() == found


def test_a_cloud_tpu_vm_is_a_cluster_that_jax_detects_through_its_metadata(plain_host):
    """A TPU VM of a slice (created with `gcloud compute tpus tpu-vm create` or queued resources) has
    no launcher variable: JAX finds its peers in the VM's metadata. Here a stand-in answers for the
    metadata server, and jax.distributed.initialize is a stand-in too."""
    import jax
    from jax._src import cloud_tpu_init, clusters
    from jax._src.clusters import cloud_tpu_cluster

    plain_host.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", True)
    assert distributed.cluster_environment() == "cloud-tpu-vm"
    plain_host.setenv("TPU_SKIP_MDS_QUERY", "1")  # what JAX sets on a host without TPU chips
    assert distributed.cluster_environment() is None
    plain_host.delenv("TPU_SKIP_MDS_QUERY")

    metadata = {"agent-worker-number": "3", "worker-network-endpoints": ",".join(
        f"unused:unused:10.130.0.{i}" for i in range(2, 10)),  # v5p-64: 8 workers, old name:id:ip format
                "tpu-env": "ACCELERATOR_TYPE: 'v5p-64'\nWORKER_ID: '3'"}  # one slice: no MEGASCALE_* keys
    asked = []

    def stand_in(key):
        asked.append(key)
        return metadata[key], 200

    plain_host.setattr(cloud_tpu_cluster, "get_metadata", stand_in)
    plain_host.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)  # JAX's modules keep their own copy
    plain_host.setattr(clusters.cluster, "running_in_cloud_tpu_vm", True)
    detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, 5)
    assert detected[:3] == ("10.130.0.2:8482", 8, 3) and asked

    calls = []
    plain_host.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    flags = ProcessFlags(heartbeat_timeout_s=30, shutdown_timeout_s=40, init_timeout_s=50)
    assert distributed.initialize_distributed(flags, preemption=False) is True
    assert calls == [((), {"initialization_timeout": 50, "heartbeat_timeout_seconds": 30,
                           "shutdown_timeout_seconds": 40})]  # JAX detects the rest, as above
    assert jax.config.jax_enable_preemption_service is False
    jax.config.update("jax_enable_preemption_service", True)


def test_the_process_flags_go_together_and_are_checked(plain_host):
    with pytest.raises(ConfigError, match="go together"):
        distributed.check_process_flags(ProcessFlags(coordinator_address="127.0.0.1:1234"))
    with pytest.raises(ConfigError, match=r"--process-id 2 is not in \[0, --num-processes=2\)"):
        distributed.check_process_flags(ProcessFlags("127.0.0.1:1234", 2, 2))
    with pytest.raises(ConfigError, match="--heartbeat-timeout-s must be at least 1 second"):
        ProcessFlags(heartbeat_timeout_s=0)
    assert distributed.joins_a_cluster(ProcessFlags("127.0.0.1:1234", 2, 1))


def test_one_process_agrees_with_itself():
    assert agreement.gather("x", {"a": 1}) == [{"a": 1}]
    assert agreement.first_reason("y", None) is None and agreement.first_reason("y", "why") == "why"
    agreement.barrier("z")


# What JAX printed when a peer was lost (tests/integration/test_pod_faults.py's runs, jax 0.10.2).
HEARTBEAT_LOST = textwrap.dedent("""\
    process 0 of 2 joined the run
    E1203 02:25:42.400395   29515 coordination_service.cc:1549] Use error polling to propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
    1
    The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, eviction) to debug further.
    F1203 02:25:42.400831   29526 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. Disable Python buffering, i.e. `python -u`, to be sure to see all the previous output. absl::Status: INTERNAL: Shutdown barrier has failed.
    Barrier result: 'INTERNAL: Barrier failed because: task is set to ERROR: UNAVAILABLE: Task 1 heartbeat timeout. This indicates that the remote task has failed, got preempted, or crashed unexpectedly.
    *** Check failure stack trace: ***
        @     0x7f73d1c40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
    """)
COORDINATOR_LOST = textwrap.dedent("""\
    process 1 of 2 joined the run
    W1203 02:25:57.966600   29905 preemption_sync_manager.cc:147] Failed to retrieve preemption notice from coordination service: UNAVAILABLE: Socket closed
    E1203 02:25:57.966733   29905 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
    F1203 02:25:57.966739   29905 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. Disable Python buffering, i.e. `python -u`, to be sure to see all the previous output
    Additional GRPC error information from remote target coordination_service while calling /xla.coordination.CoordinationService/PollForError:
    :UNKNOWN:Error received from peer  {grpc_message:"Socket closed", grpc_status:14}
    *** Check failure stack trace: ***
    """)
GLOO_LOST = textwrap.dedent("""\
    process 0 of 3 joined the run
    ValueError: UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer [127.0.0.1]:37766
    """)


LEFT_FIRST = textwrap.dedent("""\
    process 1 of 2 joined the run
    F1203 04:11:01.754819   29615 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. Disable Python buffering, i.e. `python -u`, to be sure to see all the previous output
    Barrier result: 'DEADLINE_EXCEEDED: Barrier timed out. Id: Shutdown::16682335341194551304::0. This usually happens because a task triggered the barrier too early or too slowly.
    # of tasks that reached the barrier: 1/2.
    The first task at the barrier: 0. Some timed out task names:
    1
    """)


NEVER_JOINED = textwrap.dedent("""\
    F1203 04:53:28.161215   21284 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. Disable Python buffering, i.e. `python -u`, to be sure to see all the previous output

    RPC: /xla.coordination.CoordinationService/RegisterTask
    *** Check failure stack trace: ***
    """)


def test_the_lost_peer_is_named_from_jaxs_messages():
    assert lost_peer(HEARTBEAT_LOST) == "process 1 of 2 (no heartbeat within --heartbeat-timeout-s)"
    assert lost_peer(COORDINATOR_LOST) == "process 0 of 2, the coordinator (its coordination service is gone)"
    assert lost_peer(GLOO_LOST) == "a peer process (its connection in a collective closed)"
    assert lost_peer(LEFT_FIRST) == "process 0 of 2 (it left the run while this one was still in it)"
    assert lost_peer("Traceback ...\nKeyError: 'oops'") is None


def test_how_a_worker_ended_decides_what_the_supervisor_does():
    hint = lambda: "the last complete checkpoint is step 6"  # noqa: E731
    assert classify(0, "", asked_to_stop=False, resume=hint).exit_code == 0
    lost = classify(-signal.SIGABRT, HEARTBEAT_LOST, asked_to_stop=False, resume=hint)
    assert lost.retryable and lost.exit_code == RETRYABLE_EXIT
    assert lost.said == "error: lost process 1 of 2 (no heartbeat within --heartbeat-timeout-s); " + hint()
    killed = classify(-signal.SIGKILL, "", asked_to_stop=False, resume=hint)
    assert killed.retryable and killed.said.startswith("error: the worker process was killed by SIGKILL")
    assert not classify(-signal.SIGKILL, "", asked_to_stop=True, resume=hint).retryable  # a stop asked for
    crash = classify(-signal.SIGSEGV, "", asked_to_stop=False, resume=hint)
    assert not crash.retryable and crash.exit_code == 128 + signal.SIGSEGV
    for code in (1, 2):  # a bug, bad input
        assert classify(code, "error: bad flag", asked_to_stop=False, resume=hint) == Outcome(False, code, "")
    assert classify(RETRYABLE_EXIT, "error: could not join", asked_to_stop=False, resume=hint).retryable
    never_joined = classify(-signal.SIGABRT, NEVER_JOINED, asked_to_stop=False, resume=hint)
    assert never_joined.retryable and never_joined.said.startswith("error: could not join the run: its coordinator")


WORKER = textwrap.dedent("""\
    import os, signal, sys, time
    from pathlib import Path
    count = Path(sys.argv[1]); n = int(count.read_text()) if count.exists() else 0
    count.write_text(str(n + 1))
    plan = sys.argv[2].split(",")[n]
    print(f"worker {n}: {plan} ({os.environ['ELF_SUPERVISOR']})", file=sys.stderr, flush=True)
    if plan == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if plan == "wait":  # until a SIGTERM, then a clean exit
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        Path(sys.argv[1] + ".waiting").write_text("")
        time.sleep(60)
    sys.exit(int(plan))
    """)


def supervise(tmp_path, plan: str, max_restarts: int) -> tuple[int, str, Supervisor]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    sup = Supervisor([sys.executable, str(script), str(tmp_path / "count"), plan], max_restarts=max_restarts,
                     restart_delay_s=0.0, resume=lambda: "rerunning resumes")
    return sup.run(), (tmp_path / "count").read_text(), sup


def test_the_supervisor_restarts_retryable_failures_only(tmp_path, capfd):
    code, count, _ = supervise(tmp_path, "kill,kill,0", max_restarts=3)
    err = capfd.readouterr().err
    assert code == 0 and count == "3" and err.count("killed by SIGKILL; rerunning resumes") == 2
    assert "restart 2 of 3" in err and "worker 2: 0 (worker)" in err  # the worker's stderr passes through
    (tmp_path / "a").mkdir()
    code, count, _ = supervise(tmp_path / "a", "kill,kill", max_restarts=1)
    assert code == RETRYABLE_EXIT and count == "2"  # out of restarts
    (tmp_path / "b").mkdir()
    code, count, _ = supervise(tmp_path / "b", "2,0", max_restarts=3)
    assert code == 2 and count == "1"  # bad input is not retried


def test_a_stop_signal_is_passed_on_and_not_restarted(tmp_path):
    import threading

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    sup = Supervisor([sys.executable, str(script), str(tmp_path / "count"), "wait,0"], max_restarts=3,
                     restart_delay_s=0.0, resume=lambda: "")

    def stop_when_waiting():
        while not (tmp_path / "count.waiting").exists():
            time.sleep(0.01)
        sup._signal(signal.SIGTERM, None)  # what the handler does on a SIGTERM to the supervisor

    threading.Thread(target=stop_when_waiting, daemon=True).start()
    assert sup.run() == 0 and (tmp_path / "count").read_text() == "1"


def fake_step(folder, step: int) -> None:
    for item in ("state", "meta"):
        (folder / str(step) / item).mkdir(parents=True)
    (folder / str(step) / "state" / "_METADATA").write_text("{}")
    (folder / str(step) / "meta" / "metadata").write_text("{}")  # an item is its files (no empty folders in a bucket)
    record_sizes(folder / str(step))


def test_what_a_rerun_resumes_from(tmp_path):
    out = tmp_path / "run"
    assert "no complete checkpoint" in ResumeHint(str(out)).line()
    folder = out / "checkpoints"
    for step in (3, 6, 9):
        fake_step(folder, step)
    (folder / "12.orbax-checkpoint-tmp-1").mkdir()  # a save cut short
    (folder / "9" / "state" / "_METADATA").write_text("{} cut")  # not the size recorded
    assert newest_complete_checkpoint(out) == (folder, 6)
    assert ResumeHint(str(out)).line() == (f"the last complete checkpoint is step 6 in {folder}, which rerunning "
                                           "the same command resumes from")
    assert "--resume-step 3 again, without --resume-step from step 6" in ResumeHint(str(out), 3).line()
    fake_step(out / "steps_4" / "checkpoints", 20)  # a distillation's newer round
    assert newest_complete_checkpoint(out) == (out / "steps_4" / "checkpoints", 20)
    assert json.loads((folder / "6" / "elf_sizes.json").read_text())
