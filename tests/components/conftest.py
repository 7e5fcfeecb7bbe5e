"""Fixtures of the component tests that talk to the CVAT stand-in."""

import pytest

CVAT_CREDENTIAL_VARS = ("CVAT_ACCESS_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD", "CVAT_ORGANIZATION")


@pytest.fixture()
def env(monkeypatch):
    """CVAT credentials as a token only, none of the machine's own; tests set others through the
    returned monkeypatch."""
    for name in CVAT_CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")
    return monkeypatch
