"""A local HTTP file server, standing in for storage.googleapis.com's published checkpoints."""

from tests.http_file_server import http_files  # noqa: F401
