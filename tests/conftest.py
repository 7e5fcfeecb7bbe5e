"""Fixtures shared by every test: the third-party test data beside the repo, and small datasets."""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TEST_DATA = REPO_ROOT.parent / "shared" / "test_data"


@pytest.fixture(scope="session")
def shared_test_data() -> Path:
    """../shared/test_data, or a clean skip on a fresh clone that has none."""
    if not SHARED_TEST_DATA.is_dir():
        pytest.skip(f"third-party test data not found at {SHARED_TEST_DATA}")
    return SHARED_TEST_DATA


@pytest.fixture()
def temp_dir(tmp_path, monkeypatch) -> Path:
    """An empty folder that is the process's temp directory (TMPDIR) for one test."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return folder


@pytest.fixture()
def kfp_local(tmp_path) -> Path:
    """kfp.local as the suite runs components: subprocesses in this venv (our package importable),
    outputs under the returned pipeline root."""
    from kfp import local

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture(scope="session")
def tiny_retinanet(tmp_path_factory) -> Path:
    """A light RetinaNet trained 160 steps on shapes (tests/trained_models.py); `.parent/test`
    holds a test split's TFRecords."""
    from tests.trained_models import train_tiny_model

    root = tmp_path_factory.mktemp("tiny_retinanet")
    return train_tiny_model(root, "retinanet-mobilenetv2-light")


@pytest.fixture(scope="session")
def tiny_maskrcnn(tmp_path_factory) -> Path:
    """A light Mask R-CNN trained a few steps on shapes with masks; `.parent/test` as above."""
    from tests.trained_models import train_tiny_model

    root = tmp_path_factory.mktemp("tiny_maskrcnn")
    return train_tiny_model(root, "maskrcnn-mobilenetv2-light")
