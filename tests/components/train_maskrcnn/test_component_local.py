"""train_maskrcnn under kfp.local: imported TFRecords, the light Mask R-CNN preset, tiny stages."""

from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Metrics, Model

from cvat_kfp.components.train_maskrcnn.component import train_maskrcnn
from cvat_kfp.components.training.presets import presets_for
from tests.components.training._training_data import make_tfrecords

# Stage 1 only (heads), one epoch of one step, evaluated at its end: the staged schedule's stage
# changes are the engine's tests; here, the component's wiring.
pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


HYPERPARAMETERS = """
num_steps: 1
stage_1_epochs: 1
stage_2_epochs: 0
stage_3_epochs: 0
batch_size: 2
"""


class Trained(NamedTuple):
    model: Model
    metrics: Metrics


@dsl.pipeline
def train_imported_tfrecords(train_uri: str, val_uri: str, hyperparameters: str) -> Trained:
    """A component alone cannot take input artifacts under kfp.local: import them first."""
    train = dsl.importer(artifact_uri=train_uri, artifact_class=Dataset)
    val = dsl.importer(artifact_uri=val_uri, artifact_class=Dataset)
    training = train_maskrcnn(
        train_tfrecords=train.output,
        val_tfrecords=val.output,
        preset="maskrcnn-mobilenetv2-light",
        hyperparameters=hyperparameters,
    )
    return Trained(training.outputs["model"], training.outputs["metrics"])


def test_train_maskrcnn_runs_locally(tmp_path, kfp_local):
    tfrecords = make_tfrecords(tmp_path / "tfrecords", num_train=4, num_val=2)

    run = train_imported_tfrecords(
        train_uri=str(tfrecords.train_dir),
        val_uri=str(tfrecords.val_dir),
        hyperparameters=HYPERPARAMETERS,
    )

    model_dir = Path(run.outputs["model"].path)
    for name in ("ckpt-1.index", "params.yaml", "label_map.csv", "model.json"):
        assert (model_dir / name).is_file(), name
    metadata = run.outputs["model"].metadata
    assert (metadata["component"], metadata["preset"]) == (
        "train_maskrcnn",
        "maskrcnn-mobilenetv2-light",
    )
    assert metadata["global_step"] == 1
    metrics = run.outputs["metrics"].metadata
    assert {"AP", "mask_AP", "mask_AP50", "final_loss"} <= set(metrics)
    assert all(isinstance(value, float) for value in metrics.values())


def test_the_face_documents_every_preset_and_takes_an_optional_init_model():
    doc = train_maskrcnn.python_func.__doc__
    assert all(preset.name in doc for preset in presets_for("train_maskrcnn"))
    spec = train_maskrcnn.component_spec
    assert spec.inputs["init_model"].optional
    assert spec.inputs["preset"].default == "maskrcnn"
