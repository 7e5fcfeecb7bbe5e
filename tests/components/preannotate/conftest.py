"""Fixtures of the pre-annotation tests: a local HTTP file server for models fetched over https."""

from tests.http_file_server import http_files  # noqa: F401
