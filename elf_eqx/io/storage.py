"""Where a run reads and writes: a local folder, ``gs://BUCKET/…`` or ``s3://BUCKET/…``.

Every path a user gives (``--output-dir``, ``--data``, ``--cache-dir``, ``--init-from``, the
sources and outputs of ``sample``, ``eval``, ``distill``, ``convert``, ``prepare``) goes through
:func:`user_path` with the flag it came from: a local path becomes a :class:`pathlib.Path`, a bucket
URI an :class:`etils.epath.Path` (fsspec behind it: gcsfs for ``gs://``, s3fs for ``s3://``; the
same ``epath`` orbax writes checkpoints with). Any other scheme (``ftp://``, ``http://``) or a
missing backend package is a one-line :class:`~elf_eqx.errors.ConfigError` naming the flag and the
extra to install; nothing is ever turned into a local folder called ``gs:``.

Object storage has no rename and no append, so what must be whole is written as one object
(:func:`write_bytes`, a single PUT: whole or absent), a folder is made complete by a marker written
last (orbax's ``commit_success.txt`` for checkpoints, ``manifest.json`` for prepared data), and a
log is a series of parts (:mod:`elf_eqx.training.metrics_log`).

Credentials and endpoints come from the usual environment, never from configs or run records:
``GOOGLE_APPLICATION_CREDENTIALS`` / the metadata server on GCP, ``AWS_ACCESS_KEY_ID`` /
``AWS_PROFILE`` / instance roles on AWS; ``STORAGE_EMULATOR_HOST`` (GCS) and
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (S3) point every client (fsspec, TensorStore,
orbax) at another endpoint, e.g. a local emulator (:func:`configure`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Union

from etils import epath

from elf_eqx.errors import ConfigError, MissingInputError

AnyPath = Union[pathlib.Path, epath.Path]
"""A local path (:class:`pathlib.Path`) or a bucket path (:class:`etils.epath.Path`)."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclasses.dataclass(frozen=True)
class Backend:
    """What a bucket scheme needs: the fsspec package, its fsspec protocol and the extra that installs it."""

    module: str
    protocol: str
    extra: str
    name: str


BACKENDS: dict[str, Backend] = {
    "gs": Backend("gcsfs", "gcs", "gcs", "Google Cloud Storage"),
    "s3": Backend("s3fs", "s3", "s3", "Amazon S3 (or an S3-compatible store)"),
}


def scheme_of(value: str | os.PathLike) -> str | None:
    """The URI scheme of ``value`` (``"gs"``, ``"s3"``, ``"ftp"``...), or ``None`` for a plain path."""
    match = _SCHEME.match(os.fspath(value)) if isinstance(value, (str, os.PathLike)) else None
    return match.group(1).lower() if match else None


def is_remote(path: Any) -> bool:
    """Whether ``path`` (a string or path object) names a bucket (``gs://`` or ``s3://``)."""
    return scheme_of(str(path)) in BACKENDS


def user_path(value: str | os.PathLike, flag: str) -> AnyPath:
    """The path a user gave with ``flag``: a :class:`pathlib.Path` (``~`` expanded) for a local path,
    an :class:`epath.Path` for ``gs://`` / ``s3://``. An unsupported scheme or a bucket scheme whose
    backend is not installed is a one-line :class:`ConfigError` naming the flag and what to install."""
    text = os.fspath(value)
    scheme = scheme_of(text)
    if scheme is None:
        return pathlib.Path(text).expanduser()
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise ConfigError(f"{flag} {text}: the scheme {scheme}:// is not supported; give a local path, "
                          "gs://BUCKET/PATH or s3://BUCKET/PATH")
    if not text[len(scheme) + 3:].split("/", 1)[0]:
        raise ConfigError(f"{flag} {text}: no bucket name; give {scheme}://BUCKET/PATH")
    if importlib.util.find_spec(backend.module) is None:
        raise ConfigError(f"{flag} {text}: {scheme}:// needs the {backend.module} package, not installed; "
                          f"pip install -e \".[{backend.extra}]\" (or pip install 'elf_eqx[{backend.extra}]')")
    configure()
    return epath.Path(text)


