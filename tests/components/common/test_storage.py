"""The storage module: local paths, gs:// on a real local emulator, http(s):// on a local server."""

import json
import os
import threading
import time
from pathlib import Path, PurePosixPath

import pytest
import requests

from cvat_kfp.components.common import storage
from cvat_kfp.components.common.storage import (
    MARKER,
    HttpBackend,
    IncompleteUploadError,
    ObjectNotFoundError,
    StorageError,
    UnsupportedSchemeError,
)
from tests.gcs_emulator import create_bucket

FILES = {
    "a.txt": b"alpha\n",
    "sub/b.bin": bytes(range(256)) * 40,
    "sub/deeper/c é.json": b'{"c": 1}',
}


def write_tree(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def fast_http():
    """http:// served by a backend that retries 3 times with tiny delays; restored after."""
    original = storage.backend_for("http://x")
    storage.register_backend("http", HttpBackend(attempts=3, backoff_s=0.01))
    yield
    storage.register_backend("http", original)


# --- URIs and names -----------------------------------------------------------------------------


def test_uri_helpers(tmp_path):
    assert storage.scheme_of("gs://b/x") == "gs"
    assert storage.scheme_of("HTTPS://h/x") == "https"
    assert storage.scheme_of("/data/x") == storage.scheme_of("C:\\data") == ""
    assert storage.local_path("file:///data/my%20export.zip") == Path("/data/my export.zip")
    assert storage.local_path("file://localhost/data/x") == Path("/data/x")
    with pytest.raises(StorageError, match="no host"):
        storage.local_path("file://otherhost/data/x")
    assert storage.join_uri("gs://b/run/", "ckpt/1") == "gs://b/run/ckpt/1"
    assert storage.join_uri(str(tmp_path), "a/b") == str(tmp_path / "a" / "b")
    signed = "https://user:pw@h:8443/x.zip?X-Goog-Signature=secret"
    assert storage.redacted(signed) == "https://h:8443/x.zip?..."


def test_safe_relative_path_drops_dots_and_refuses_escapes():
    assert storage.safe_relative_path("./a//b/./c") == PurePosixPath("a/b/c")
    for name, reason in [
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/x", "drive letter"),
        ("c:x", "drive letter"),
        ("a\\..\\x", "backslash"),
        ("a\x00b", "NUL"),
        ("./", "empty"),
    ]:
        with pytest.raises(ValueError, match=reason):
            storage.safe_relative_path(name)


def test_reader_relative_path_takes_backslashes_as_separators_and_refuses_the_same_escapes():
    assert storage.reader_relative_path(".\\a\\b//c.jpg") == PurePosixPath("a/b/c.jpg")
    for name, reason in [
        ("a\\..\\x", "'..'"),
        ("\\\\server\\share\\x", "absolute"),
        ("C:\\Windows\\x", "drive letter"),
        ("a\x00b", "NUL"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=reason):
            storage.reader_relative_path(name)


def test_unsupported_scheme_lists_the_supported_ones():
    with pytest.raises(UnsupportedSchemeError, match=r"s3://.*gs://, http://, https://"):
        storage.exists("s3://bucket/x")


# --- local --------------------------------------------------------------------------------------


def test_local_directory_round_trip_with_marker_last(tmp_path):
    source = write_tree(tmp_path / "src")
    target = tmp_path / "durable" / "run1"
    storage.upload_directory(source, f"file://{target}")
    assert storage.is_complete(str(target))
    manifest = json.loads((target / MARKER).read_text())
    assert manifest == {"files": {name: len(data) for name, data in FILES.items()}}

    copy = storage.download_directory(str(target), tmp_path / "copy", require_complete=True)
    assert read_tree(copy) == FILES  # the marker is storage metadata, not content
    assert storage.list_files(str(target)) == sorted([*FILES, MARKER])


def test_missing_local_file_names_the_path(tmp_path):
    with pytest.raises(ObjectNotFoundError, match="nothing.zip"):
        storage.download_file(str(tmp_path / "nothing.zip"), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert not storage.exists(str(tmp_path / "nothing.zip"))


def test_reader_refuses_a_directory_without_marker(tmp_path):
    half = write_tree(tmp_path / "half")
    with pytest.raises(IncompleteUploadError, match="no _SUCCESS marker"):
        storage.download_directory(str(half), tmp_path / "copy", require_complete=True)
    assert not (tmp_path / "copy").exists()
    # Without the requirement, whatever is there is taken.
    assert read_tree(storage.download_directory(str(half), tmp_path / "copy")) == FILES


def test_reader_waits_for_the_marker(tmp_path):
    source = write_tree(tmp_path / "src")
    target = tmp_path / "target"

    def upload_later():
        time.sleep(0.3)
        storage.upload_directory(source, str(target))

    writer = threading.Thread(target=upload_later)
    writer.start()
    try:
        manifest = storage.wait_until_complete(str(target), timeout_s=20, poll_s=0.05)
    finally:
        writer.join(timeout=20)
    assert set(manifest) == set(FILES)


def test_reader_refuses_files_that_changed_after_the_marker(tmp_path):
    target = tmp_path / "target"
    storage.upload_directory(write_tree(tmp_path / "src"), str(target))
    (target / "a.txt").write_bytes(b"rewritten by someone else")
    with pytest.raises(IncompleteUploadError, match="a.txt.*changed while it was read"):
        storage.download_directory(str(target), tmp_path / "copy", require_complete=True)


class ListingBackend(storage.LocalBackend):
    """evil://: lists the names it is given, whatever the bucket really holds."""

    def __init__(self, names):
        self.names = names

    def list_files(self, uri):
        return self.names


@pytest.mark.parametrize(
    "name, reason",
    [("../../escape.txt", r"a '\.\.' segment"), ("/etc/cron.d/x", "an absolute path")],
)
def test_listed_names_that_would_escape_are_refused(tmp_path, name, reason):
    # Object names may hold ".." or a leading "/" (the emulator cannot store them; GCS can).
    storage.register_backend("evil", ListingBackend(["ok.txt", name]))
    try:
        with pytest.raises(StorageError, match=f"refused, the name is {reason}|contains {reason}"):
            storage.download_directory("evil://bucket/export", tmp_path / "copy")
    finally:
        storage._BACKENDS.pop("evil")
    assert not (tmp_path / "copy").exists()


class RecordingBackend(storage.LocalBackend):
    """rec://PATH: the local backend, recording the order of writes."""

    def __init__(self):
        self.calls = []

    def upload_file(self, local, uri):
        self.calls.append(("upload", Path(uri).name))
        super().upload_file(local, uri.replace("rec://", "file://"))

    def delete_file(self, uri):
        self.calls.append(("delete", Path(uri).name))
        super().delete_file(uri.replace("rec://", "file://"))


def test_upload_removes_the_old_marker_first_and_writes_the_new_one_last(tmp_path):
    recorder = RecordingBackend()
    storage.register_backend("rec", recorder)
    try:
        storage.upload_directory(write_tree(tmp_path / "src"), f"rec://{tmp_path}/out", workers=4)
    finally:
        storage._BACKENDS.pop("rec")
    assert recorder.calls[0] == ("delete", MARKER)
    assert recorder.calls[-1] == ("upload", MARKER)
    uploaded = sorted(name for op, name in recorder.calls[1:-1] if op == "upload")
    assert uploaded == sorted(Path(name).name for name in FILES)


# --- gs:// on the emulator ----------------------------------------------------------------------


def test_gcs_file_round_trip(gcs_emulator, tmp_path):
    create_bucket("bucket")
    local = tmp_path / "export.zip"
    local.write_bytes(os.urandom(300_000))
    storage.upload_file(local, "gs://bucket/exports/export.zip")

    assert storage.is_file("gs://bucket/exports/export.zip")
    assert storage.is_directory("gs://bucket/exports")
    assert not storage.is_file("gs://bucket/exports")
    assert storage.exists("gs://bucket/exports/")
    assert not storage.exists("gs://bucket/other")
    copy = storage.download_file("gs://bucket/exports/export.zip", tmp_path / "copy" / "e.zip")
    assert copy.read_bytes() == local.read_bytes()


def test_gcs_directory_round_trip_and_marker(gcs_emulator, tmp_path):
    create_bucket("bucket")
    storage.upload_directory(write_tree(tmp_path / "src"), "gs://bucket/runs/1/ckpt")
    assert storage.list_files("gs://bucket/runs/1/ckpt") == sorted([*FILES, MARKER])
    assert storage.is_complete("gs://bucket/runs/1/ckpt")
    copy = storage.download_directory(
        "gs://bucket/runs/1/ckpt", tmp_path / "copy", require_complete=True
    )
    assert read_tree(copy) == FILES

    # A second upload over the same prefix: stale files stay, but the manifest lists only the new.
    storage.upload_directory(
        write_tree(tmp_path / "v2", {"only.txt": b"v2"}), "gs://bucket/runs/1/ckpt"
    )
    copy2 = storage.download_directory(
        "gs://bucket/runs/1/ckpt", tmp_path / "copy2", require_complete=True
    )
    assert read_tree(copy2) == {"only.txt": b"v2"}


def test_gcs_reader_refuses_prefix_without_marker(gcs_emulator, tmp_path):
    create_bucket("bucket")
    storage.upload_file(write_tree(tmp_path / "src") / "a.txt", "gs://bucket/half/a.txt")
    assert not storage.is_complete("gs://bucket/half")
    with pytest.raises(IncompleteUploadError, match="gs://bucket/half: no _SUCCESS marker"):
        storage.download_directory("gs://bucket/half", tmp_path / "copy", require_complete=True)


def test_gcs_missing_object_and_bucket_name_the_uri(gcs_emulator, tmp_path):
    create_bucket("bucket")
    with pytest.raises(ObjectNotFoundError, match="gs://bucket/missing.zip: not found"):
        storage.download_file("gs://bucket/missing.zip", tmp_path / "x.zip")
    with pytest.raises(ObjectNotFoundError, match="gs://no-such-bucket/x: not found"):
        storage.download_file("gs://no-such-bucket/x", tmp_path / "x.zip")
    with pytest.raises(ObjectNotFoundError, match="no files under"):
        storage.download_directory("gs://bucket/nothing", tmp_path / "d")
    assert not list(tmp_path.iterdir())


def test_gcs_file_and_folder_of_one_name_cannot_both_land_locally(gcs_emulator, tmp_path):
    bucket = create_bucket("bucket")
    bucket.blob("d/a").upload_from_string(b"file")
    bucket.blob("d/a/b").upload_from_string(b"nested")
    with pytest.raises(StorageError, match="'a' is both a file and a folder"):
        storage.download_directory("gs://bucket/d", tmp_path / "copy")


@pytest.fixture()
def no_google_credentials(monkeypatch):
    """google.auth finds no credentials (as on an on-prem, MinIO or S3 cluster)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", no_credentials)
    storage._gcs_client.cache_clear()
    yield
    storage._gcs_client.cache_clear()


def test_gcs_without_credentials_reads_public_objects_anonymously(
    gcs_server, no_google_credentials, monkeypatch, tmp_path
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)  # only to create the bucket
    create_bucket("public")
    storage.upload_file(write_tree(tmp_path / "src") / "a.txt", "gs://public/ckpt/a.txt")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    storage._gcs_client.cache_clear()
    # the emulator as if it were storage.googleapis.com: the client authenticates as there
    monkeypatch.setenv("API_ENDPOINT_OVERRIDE", gcs_server)
    assert storage.list_files("gs://public/ckpt") == ["a.txt"]
    copy = storage.download_file("gs://public/ckpt/a.txt", tmp_path / "a.txt")
    assert copy.read_bytes() == FILES["a.txt"]
    requests.get(f"{gcs_server}/wipe", timeout=10).raise_for_status()


def test_gcs_without_credentials_says_how_to_provide_them(
    http_files, no_google_credentials, monkeypatch
):
    http_files.fail_next(20, status=401)  # a private bucket refuses the anonymous request
    monkeypatch.setenv("API_ENDPOINT_OVERRIDE", http_files.url().rstrip("/"))
    with pytest.raises(StorageError, match="GOOGLE_APPLICATION_CREDENTIALS.*workload identity"):
        storage.is_file("gs://bucket/x")


@pytest.mark.parametrize(
    "status, problem",
    [(401, "no usable Google Cloud credentials"), (403, r"access denied \(403")],
)
def test_gcs_refusals_say_how_to_provide_credentials(http_files, monkeypatch, status, problem):
    # A 401 makes the client refresh its credentials, which fails for the anonymous ones.
    http_files.fail_next(20, status=status)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", http_files.url().rstrip("/"))
    with pytest.raises(StorageError, match=f"gs://bucket/x: {problem}.*GOOGLE_APPLICATION_CRED"):
        storage.is_file("gs://bucket/x")


def test_gcs_download_errors_are_retried(http_files, monkeypatch, tmp_path):
    # The JSON API download path served as a plain file: enough for download_to_filename.
    served = http_files.root / "download/storage/v1/b/bucket/o/x.bin"
    served.parent.mkdir(parents=True)
    served.write_bytes(b"payload")
    http_files.fail_next(1, status=503, path_prefix="/download/")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", http_files.url().rstrip("/"))
    assert storage.download_file("gs://bucket/x.bin", tmp_path / "x.bin").read_bytes() == b"payload"
    downloads = [p for p in http_files.paths if p.startswith("GET /download/")]
    assert len(downloads) == 2  # the 503, then the retry (other requests read bucket metadata)


# --- http(s):// ---------------------------------------------------------------------------------


def test_http_download_and_exists(http_files, tmp_path):
    (http_files.root / "export.zip").write_bytes(b"zip bytes" * 1000)
    assert storage.is_file(http_files.url("export.zip"))
    assert not storage.is_file(http_files.url("missing.zip"))
    assert not storage.is_directory(http_files.url(""))
    copy = storage.download_file(http_files.url("export.zip"), tmp_path / "e.zip")
    assert copy.read_bytes() == b"zip bytes" * 1000


def test_http_missing_file_names_the_url_without_its_secrets(http_files, tmp_path):
    url = http_files.url("missing.zip") + "?token=secret"
    with pytest.raises(
        ObjectNotFoundError, match=r"/missing.zip\?\.\.\.: not found \(HTTP 404\)"
    ) as e:
        storage.download_file(url, tmp_path / "out" / "x")
    assert "secret" not in str(e.value)
    assert not list((tmp_path / "out").iterdir())


def test_http_retries_5xx_and_429_then_succeeds(http_files, fast_http, tmp_path):
    (http_files.root / "x.bin").write_bytes(b"payload")
    http_files.fail_next(1, status=503)
    http_files.fail_next(1, status=429)
    assert storage.download_file(http_files.url("x.bin"), tmp_path / "x").read_bytes() == b"payload"
    assert http_files.requests == 3


def test_http_gives_up_after_bounded_attempts(http_files, fast_http, tmp_path):
    (http_files.root / "x.bin").write_bytes(b"payload")
    http_files.fail_next(10, status=503)
    with pytest.raises(StorageError, match="HTTP 503 .gave up after 3 attempts"):
        storage.download_file(http_files.url("x.bin"), tmp_path / "x")
    assert http_files.requests == 3


def test_http_connection_refused_is_retried_then_reported(fast_http, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    with pytest.raises(StorageError, match="gave up after 3 attempts"):
        storage.download_file(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x")


def test_http_is_read_only(http_files, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(StorageError, match="read-only"):
        storage.upload_file(tmp_path / "f", http_files.url("f"))
    with pytest.raises(StorageError, match="cannot be listed"):
        storage.list_files(http_files.url(""))
