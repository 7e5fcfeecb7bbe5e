"""A local HTTP server on 127.0.0.1 serving a folder, that can fail requests on demand.

Import the fixture into a conftest.py: `from tests.http_file_server import http_files`.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):
        if not self.server.take_failure(self):
            super().do_GET()

    def do_HEAD(self):
        if not self.server.take_failure(self):
            super().do_HEAD()

    def log_message(self, format, *args):
        pass


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.root = root
        self.requests = 0
        self.paths: list[str] = []
        self._failures: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def fail_next(self, count: int, status: int = 503, path_prefix: str = "/") -> None:
        """Answer the next `count` requests (for paths starting so) with `status`."""
        with self._lock:
            self._failures += [(status, path_prefix)] * count

    def take_failure(self, handler) -> bool:
        with self._lock:
            self.requests += 1
            self.paths.append(f"{handler.command} {handler.path}")
            matching = [f for f in self._failures if handler.path.startswith(f[1])]
            if not matching:
                return False
            self._failures.remove(matching[0])
        status = matching[0][0]
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True


@pytest.fixture()
def http_files(tmp_path):
    """A FileServer serving tmp_path/"www"; stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    server = FileServer(root)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
