"""Fixtures of the pre-annotation tests: a local HTTP file server for models fetched over https,
and the environment cvat-cli runs in."""

import pytest

from tests.http_file_server import http_files  # noqa: F401


@pytest.fixture()
def cli_env(env, tmp_path):
    """The token-only CVAT environment, with cvat-cli's cache and config under tmp_path (never
    the machine's own)."""
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return env