def local_path(value: str | os.PathLike, flag: str, why: str = "it writes local files") -> pathlib.Path:
    """A path a user gave with ``flag`` to a tool that works on local files only: a
    :class:`pathlib.Path`, or a one-line :class:`ConfigError` for a bucket URI (naming ``why``) or
    another scheme."""
    path = user_path(value, flag)
    if not isinstance(path, pathlib.Path):
        raise ConfigError(f"{flag} {value}: takes a local path ({why}); copy to the bucket afterwards")
    return path


def as_path(value: str | os.PathLike) -> AnyPath:
    """``value`` as a path object without a flag to blame (a path the project made itself, or one
    already checked by :func:`user_path`)."""
    if isinstance(value, pathlib.Path):
        return value
    text = os.fspath(value)
    if is_remote(text):
        configure()
        return epath.Path(text)
    return pathlib.Path(text)


def join(base: AnyPath | str, *parts: str) -> AnyPath:
    """``base / part / ...`` as a path object."""
    path = as_path(base)
    for part in parts:
        path = path / part
    return path


# -- endpoints and clients --------------------------------------------------------------------

_configured = False


def s3_endpoint() -> str | None:
    """The S3 endpoint the environment names (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def gcs_endpoint() -> str | None:
    """The GCS emulator the environment names (``STORAGE_EMULATOR_HOST``), as a URL."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def configure() -> None:
    """Point fsspec, TensorStore and orbax at the endpoints the environment names (see the module
    docstring); teach orbax to write ``s3://`` checkpoints through TensorStore's S3 driver.
    Idempotent, and cheap after the first call."""
    global _configured
    if _configured:
        return
    import fsspec

    gcs = gcs_endpoint()
    if gcs is not None:
        # An emulator: anonymous access, no probing of Google's gRPC services (gcsfs's bucket-type
        # check), TensorStore's GCS driver and orbax's storage client pointed at it too.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", gcs)
        os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "anonymous")
        os.environ.setdefault("NO_GCE_CHECK", "true")
        fsspec.config.conf.setdefault("gcs", {}).update({"endpoint_url": gcs, "token": "anon"})
    s3 = s3_endpoint()
    if s3 is not None:
        fsspec.config.conf.setdefault("s3", {}).setdefault("endpoint_url", s3)
    _install_orbax_s3()
    _configured = True


def _install_orbax_s3() -> None:
    """Orbax builds TensorStore key-value stores for ``gs://`` paths only and refuses any other
    non-absolute path; route ``s3://`` paths to TensorStore's ``s3`` driver (endpoint and region
    from the environment) the same way. Checked by tests/integration/test_storage.py."""
    from orbax.checkpoint._src.path import gcs_utils
    from orbax.checkpoint._src.serialization import tensorstore_utils as tsu

    if getattr(tsu, "_elf_eqx_s3", False):
        return
    normalize, use_remote, kvstore = tsu._normalize_path, tsu._use_gcs_driver, gcs_utils.get_kvstore_for_gcs

    def _normalize_path(path: str) -> str:
        if path.startswith("s3://"):
            return "s3://" + os.path.normpath(path[len("s3://"):])
        return normalize(path)

    def _use_gcs_driver(directory: str) -> bool:
        return directory.startswith("s3://") or use_remote(directory)

    def get_kvstore_for_gcs(path: str) -> dict[str, Any]:
        if not path.startswith("s3://"):
            return kvstore(path)
        bucket, _, key = path[len("s3://"):].partition("/")
        spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": key}
        if s3_endpoint():
            spec["endpoint"] = s3_endpoint()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            spec["aws_region"] = region
        return spec

    tsu._normalize_path, tsu._use_gcs_driver, gcs_utils.get_kvstore_for_gcs = (
        _normalize_path, _use_gcs_driver, get_kvstore_for_gcs)
    tsu._elf_eqx_s3 = True


