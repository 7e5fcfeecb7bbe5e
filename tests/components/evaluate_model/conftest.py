"""A shapes test split (TFRecords with masks), converted once per session."""

import pytest

from cvat_kfp.components.evaluate_model.tfrecords import load_split
from tests.trained_models import make_split_tfrecords


@pytest.fixture(scope="session")
def shapes_split_dir(tmp_path_factory):
    """8 shapes images 256x192 (circle, square, triangle; 1-2 each), as convert-to-tfrecord
    writes them: the same split the tiny trained models' `.parent / "test"` holds."""
    return make_split_tfrecords(tmp_path_factory.mktemp("evaluate_split"), "test", 8, seed=2)


@pytest.fixture
def shapes_split(shapes_split_dir):
    return load_split(shapes_split_dir)  # fresh per test: tests may edit its ground truth
