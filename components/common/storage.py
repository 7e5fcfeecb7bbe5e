"""Plain-URI storage: local paths (and file://), gs:// and http(s):// behind one interface.

Used only for URIs that are plain parameters (the CVAT export location, the durable checkpoint
location, export destinations); KFP artifacts are reached through `artifact.path` instead.

Each scheme is a `Backend` with six small operations; everything else (directories, the
completion marker, atomic local writes) is built once on top of them, so an `s3://` backend only
has to implement the six and be registered with `register_backend`.

Directory uploads write every file first and the `_SUCCESS` marker last, and remove an older
marker first: a reader that insists on the marker (`require_complete=True`) never takes half an
upload for a whole one. The marker is a small JSON manifest of the uploaded files and sizes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .redaction import redact_text
from .redaction import redact_url as redacted  # the name storage's callers know

MARKER = "_SUCCESS"
DEFAULT_WORKERS = 8

GCS_RETRY_TIMEOUT_S = 300.0
GCS_CREDENTIALS_HELP = (
    "Provide Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key "
    "file (e.g. from a Kubernetes secret), or run the pod under workload identity (a Kubernetes "
    "service account bound to a Google service account that may use the bucket)."
)

HTTP_ATTEMPTS = 5
HTTP_BACKOFF_S = 1.0
HTTP_MAX_DELAY_S = 30.0
HTTP_TIMEOUT_S = (10.0, 120.0)  # (connect, read between bytes)
HTTP_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CHUNK_BYTES = 1 << 20

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DRIVE = re.compile(r"^[A-Za-z]:")


class StorageError(Exception):
    """A storage operation failed; the message names the URI and, where it helps, what to do."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """Nothing exists at the URI (no file, object or prefix)."""


class IncompleteUploadError(StorageError):
    """A directory has no `_SUCCESS` marker (yet): its upload is unfinished or failed."""


class UnsupportedSchemeError(StorageError, ValueError):
    """The URI's scheme has no backend."""


# --- URIs ---------------------------------------------------------------------------------------


def scheme_of(uri: str) -> str:
    """The lower-case scheme ("gs", "https", "file", ...), or "" for a plain local path."""
    match = _SCHEME.match(str(uri))
    return match.group(1).lower() if match else ""


def is_local(uri: str | os.PathLike) -> bool:
    return scheme_of(str(uri)) in ("", "file")


def local_path(uri: str | os.PathLike) -> Path:
    """The local path of a plain path or a file:// URI."""
    uri = str(uri)
    scheme = scheme_of(uri)
    if scheme == "":
        return Path(uri).expanduser()
    if scheme != "file":
        raise ValueError(f"{uri} is not a local path or file:// URI")
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise StorageError(
            f"{uri}: file:// URIs must name a local file (no host), got host {parsed.netloc!r}"
        )
    return Path(urllib.request.url2pathname(parsed.path))


def join_uri(uri: str, relative: str) -> str:
    """`uri` + "/" + `relative` (a POSIX relative path), for any scheme."""
    if scheme_of(uri) == "":
        return str(Path(uri) / relative)
    return str(uri).rstrip("/") + "/" + relative


def safe_relative_path(name: str) -> PurePosixPath:
    """`name` as a relative POSIX path that stays inside whatever directory it is joined to.

    "." and empty segments are dropped; "..", absolute paths, drive letters, backslashes and NUL
    bytes raise ValueError saying which.
    """
    if "\x00" in name:
        raise ValueError("contains a NUL byte")
    if "\\" in name:
        raise ValueError("contains a backslash (a Windows path separator)")
    if name.startswith("/"):
        raise ValueError("is an absolute path")
    if _DRIVE.match(name):
        raise ValueError("starts with a drive letter")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("contains a '..' segment")
    if not parts:
        raise ValueError("is empty")
    return PurePosixPath(*parts)


def reader_relative_path(name: str) -> PurePosixPath:
    """A path written inside an export (an image's file name, a list line) as `safe_relative_path`
    reads it, but with backslashes as separators, as exports made on Windows write them.

    Raises ValueError, saying why, when it leads out of the export or is empty.
    """
    return safe_relative_path(name.replace("\\", "/"))


# --- backends -----------------------------------------------------------------------------------


