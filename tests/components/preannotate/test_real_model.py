"""Pre-annotation with the real predictor of small trained models (tests/trained_models.py): what
reaches the server is what the predictor says about each frame, label by name."""

import io
import json

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from PIL import Image

from cvat_kfp.components.inference.predictor import TrainedPredictor, load_predictor
from cvat_kfp.components.preannotate.preannotate import run_preannotate
from tests.components.export_annotations.cvat_mock_server import CvatMockServer
from tests.trained_models import CLASSES

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


THRESHOLD = 0.05


def task_frames(model_dir, count=3):
    """(name, PNG bytes) of the first test images the model was not trained on."""
    dataset = model_dir.parent / "test_dataset"
    images = json.loads((dataset / "annotations.json").read_text())["images"][:count]
    return [(i["file_name"], (dataset / "images" / i["file_name"]).read_bytes()) for i in images]


def preannotate(model_dir, predictor, tmp_path, threshold=THRESHOLD, **options):
    frames = task_frames(model_dir)
    with CvatMockServer() as server:
        server.add_task(7, labels=list(CLASSES), frames=frames)
        run_preannotate(
            str(model_dir),
            str(tmp_path / "predictions"),
            str(tmp_path / "report.md"),
            server.url,
            "7",
            score_threshold=threshold,
            predictor=predictor,
            **options,
        )
        ids = {name: server.label_id(7, name) for name in CLASSES}
        shapes = server.shapes(7)
    expected = []
    for index, (_, data) in enumerate(frames):
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        detections = predictor.predict(image)
        keep = detections.scores >= threshold
        expected.append((index, detections, keep, image.shape[:2]))
    return shapes, ids, expected


def test_a_trained_retinanet_uploads_its_boxes(tiny_retinanet, tmp_path, env):
    predictor = load_predictor(tiny_retinanet)
    assert not predictor.has_masks

    shapes, ids, expected = preannotate(tiny_retinanet, predictor, tmp_path)

    wanted = []
    for frame, detections, keep, (height, width) in expected:
        for k in np.flatnonzero(keep):
            ymin, xmin, ymax, xmax = detections.boxes[k]
            box = [xmin * width, ymin * height, xmax * width, ymax * height]
            wanted.append((frame, ids[detections.class_names[k]], box))
    assert wanted, "the tiny RetinaNet found nothing above the threshold"
    assert [s["type"] for s in shapes] == ["rectangle"] * len(wanted)
    assert [(s["frame"], s["label_id"]) for s in shapes] == [w[:2] for w in wanted]
    for stored, (_, _, box) in zip(shapes, wanted, strict=True):
        assert stored["points"] == pytest.approx(box, abs=0.01)
        assert stored["source"] == "auto"


def test_a_trained_maskrcnn_uploads_its_masks(tiny_maskrcnn, tmp_path, env):
    # Eight training steps leave every score far below Model Garden's 0.05 floor: without the
    # floor, the detector's boxes and masks (whatever their quality) are what must reach CVAT.
    predictor = TrainedPredictor(tiny_maskrcnn, detection_overrides={"pre_nms_score_threshold": 0})
    assert predictor.has_masks

    shapes, ids, expected = preannotate(
        tiny_maskrcnn, predictor, tmp_path, threshold=0.0, mask_format="mask"
    )

    wanted = sorted(
        (frame, ids[detections.class_names[k]], np.packbits(detections.masks[k]).tobytes())
        for frame, detections, keep, _ in expected
        for k in np.flatnonzero(keep)
        if detections.masks[k].any()
    )
    assert wanted, "the tiny Mask R-CNN predicted no non-empty mask"
    height, width = expected[0][3]
    assert {s["type"] for s in shapes} == {"mask"}
    # Scores this low nearly tie, so the order may differ between two runs: compare as sets.
    uploaded = sorted(
        (
            s["frame"],
            s["label_id"],
            np.packbits(
                decode_mask(s["points"], image_width=width, image_height=height).astype(np.uint8)
            ).tobytes(),
        )
        for s in shapes
    )
    assert uploaded == wanted
