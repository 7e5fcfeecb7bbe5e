"""The CVAT function with real tiny models (tests/trained_models.py), through cvat-cli's and
cvat-sdk's own code: `cvat-cli task auto-annotate` with an exported model fetched over https,
`cvat-cli function run-agent` (via cvat_agent) with a trained Model, and cvat-sdk's driver with a
Mask R-CNN asked for polygons. What reaches the task is what the predictor says about the same
frames."""

import io
import zipfile

import numpy as np
import pytest
from cvat_cli.__main__ import main as cvat_cli
from cvat_sdk import Client, Config
from cvat_sdk.auto_annotation import BadFunctionError, annotate_task
from cvat_sdk.core.client import AccessTokenCredentials
from PIL import Image

from cvat_kfp.components.inference.predictor import (
    ExportedPredictor,
    TrainedPredictor,
    load_predictor,
)
from cvat_kfp.components.preannotate import cvat_agent
from cvat_kfp.components.preannotate import shapes as geometry
from cvat_kfp.components.preannotate.cvat_function import ModelFunction
from tests.components.export_annotations.cvat_mock_server import CvatMockServer
from tests.components.preannotate.test_real_model import task_frames
from tests.trained_models import CLASSES

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


MODULE = "cvat_kfp.components.preannotate.cvat_function"


@pytest.fixture(scope="module")
def exported_retinanet(tiny_retinanet, tmp_path_factory):
    from cvat_kfp.components.export_model.exporter import run_export_model

    root = tmp_path_factory.mktemp("cvat_function_export")
    return run_export_model(
        tiny_retinanet, root / "exported", root / "model_card.md", tflite="no"
    ).output_dir


def expected_boxes(predictor, frames, threshold, label_ids):
    """(frame, task label id, [xtl, ytl, xbr, ybr]) of each prediction at or above threshold."""
    wanted = []
    for index, (_, data) in enumerate(frames):
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        height, width = image.shape[:2]
        detections = predictor.predict(image)
        for k in np.flatnonzero(detections.scores >= threshold):
            ymin, xmin, ymax, xmax = detections.boxes[k]
            box = [xmin * width, ymin * height, xmax * width, ymax * height]
            wanted.append((index, label_ids[detections.class_names[k]], box))
    return wanted


def assert_boxes(shapes, wanted):
    assert wanted, "the tiny RetinaNet found nothing above the threshold"
    assert [(s["frame"], s["label_id"]) for s in shapes] == [w[:2] for w in wanted]
    assert {(s["type"], s["source"]) for s in shapes} == {("rectangle", "auto")}
    for stored, (_, _, box) in zip(shapes, wanted, strict=True):
        assert stored["points"] == pytest.approx(box, abs=0.01)


def test_cvat_cli_auto_annotates_with_an_exported_model_over_https(
    exported_retinanet,
    tiny_retinanet,
    http_files,
    cli_env,
    tmp_path,
):
    with zipfile.ZipFile(http_files.root / "model.zip", "w") as archive:
        for path in sorted(exported_retinanet.rglob("*")):
            if path.is_file():
                archive.write(path, f"exported/{path.relative_to(exported_retinanet)}")
    frames = task_frames(tiny_retinanet)
    command = ["task", "auto-annotate", "7", "--function-module", MODULE]
    command += ["-p", f"model=str:{http_files.url('model.zip')}"]
    command += ["-p", f"cache_dir=str:{tmp_path / 'models'}", "--conf-threshold", "0.1"]

    with CvatMockServer(chunk_size=2) as server:
        server.add_task(7, labels=list(CLASSES), frames=frames)
        server.add_task(8, labels=list(CLASSES[:2]), frames=frames)
        assert cvat_cli(["--server-host", server.url, *command]) == 0
        downloads = http_files.requests
        with pytest.raises(BadFunctionError, match=f"label '{CLASSES[2]}' is not in dataset"):
            cvat_cli(["--server-host", server.url, *command[:2], "8", *command[3:]])
        label_ids = {name: server.label_id(7, name) for name in CLASSES}
        shapes, other_task = server.shapes(7), server.shapes(8)

    assert http_files.requests == downloads, "the second run fetched the model again"
    assert other_task == []
    wanted = expected_boxes(ExportedPredictor(exported_retinanet), frames, 0.1, label_ids)
    assert_boxes(shapes, wanted)


def test_the_agent_serves_a_trained_model_for_a_cvat_request(tiny_retinanet, cli_env):
    frames = task_frames(tiny_retinanet)
    model = ["-p", f"model=str:{tiny_retinanet}"]

    with CvatMockServer(chunk_size=2) as server:
        server.add_task(7, labels=list(CLASSES), frames=frames)
        assert cvat_agent.main(["--server-host", server.url, "register", "tiny", *model]) == 0
        (function_id,) = server.functions
        request = server.add_function_request(function_id, 7, threshold=0.1)
        run = ["--server-host", server.url, "run-agent", "tiny", *model, "--burst"]
        assert cvat_agent.main(run) == 0
        label_ids = {name: server.label_id(7, name) for name in CLASSES}
        shapes, status = server.shapes(7), server.function_requests[request]["status"]

    assert status == "finished"
    assert server.functions[function_id]["labels_v2"] == [
        {"name": name, "type": "rectangle", "attributes": []} for name in CLASSES
    ]
    assert_boxes(shapes, expected_boxes(load_predictor(tiny_retinanet), frames, 0.1, label_ids))


def test_a_mask_rcnn_gives_cvat_the_polygons_of_its_masks(tiny_maskrcnn, cli_env, tmp_path):
    # Eight training steps leave every score below Model Garden's 0.05 floor: without the floor,
    # whatever the detector finds (quality aside) must reach CVAT as its masks' polygons.
    predictor = TrainedPredictor(tiny_maskrcnn, detection_overrides={"pre_nms_score_threshold": 0})
    frames = task_frames(tiny_maskrcnn, count=2)

    with CvatMockServer(chunk_size=1) as server:
        server.add_task(7, labels=list(CLASSES), frames=frames)
        with Client(server.url, config=Config(cache_dir=tmp_path / "sdk")) as client:
            client.login(AccessTokenCredentials(server.token))
            annotate_task(
                client, 7, ModelFunction(predictor), conf_threshold=0.0, conv_mask_to_poly=True
            )
        label_ids = {name: server.label_id(7, name) for name in CLASSES}
        shapes = server.shapes(7)

    wanted = []
    for index, (_, data) in enumerate(frames):
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        detections = predictor.predict(image)
        for k in range(len(detections)):
            label_id = label_ids[detections.class_names[k]]
            polygons = geometry.mask_polygons(detections.masks[k])
            wanted += [(index, label_id, polygon) for polygon in polygons]
    assert wanted, "the tiny Mask R-CNN predicted no non-empty mask"
    assert {s["type"] for s in shapes} == {"polygon"}
    # Scores this low nearly tie, so the order may differ between two runs: compare as sets.
    uploaded = sorted((s["frame"], s["label_id"], s["points"]) for s in shapes)
    assert uploaded == sorted(wanted)
