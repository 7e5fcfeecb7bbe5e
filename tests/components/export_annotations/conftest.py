"""Local servers for the storage tests: a GCS emulator (gs://) and an HTTP file server."""

from tests.gcs_emulator import gcs_emulator, gcs_server  # noqa: F401
from tests.http_file_server import http_files  # noqa: F401
