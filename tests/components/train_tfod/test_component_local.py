"""train_tfod under kfp.local: imported TFRecords, the light RetinaNet preset for a few steps."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Metrics, Model

from cvat_kfp.components.train_tfod.component import train_tfod
from cvat_kfp.components.training.presets import presets_for
from tests.components.training._training_data import make_tfrecords

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


COCO_METRICS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}


class Trained(NamedTuple):
    model: Model
    metrics: Metrics


@dsl.pipeline
def train_imported_tfrecords(train_uri: str, val_uri: str, hyperparameters: str) -> Trained:
    """A component alone cannot take input artifacts under kfp.local: import them first."""
    train = dsl.importer(artifact_uri=train_uri, artifact_class=Dataset)
    val = dsl.importer(artifact_uri=val_uri, artifact_class=Dataset)
    training = train_tfod(
        train_tfrecords=train.output,
        val_tfrecords=val.output,
        preset="retinanet-mobilenetv2-light",
        hyperparameters=hyperparameters,
    )
    return Trained(training.outputs["model"], training.outputs["metrics"])


def test_train_tfod_runs_locally(tmp_path, kfp_local):
    tfrecords = make_tfrecords(tmp_path / "tfrecords", num_train=4, num_val=2)

    run = train_imported_tfrecords(
        train_uri=str(tfrecords.train_dir),
        val_uri=str(tfrecords.val_dir),
        hyperparameters="num_steps: 3\nbatch_size: 2\nwarmup_steps: 1",
    )

    model_dir = Path(run.outputs["model"].path)
    for name in ("ckpt-3.index", "params.yaml", "label_map.pbtxt", "label_map.json", "model.json"):
        assert (model_dir / name).is_file(), name
    assert list((model_dir / "train").glob("events.out.tfevents.*"))
    metadata = run.outputs["model"].metadata
    assert metadata["preset"] == "retinanet-mobilenetv2-light"
    assert metadata["global_step"] == 3  # a float under kfp.local
    assert metadata["class_names"] == ["circle", "square", "triangle"]
    assert metadata["dataset"]["train"]["num_examples"] == 4
    assert json.loads((model_dir / "model.json").read_text())["global_step"] == 3
    metrics = run.outputs["metrics"].metadata
    assert set(metrics) == COCO_METRICS | {"final_loss"}


def test_the_face_documents_every_preset_and_takes_an_optional_init_model():
    doc = train_tfod.python_func.__doc__
    assert all(preset.name in doc for preset in presets_for("train_tfod"))
    spec = train_tfod.component_spec
    assert spec.inputs["init_model"].optional
    assert spec.inputs["preset"].default == "ssd-mobilenet-v2-coco"
