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
    confident = [d for d in detections if d["score"] >= score_threshold]
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

    assert list(result.metrics) == list(STAT_NAMES)
    assert result.metrics["AP50"] >= result.metrics["AP"] >= 0.2  # val AP ~0.45 after training
    detections = check_consistency(result, tmp_path, 0.3)
    assert detections and all("segmentation" not in d for d in detections)
    per_class = json.loads((tmp_path / "evaluation" / "per_class.json").read_text())["classes"]
    assert all(row["AP"] is not None for row in per_class)  # every class has test objects
    assert sum(result.confusion_matrix[i][i] for i in range(3)) > 0
    assert any("evaluation done" in record.getMessage() for record in caplog.records)


def test_a_trained_maskrcnn(tiny_maskrcnn, tmp_path):
    result = evaluated(tiny_maskrcnn, tmp_path, score_threshold=0.05, max_report_images=4)

    assert list(result.metrics) == [*STAT_NAMES, *(f"mask_{name}" for name in STAT_NAMES)]
    detections = check_consistency(result, tmp_path, 0.05)
    assert all(d["segmentation"]["size"] == [192, 256] for d in detections)
    assert "mask AP" in (tmp_path / "ap_table.md").read_text()
