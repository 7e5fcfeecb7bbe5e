"""run_evaluate_model on really trained models (tests/trained_models.py): the RetinaNet learns
enough for its AP to mean something; the Mask R-CNN only a few steps (form, not values)."""

import json
import logging
import re
from pathlib import Path

import pytest

from cvat_kfp.components.evaluate_model.coco_eval import STAT_NAMES
from cvat_kfp.components.evaluate_model.evaluate import run_evaluate_model

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


CLASSES = ["circle", "square", "triangle"]


def evaluated(model_dir: Path, outputs: Path, **arguments):
    """run_evaluate_model as the face calls it, with every output under `outputs`."""
    return run_evaluate_model(
        model_dir, model_dir.parent / "test", outputs / "evaluation",
        outputs / "ap_table.md", outputs / "report.html", **arguments,
    )  # fmt: skip


def check_consistency(result, outputs, score_threshold):
    """What holds for any model: ranges, matrix totals, files, report contents."""
    for name, value in result.metrics.items():
        assert value == -1.0 or 0.0 <= value <= 1.0, (name, value)
    ground_truth = json.loads((outputs / "evaluation" / "ground_truth.json").read_text())
    detections = json.loads((outputs / "evaluation" / "detections.json").read_text())
    gt_counts = [sum(a["category_id"] == k for a in ground_truth["annotations"]) for k in (1, 2, 3)]
    if not isinstance(score_threshold, dict):  # one for all, or class id -> threshold
        score_threshold = dict.fromkeys((1, 2, 3), score_threshold)
    confident = [d for d in detections if d["score"] >= score_threshold[d["category_id"]]]
    matrix = result.confusion_matrix
    assert result.class_names == [*CLASSES, "background"]
    assert [sum(row) for row in matrix[:3]] == gt_counts  # each object found once or missed
    # every confident detection in one predicted column (no crowd objects in shapes)
    assert sum(sum(row[:3]) for row in matrix) == len(confident)
    assert matrix[3][3] == 0
    assert result.num_detections == len(detections)
    html = (outputs / "report.html").read_text()
    assert re.findall(r"<svg class='pr-curve' data-class='(\w+)'", html) == CLASSES
    assert html.count("src='data:image/jpeg;base64,") == 4
    assert "http" not in html
    return detections


def test_a_trained_retinanet(tiny_retinanet, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cvat_kfp.components.evaluate_model")
    result = evaluated(tiny_retinanet, tmp_path, score_threshold=0.3, max_report_images=4)

    assert list(result.metrics) == [*STAT_NAMES, "mean_F1_at_0.5"]
    assert result.metrics["AP50"] >= result.metrics["AP"] >= 0.2  # val AP ~0.45 after training
    detections = check_consistency(result, tmp_path, 0.3)
    assert detections and all("segmentation" not in d for d in detections)
    per_class = json.loads((tmp_path / "evaluation" / "per_class.json").read_text())["classes"]
    assert all(row["AP"] is not None for row in per_class)  # every class has test objects
    assert sum(result.confusion_matrix[i][i] for i in range(3)) > 0
    assert any("evaluation done" in record.getMessage() for record in caplog.records)


def test_a_trained_maskrcnn(tiny_maskrcnn, tmp_path):
    result = evaluated(tiny_maskrcnn, tmp_path, score_threshold=0.05, max_report_images=4)

    masks = [f"mask_{name}" for name in STAT_NAMES]
    assert list(result.metrics) == [*STAT_NAMES, *masks, "mean_F1_at_0.5"]
    detections = check_consistency(result, tmp_path, 0.05)
    assert all(d["segmentation"]["size"] == [192, 256] for d in detections)
    assert "mask AP" in (tmp_path / "ap_table.md").read_text()


def test_a_trained_retinanet_with_thresholds_calibrated_on_val(tiny_retinanet, tmp_path):
    val = tiny_retinanet.parent / "val"
    result = evaluated(tiny_retinanet, tmp_path, max_report_images=4, val_tfrecords_dir=val)

    table = json.loads((tmp_path / "evaluation" / "thresholds.json").read_text())
    assert [row["name"] for row in table["classes"]] == CLASSES and table["split"] == "val"
    calibrated = [row for row in table["classes"] if row["calibrated"]]
    assert calibrated  # the tiny RetinaNet finds some val objects
    for row in calibrated:
        assert 0.0 < row["threshold"] < 1.0 and 0.0 < row["f1"] <= 1.0
    thresholds = {row["id"]: row["threshold"] for row in table["classes"]}
    check_consistency(result, tmp_path, thresholds)  # the matrix counts each class's threshold
    assert result.metrics["mean_F1_calibrated"] >= 0.0
    assert "calibrated on the val split" in (tmp_path / "report.html").read_text()