class Backend:
    """The operations one URI scheme provides. Directory URIs name a folder or object prefix."""

    def is_file(self, uri: str) -> bool:
        raise NotImplementedError

    def is_directory(self, uri: str) -> bool:
        """True when at least one file lies under `uri` as a folder/prefix."""
        raise NotImplementedError

    def list_files(self, uri: str) -> list[str]:
        """Relative POSIX paths of every file under the directory `uri`, at any depth."""
        raise NotImplementedError

    def download_file(self, uri: str, local: Path) -> None:
        """Write the file at `uri` to `local` (the caller makes this atomic)."""
        raise NotImplementedError

    def upload_file(self, local: Path, uri: str) -> None:
        raise NotImplementedError

    def delete_file(self, uri: str) -> None:
        """Remove one file; a missing one is not an error."""
        raise NotImplementedError


class LocalBackend(Backend):
    def is_file(self, uri):
        return local_path(uri).is_file()

    def is_directory(self, uri):
        return local_path(uri).is_dir()

    def list_files(self, uri):
        root = local_path(uri)
        if not root.is_dir():
            raise ObjectNotFoundError(f"{uri}: no such directory")
        found = []
        for folder, _, files in os.walk(root):
            relative_folder = Path(folder).relative_to(root)
            found += [(relative_folder / name).as_posix() for name in files]
        return sorted(found)

    def download_file(self, uri, local):
        source = local_path(uri)
        if not source.is_file():
            raise ObjectNotFoundError(f"{uri}: no such file")
        shutil.copyfile(source, local)

    def upload_file(self, local, uri):
        _write_atomically(local_path(uri), lambda tmp: shutil.copyfile(local, tmp))

    def delete_file(self, uri):
        local_path(uri).unlink(missing_ok=True)


