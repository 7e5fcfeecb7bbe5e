"""A real local GCS-compatible server (gcp-storage-emulator) for the tests that need gs://.

Import the fixtures into a conftest.py: `from tests.gcs_emulator import gcs_emulator, gcs_server`.
The server runs as a subprocess (TensorFlow in the same process does not mix with its threads),
in memory (its disk backend cannot hold both `a` and `a/b`), on 127.0.0.1 only.
Known limits: it ignores generation preconditions, and some versions crash on an empty upload.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import pytest
import requests

START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_answering(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"the GCS emulator exited with {process.returncode}:\n{output}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"the GCS emulator did not answer at {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def gcs_server():
    """The emulator's base URL, e.g. http://127.0.0.1:PORT, for the whole session."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    # Its log goes to a file: an unread pipe would fill up and stall the server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_answering(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture()
def gcs_emulator(gcs_server, monkeypatch):
    """STORAGE_EMULATOR_HOST pointing at the emulator; wiped (buckets and all) after the test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "cvat-kfp-test")
    yield gcs_server
    requests.get(f"{gcs_server}/wipe", timeout=10).raise_for_status()


def create_bucket(name: str):
    """Create a bucket on the emulator (STORAGE_EMULATOR_HOST must be set); returns it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="cvat-kfp-test", credentials=AnonymousCredentials())
    return client.create_bucket(name)