def filesystem(path: AnyPath | str) -> Any:
    """The fsspec filesystem of a bucket path."""
    import fsspec

    configure()
    scheme = scheme_of(str(path))
    backend = BACKENDS[scheme]  # type: ignore[index]
    return fsspec.filesystem(backend.protocol)


def _bare(path: AnyPath | str) -> str:
    """A bucket path without its scheme, as fsspec filesystems name objects."""
    text = str(path)
    return text.split("://", 1)[1] if "://" in text else text


def check_bucket(path: AnyPath, flag: str) -> None:
    """For a bucket path: the endpoint answers and the bucket exists, else a one-line error naming
    ``flag`` (nothing is written). Local paths pass."""
    if not is_remote(path):
        return
    bucket = _bare(path).split("/", 1)[0]
    scheme = scheme_of(str(path))
    fs = filesystem(path)
    where = gcs_endpoint() if scheme == "gs" else s3_endpoint()
    try:
        fs.invalidate_cache()
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise MissingInputError(f"{flag} {path}: the bucket {bucket!r} does not exist"
                                + (f" at {where}" if where else "") + "; create it first") from None
    except PermissionError as err:
        raise MissingInputError(f"{flag} {path}: no access to the bucket {bucket!r} ({_first_line(err)}); "
                                "check the credentials in the environment") from None
    except Exception as err:  # every client raises its own connection errors
        raise MissingInputError(f"{flag} {path}: cannot reach the storage endpoint"
                                + (f" {where}" if where else "") + f" ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


# -- whole objects, trees ---------------------------------------------------------------------


def write_bytes(path: AnyPath, data: bytes) -> None:
    """One object (bucket) or file, written whole: a bucket object by a single upload, which the
    store makes visible only once complete (a local file: see :mod:`elf_eqx.io.atomic`)."""
    fs = filesystem(path)
    with fs.open(_bare(path), "wb") as f:
        f.write(data)


def read_bytes(path: AnyPath) -> bytes:
    """A file's or object's bytes, in one read (a bucket object: one GET of whatever version is
    there now, never a mix of two)."""
    if not is_remote(path):
        return pathlib.Path(path).read_bytes()
    return filesystem(path).cat_file(_bare(path))


def list_folder(folder: AnyPath) -> list[AnyPath]:
    """The entries of a folder (a bucket prefix: listed afresh, not from a client's cache); ``[]``
    when there is none."""
    if not is_remote(folder):
        folder = pathlib.Path(folder)
        return sorted(folder.iterdir()) if folder.is_dir() else []
    fs = filesystem(folder)
    fs.invalidate_cache(_bare(folder))
    try:
        names = fs.ls(_bare(folder).rstrip("/"), detail=False)
    except FileNotFoundError:
        return []
    scheme = scheme_of(str(folder))
    return sorted(epath.Path(f"{scheme}://{name}") for name in names)


def file_sizes(folder: AnyPath) -> dict[str, int]:
    """Every file under ``folder`` (relative POSIX path → bytes), local or in a bucket."""
    if not is_remote(folder):
        root = pathlib.Path(folder)
        return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    return {name: size for name, (size, _) in _bucket_files(folder).items()}


_VERSION_KEYS = ("generation", "ETag", "etag", "md5Hash", "LastModified", "updated", "mtime")
"""Where an object's listing says which write it is (GCS generation, S3 ETag, else a time)."""


def _size_and_version(info: dict[str, Any]) -> tuple[int, str]:
    return int(info.get("size") or 0), str(next((info[k] for k in _VERSION_KEYS if info.get(k)), ""))


def _bucket_files(folder: AnyPath) -> dict[str, tuple[int, str]]:
    """Every object under the bucket path ``folder``: relative name → (bytes, the version its
    listing gives: a rewrite of the same size is told apart)."""
    fs = filesystem(folder)
    root = _bare(folder).rstrip("/")
    fs.invalidate_cache()
    found = fs.find(root, detail=True)
    return {name[len(root) + 1:]: _size_and_version(info) for name, info in sorted(found.items())
            if info.get("type", "file") != "directory" and name.startswith(root + "/")}


def remove_tree(path: AnyPath, *, first: str | None = None) -> None:
    """Delete a folder (a bucket prefix). ``first`` (a file in it) is deleted before the rest, so a
    reader that takes that file as the folder's completion marker stops counting it at once."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs = filesystem(path)
    if first is not None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(_bare(path).rstrip("/") + "/" + first)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(_bare(path), recursive=True)
    fs.invalidate_cache()


def move_tree(source: AnyPath, target: AnyPath, *, marker: str | None = None) -> None:
    """Move a folder. Locally a rename; in a bucket (no rename) a copy of every object, then the
    source deleted, ``marker`` first: a kill midway leaves the source whole or no longer marked
    complete, and the copy never marked complete unless every object arrived (the marker is copied last)."""
    if not is_remote(source):
        os.replace(source, target)
        return
    fs = filesystem(source)
    src, dst = _bare(source).rstrip("/"), _bare(target).rstrip("/")
    names = sorted(file_sizes(source), key=lambda n: (n == marker, n))
    for name in names:
        fs.copy(f"{src}/{name}", f"{dst}/{name}")
    remove_tree(source, first=marker)


@contextlib.contextmanager
def local_copy(path: AnyPath) -> Iterator[pathlib.Path]:
    """A local path holding ``path``'s file or folder: itself when local, else a temporary download
    removed afterwards (for libraries that read local files only)."""
    if not is_remote(path):
        yield pathlib.Path(path)
        return
    fs = filesystem(path)
    with tempfile.TemporaryDirectory(prefix="elf_eqx-download-") as tmp:
        target = pathlib.Path(tmp) / (epath.Path(str(path)).name or "download")
        if fs.isdir(_bare(path)):
            fs.get(_bare(path).rstrip("/") + "/", str(target), recursive=True)
        else:
            fs.get(_bare(path), str(target))
        yield target


def cached_copy(remote: AnyPath, cache_root: pathlib.Path) -> pathlib.Path:
    """A local copy of a bucket file or folder under ``cache_root``, made once (keyed by its URI and
    its objects' sizes and versions, so a rewritten object is fetched again; staged and renamed
    into place), for readers of local files only."""
    import hashlib
    import json

    fs = filesystem(remote)
    fs.invalidate_cache()
    is_dir = fs.isdir(_bare(remote))
    if is_dir:
        listing = _bucket_files(remote)
    else:
        listing = {"": _size_and_version(fs.info(_bare(remote)))}
    key = hashlib.sha256(json.dumps([str(remote), sorted(listing.items())]).encode()).hexdigest()[:24]
    name = epath.Path(str(remote)).name or "data"
    target = pathlib.Path(cache_root) / f"{key}" / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        if is_dir:
            for rel in listing:
                dest = staging / name / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{_bare(remote).rstrip('/')}/{rel}", str(dest))
        else:
            fs.get_file(_bare(remote), str(staging / name))
        try:
            os.replace(staging / name, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def upload_folder(local: pathlib.Path, target: AnyPath, *, last: str | None = None) -> None:
    """Copy every file of the local folder ``local`` to ``target`` (a bucket prefix or a local
    folder), the file named ``last`` (a completion marker) after all the others."""
    names = sorted((p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()),
                   key=lambda n: (n == last, n))
    if not is_remote(target):
        for name in names:
            dest = pathlib.Path(target) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local / name, dest)
        return
    fs = filesystem(target)
    base = _bare(target).rstrip("/")
    for name in names:
        fs.put_file(str(local / name), f"{base}/{name}")
    fs.invalidate_cache()