class GcsBackend(Backend):
    """gs://bucket/name through google-cloud-storage, honouring STORAGE_EMULATOR_HOST."""

    def __init__(self, retry_timeout_s: float = GCS_RETRY_TIMEOUT_S):
        self.retry_timeout_s = retry_timeout_s

    def is_file(self, uri):
        bucket, name = _split_gs(uri)
        if not name or name.endswith("/"):
            return False
        with self._errors(uri):
            return self._bucket(bucket).blob(name).exists(retry=self._retry())

    def is_directory(self, uri):
        bucket, prefix = _split_gs(uri)
        with self._errors(uri):
            blobs = self._client().list_blobs(
                bucket, prefix=_as_prefix(prefix), max_results=1, retry=self._retry()
            )
            return any(True for _ in blobs)

    def list_files(self, uri):
        bucket, prefix = _split_gs(uri)
        prefix = _as_prefix(prefix)
        with self._errors(uri):
            names = [
                blob.name[len(prefix) :]
                for blob in self._client().list_blobs(bucket, prefix=prefix, retry=self._retry())
            ]
        # Names ending in "/" are the folder placeholders the Cloud Console creates.
        return sorted(name for name in names if name and not name.endswith("/"))

    def download_file(self, uri, local):
        bucket, name = _split_gs_object(uri)
        with self._errors(uri):
            self._bucket(bucket).blob(name).download_to_filename(str(local), retry=self._retry())

    def upload_file(self, local, uri):
        bucket, name = _split_gs_object(uri)
        # Uploads are retried even without a generation precondition: we always upload the whole
        # file again, so a repeated attempt writes the same bytes. Real GCS stores empty files
        # fine; some versions of the test emulator crash on an empty body.
        with self._errors(uri):
            self._bucket(bucket).blob(name).upload_from_filename(str(local), retry=self._retry())

    def delete_file(self, uri):
        from google.api_core import exceptions

        bucket, name = _split_gs_object(uri)
        with self._errors(uri):
            try:
                self._bucket(bucket).blob(name).delete(retry=self._retry())
            except exceptions.NotFound:
                pass

    def _retry(self):
        # The stock predicate covers download errors too, which a custom Retry would not.
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_timeout_s)

    def _client(self):
        return _gcs_client(os.environ.get("STORAGE_EMULATOR_HOST"))

    def _bucket(self, name):
        return self._client().bucket(name)

    @contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Turns google-cloud errors into StorageErrors that name the URI and say what to do."""
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions

        try:
            yield
        except exceptions.NotFound as exc:
            raise ObjectNotFoundError(
                f"{uri}: not found (no such object, or no such bucket)"
            ) from exc
        except (exceptions.Unauthorized, exceptions.Forbidden) as exc:
            raise StorageError(
                f"{uri}: access denied ({exc.code}: {exc.message}). {GCS_CREDENTIALS_HELP}"
            ) from exc
        except (auth_exceptions.DefaultCredentialsError, auth_exceptions.RefreshError) as exc:
            raise StorageError(
                f"{uri}: no usable Google Cloud credentials ({exc}). {GCS_CREDENTIALS_HELP}"
            ) from exc
        except exceptions.RetryError as exc:
            raise StorageError(
                f"{uri}: gave up after retrying for {self.retry_timeout_s:.0f} s: {exc.cause}"
            ) from exc
        except exceptions.GoogleAPICallError as exc:
            raise StorageError(f"{uri}: Google Cloud Storage error: {exc}") from exc


@functools.lru_cache(maxsize=4)
def _gcs_client(emulator_host: str | None):
    """One client per emulator setting (tests switch it); anonymous, with a project, for one."""
    from google.cloud import storage

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "cvat-kfp-emulator"
        return storage.Client(project=project, credentials=AnonymousCredentials())
    # No project is needed for object operations; credentials come from the environment.
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except DefaultCredentialsError:
        # None at all (an on-prem, MinIO or S3 cluster): public objects, such as Model Garden's
        # checkpoints, still read anonymously; anything else is refused with GCS_CREDENTIALS_HELP.
        return storage.Client.create_anonymous_client()


def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, name = str(uri)[len("gs://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket name (gs://BUCKET/path)")
    return bucket, name


def _split_gs_object(uri: str) -> tuple[str, str]:
    bucket, name = _split_gs(uri)
    if not name or name.endswith("/"):
        raise StorageError(f"{uri}: names a bucket or folder, not an object (gs://BUCKET/NAME)")
    return bucket, name


def _as_prefix(name: str) -> str:
    return name.rstrip("/") + "/" if name.strip("/") else ""


class _RetryableStatus(Exception):
    def __init__(self, status: int, retry_after_s: float | None):
        super().__init__(f"HTTP {status}")
        self.retry_after_s = retry_after_s


class HttpBackend(Backend):
    """Read-only http(s):// files, retried with backoff on connection errors, 5xx and 429."""

    def __init__(self, attempts: int = HTTP_ATTEMPTS, backoff_s: float = HTTP_BACKOFF_S):
        self.attempts = attempts
        self.backoff_s = backoff_s

    def is_file(self, uri):
        def probe():
            import requests

            response = requests.head(uri, timeout=HTTP_TIMEOUT_S, allow_redirects=True)
            if response.status_code in (404, 410):
                return False
            if response.ok:
                return True
            # Signed URLs are often signed for GET only and answer HEAD with 403; ask with GET.
            with requests.get(uri, timeout=HTTP_TIMEOUT_S, stream=True) as response:
                if response.status_code in (404, 410):
                    return False
                self._raise_for_status(uri, response)
                return True

        return self._retrying(uri, probe)

    def is_directory(self, uri):
        return False

    def list_files(self, uri):
        raise StorageError(
            f"{redacted(uri)}: http(s) URLs cannot be listed; give the URL of a file"
        )

    def download_file(self, uri, local):
        def fetch():
            import requests

            with requests.get(uri, timeout=HTTP_TIMEOUT_S, stream=True) as response:
                self._raise_for_status(uri, response)
                with open(local, "wb") as out:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        out.write(chunk)

        self._retrying(uri, fetch)

    def upload_file(self, local, uri):
        raise StorageError(
            f"{redacted(uri)}: http(s) URLs are read-only here; upload to gs:// or a path"
        )

    def delete_file(self, uri):
        raise StorageError(f"{redacted(uri)}: http(s) URLs are read-only here")

    def _raise_for_status(self, uri, response):
        status = response.status_code
        if status in HTTP_RETRY_STATUSES:
            raise _RetryableStatus(status, _retry_after_s(response))
        if status in (404, 410):
            raise ObjectNotFoundError(f"{redacted(uri)}: not found (HTTP {status})")
        if status in (401, 403):
            raise StorageError(
                f"{redacted(uri)}: access denied (HTTP {status}); use a public or signed URL"
            )
        if not response.ok:
            raise StorageError(f"{redacted(uri)}: HTTP {status} {response.reason}")

    def _retrying(self, uri, operation: Callable):
        import requests

        transient = (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            _RetryableStatus,
        )
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except transient as exc:
                if attempt == self.attempts:
                    # Not chained: the library's own text quotes the URL, signature and all.
                    raise StorageError(
                        f"{redacted(uri)}: {redact_text(exc)} (gave up after {attempt} attempts)"
                    ) from None
                delay = self.backoff_s * 2 ** (attempt - 1)
                if isinstance(exc, _RetryableStatus) and exc.retry_after_s is not None:
                    delay = max(delay, exc.retry_after_s)
                time.sleep(min(delay, HTTP_MAX_DELAY_S))
            except requests.RequestException as exc:  # an invalid URL, too many redirects, ...
                raise StorageError(f"{redacted(uri)}: {redact_text(exc)}") from None
        raise AssertionError("unreachable")


