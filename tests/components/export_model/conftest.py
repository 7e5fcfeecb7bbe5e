"""One export per light preset for the whole module run (exports cost tens of seconds on CPU)."""

import json

import pytest

from tests.gcs_emulator import gcs_emulator, gcs_server  # noqa: F401


@pytest.fixture(scope="session")
def retinanet_export(tiny_retinanet, tmp_path_factory):
    """The tiny RetinaNet exported with TFLite (auto: a mobile preset) and test metrics."""
    from cvat_kfp.components.export_model.exporter import run_export_model

    outputs = tmp_path_factory.mktemp("retinanet_export")
    return run_export_model(
        tiny_retinanet,
        outputs / "exported",
        outputs / "model_card.md",
        write_evaluation(tmp_path_factory.mktemp("evaluation"), THRESHOLDS),
        test_metrics={"AP": 0.41, "AP50": 0.66},
    )


THRESHOLDS = {
    "iou_threshold": 0.5,
    "default_threshold": 0.5,
    "split": "val",
    "classes": [
        {"id": 1, "name": "circle", "threshold": 0.31, "calibrated": True, "precision": 0.9,
         "recall": 0.8, "f1": 0.847, "val_objects": 5, "val_detections": 9},
        {"id": 2, "name": "square", "threshold": 0.42, "calibrated": True, "precision": 1.0,
         "recall": 0.5, "f1": 0.667, "val_objects": 4, "val_detections": 2},
        {"id": 3, "name": "triangle", "threshold": 0.5, "calibrated": False,
         "reason": "default: no validation objects", "val_objects": 0, "val_detections": 1},
    ],
}  # evaluate-model's thresholds.json for the tiny models' classes  # fmt: skip


def write_evaluation(directory, table):
    (directory / "thresholds.json").write_text(json.dumps(table))
    return directory


@pytest.fixture(scope="session")
def maskrcnn_export(tiny_maskrcnn, tmp_path_factory):
    from cvat_kfp.components.export_model.exporter import run_export_model

    outputs = tmp_path_factory.mktemp("maskrcnn_export")
    return run_export_model(tiny_maskrcnn, outputs / "exported", outputs / "model_card.md")