def _retry_after_s(response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


_LOCAL = LocalBackend()
_HTTP = HttpBackend()
_BACKENDS: dict[str, Backend] = {
    "": _LOCAL,
    "file": _LOCAL,
    "gs": GcsBackend(),
    "http": _HTTP,
    "https": _HTTP,
}
_BACKENDS_LOCK = threading.Lock()


def register_backend(scheme: str, backend: Backend) -> None:
    """Serve `scheme://` URIs with `backend` (how `s3://` joins later; tests swap backends too)."""
    with _BACKENDS_LOCK:
        _BACKENDS[scheme.lower()] = backend


def supported_schemes() -> list[str]:
    return sorted(scheme for scheme in _BACKENDS if scheme)


def backend_for(uri: str) -> Backend:
    scheme = scheme_of(uri)
    backend = _BACKENDS.get(scheme)
    if backend is None:
        supported = ", ".join(f"{s}://" for s in supported_schemes())
        raise UnsupportedSchemeError(
            f"{redacted(uri)}: unsupported scheme {scheme}://; "
            f"use a local path or one of {supported}"
        )
    return backend


# --- operations ---------------------------------------------------------------------------------


def is_file(uri: str) -> bool:
    return backend_for(uri).is_file(uri)


def is_directory(uri: str) -> bool:
    return backend_for(uri).is_directory(uri)


def exists(uri: str) -> bool:
    """True when `uri` is a file, or a directory/prefix with at least one file under it."""
    backend = backend_for(uri)
    return backend.is_file(uri) or backend.is_directory(uri)


def list_files(uri: str) -> list[str]:
    """Relative POSIX paths of every file under the directory `uri`, sorted."""
    return backend_for(uri).list_files(uri)


def delete_file(uri: str) -> None:
    backend_for(uri).delete_file(uri)


def download_file(uri: str, local: str | os.PathLike) -> Path:
    """Copy the file at `uri` to `local`; `local` appears only once complete."""
    local = Path(local)
    backend = backend_for(uri)
    _write_atomically(local, lambda tmp: backend.download_file(uri, tmp))
    return local


def upload_file(local: str | os.PathLike, uri: str) -> str:
    local = Path(local)
    if not local.is_file():
        raise ObjectNotFoundError(f"{local}: no such file to upload")
    backend_for(uri).upload_file(local, uri)
    return uri


def upload_directory(
    local_dir: str | os.PathLike, uri: str, *, workers: int = DEFAULT_WORKERS
) -> str:
    """Upload every file under `local_dir` to `uri`, then write the `_SUCCESS` marker.

    An older marker is removed first, so readers wait while the new files arrive. Files already
    under `uri` that `local_dir` lacks are left alone (the marker's manifest does not list them).
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise ObjectNotFoundError(f"{local_dir}: no such directory to upload")
    backend = backend_for(uri)
    names = [name for name in _LOCAL.list_files(str(local_dir)) if name != MARKER]
    backend.delete_file(join_uri(uri, MARKER))
    _run_all(
        workers,
        [
            functools.partial(backend.upload_file, local_dir / name, join_uri(uri, name))
            for name in names
        ],
    )
    manifest = {"files": {name: (local_dir / name).stat().st_size for name in names}}
    with tempfile.TemporaryDirectory() as scratch:
        marker = Path(scratch) / MARKER
        marker.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        backend.upload_file(marker, join_uri(uri, MARKER))
    return uri


def is_complete(uri: str) -> bool:
    """True when the directory `uri` holds the `_SUCCESS` marker of a finished upload."""
    return backend_for(uri).is_file(join_uri(uri, MARKER))


def wait_until_complete(uri: str, timeout_s: float = 0.0, poll_s: float = 5.0) -> dict | None:
    """Wait up to `timeout_s` for the `_SUCCESS` marker; return its manifest.

    Returns None for a marker without our manifest (e.g. Hadoop's empty `_SUCCESS`). Raises
    IncompleteUploadError when the marker has not appeared in time.
    """
    deadline = time.monotonic() + timeout_s
    while not is_complete(uri):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            waited = f" after waiting {timeout_s:g} s" if timeout_s > 0 else ""
            raise IncompleteUploadError(
                f"{redacted(uri)}: no {MARKER} marker{waited}, so its upload has not finished or "
                f"it failed (a complete upload writes {MARKER} last). Wait for the writer, or run "
                "it again."
            )
        time.sleep(min(poll_s, remaining))
    return _read_manifest(uri)


def download_directory(
    uri: str,
    local_dir: str | os.PathLike,
    *,
    require_complete: bool = False,
    wait_s: float = 0.0,
    workers: int = DEFAULT_WORKERS,
) -> Path:
    """Download every file under the directory `uri` into `local_dir` (the marker excepted).

    With `require_complete`, refuse (after waiting up to `wait_s`) a directory without the
    `_SUCCESS` marker, and download exactly the files its manifest lists, checking their sizes.
    """
    local_dir = Path(local_dir)
    backend = backend_for(uri)
    manifest = wait_until_complete(uri, timeout_s=wait_s) if require_complete else None
    if manifest is not None:
        names = sorted(manifest)
    else:
        names = [name for name in backend.list_files(uri) if name != MARKER]
        if not names:
            raise ObjectNotFoundError(f"{redacted(uri)}: no files under this directory")
    targets = _local_targets(uri, names)
    local_dir.mkdir(parents=True, exist_ok=True)
    _run_all(
        workers,
        [
            functools.partial(download_file, join_uri(uri, name), local_dir / target)
            for name, target in targets.items()
        ],
    )
    if manifest is not None:
        _check_sizes(uri, local_dir, targets, manifest)
    return local_dir


def _read_manifest(uri: str) -> dict[str, int] | None:
    with tempfile.TemporaryDirectory() as scratch:
        marker = download_file(join_uri(uri, MARKER), Path(scratch) / MARKER)
        try:
            files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        except (ValueError, KeyError, TypeError):
            return None
    return files if isinstance(files, dict) else None


def _local_targets(uri: str, names: list[str]) -> dict[str, PurePosixPath]:
    """Object name -> safe local relative path; refuses names that would escape or collide."""
    targets = {}
    for name in names:
        try:
            targets[name] = safe_relative_path(name)
        except ValueError as exc:
            raise StorageError(f"{redacted(join_uri(uri, name))}: refused, the name {exc}") from exc
    folders = {parent for target in targets.values() for parent in target.parents}
    clashes = sorted(str(t) for t in targets.values() if t in folders)
    if clashes:
        raise StorageError(
            f"{redacted(uri)}: {clashes[0]!r} is both a file and a folder prefix; a local folder "
            "cannot hold both. Rename one of them."
        )
    return targets


def _check_sizes(uri, local_dir: Path, targets: dict, manifest: dict) -> None:
    for name, target in targets.items():
        size = (local_dir / target).stat().st_size
        if size != manifest[name]:
            raise IncompleteUploadError(
                f"{redacted(join_uri(uri, name))}: {size} bytes, but the {MARKER} manifest says "
                f"{manifest[name]}; the directory changed while it was read. Download it again."
            )


def _run_all(workers: int, tasks: list[Callable]) -> None:
    """Run the tasks on a few threads; the first failure cancels the rest and is raised."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for future in as_completed([pool.submit(task) for task in tasks]):
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) beside `target`, then rename: `target` never holds a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
