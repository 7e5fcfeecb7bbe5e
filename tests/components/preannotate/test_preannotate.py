"""Pre-annotating a CVAT task with a fake predictor whose detections are known, against the local
server speaking CVAT's REST API: the uploaded shapes are checked exactly."""

import io
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from PIL import Image
from pycocotools import mask as mask_utils

from cvat_kfp.components.common.cvat_client import CvatServerError
from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.readers import cvat_xml
from cvat_kfp.components.inference.predictor import Detections
from cvat_kfp.components.preannotate.preannotate import PREFETCH_FRAMES, run_preannotate
from tests.components.export_annotations.cvat_mock_server import CvatMockServer

ANNOTATIONS = r"/api/tasks/\d+/annotations/?"
W, H = 40, 30


def png(width=W, height=H, color=(200, 60, 30), exif_orientation=None) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (width, height), color)
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", exif=exif)
    else:
        image.save(out, "PNG")
    return out.getvalue()


class FakePredictor:
    """Answers frame after frame with the detections given, in order; records the images."""

    def __init__(self, names, per_frame, has_masks=False):
        self.label_map = LabelMap(tuple(names))
        self.has_masks = has_masks
        self.description = {"source": "fake"}
        self.per_frame = list(per_frame)
        self.images = []

    def predict(self, image):
        self.images.append(image)
        found = self.per_frame.pop(0) if self.per_frame else []
        h, w = image.shape[:2]
        masks = None
        if self.has_masks:
            masks = np.zeros((len(found), h, w), np.uint8)
            for k, det in enumerate(found):
                if det.get("mask") is not None:
                    masks[k] = det["mask"]
        return Detections(
            boxes=np.array([d["box"] for d in found], np.float32).reshape(-1, 4),
            classes=np.array([self.label_map.id_of(d["name"]) for d in found], np.int32),
            scores=np.array([d["score"] for d in found], np.float32),
            class_names=[d["name"] for d in found],
            masks=masks,
        )


def det(name, score, xtl, ytl, xbr, ybr, mask=None, width=W, height=H):
    """A detection given by its pixel box (normalized here as the predictor gives it)."""
    box = [ytl / height, xtl / width, ybr / height, xbr / width]
    return {"name": name, "score": score, "box": box, "mask": mask}


@pytest.fixture()
def server():
    with CvatMockServer() as server:
        yield server


@pytest.fixture()
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def run(server, tmp_path, predictor, task_id="7", **options):
    """The result's predictions metadata and the report's Markdown."""
    result = run_preannotate(
        "unused-model-dir",
        str(tmp_path / "predictions"),
        str(tmp_path / "report" / "report.md"),
        server.url,
        task_id,
        predictor=predictor,
        retry_delay=0.01,
        **options,
    )
    assert set(result.metadata) == {"predictions"}
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    return result.metadata["predictions"], report


def report_of(tmp_path):
    return str(tmp_path / "report.md")


def uploaded(server, task_id=7):
    """The task's shapes as stored, without the ids the server gave them."""
    return [{k: v for k, v in s.items() if k != "id"} for s in server.shapes(task_id)]


def shape(type, frame, label_id, points, score, **extra):
    return {
        "type": type,
        "frame": frame,
        "label_id": label_id,
        "points": points,
        "occluded": False,
        "outside": False,
        "z_order": 0,
        "rotation": 0.0,
        "group": None,
        "source": "auto",
        "attributes": [],
        "elements": [],
        "score": pytest.approx(score),
        **extra,
    }


def frames(n, **kwargs):
    return [(f"img_{i}.png", png(**kwargs)) for i in range(n)]


def predictions_json(tmp_path):
    return json.loads((tmp_path / "predictions" / "predictions.json").read_text())


# --- boxes ---------------------------------------------------------------------------------


def test_boxes_are_appended_as_rectangles_batch_by_batch(server, tmp_path, env, logs):
    server.add_task(7, labels=["cat", "dog"], frames=frames(3))
    cat, dog = server.label_id(7, "cat"), server.label_id(7, "dog")
    server.add_shapes(7, {"type": "rectangle", "frame": 0, "label_id": dog, "points": [1, 1, 2, 2]})
    predictor = FakePredictor(
        ["cat", "dog"],
        [
            [det("cat", 0.9, 4, 3, 20, 15), det("dog", 0.4, 0, 0, 5, 5)],  # dog below 0.5
            [],
            [det("dog", 0.75, 10, 5, 50, 40)],  # clipped to the 40x30 frame
        ],
    )

    metadata, report = run(server, tmp_path, predictor, batch_size=2)

    assert uploaded(server)[1:] == [
        shape("rectangle", 0, cat, [4.0, 3.0, 20.0, 15.0], 0.9),
        shape("rectangle", 2, dog, [10.0, 5.0, 40.0, 30.0], 0.75),
    ]
    assert uploaded(server)[0]["source"] == "manual"  # appended: the task's own shape stays
    patches = server.calls("PATCH", ANNOTATIONS)
    assert [p.query for p in patches] == [{"action": "create"}] * 2  # frames 0-1, frame 2
    assert not server.calls("DELETE", ANNOTATIONS) and not server.calls("PUT", ANNOTATIONS)
    assert [p.shape for p in predictor.images] == [(H, W, 3)] * 3
    assert metadata["uploaded_shapes"] == 2 and metadata["below_threshold"] == 1
    assert metadata["predictions_per_label"] == {"cat": 1, "dog": 1}
    assert "| frames processed | 3 |" in report
    assert "| cat | 1 | rectangle | 1 | 1 |" in report
    assert any(
        "batch 2 of 2 (frames 2-2): 1 shape(s) uploaded, 2 in all" in x for x in logs.messages
    )

    coco = predictions_json(tmp_path)
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "img_0.png", W, H),
        (2, "img_1.png", W, H),
        (3, "img_2.png", W, H),
    ]
    first, second = coco["annotations"]
    assert first["image_id"] == 1 and first["category_id"] == 1
    assert first["bbox"] == [4.0, 3.0, 16.0, 12.0] and first["area"] == 192.0
    assert first["score"] == pytest.approx(0.9) and "segmentation" not in first
    assert second["image_id"] == 3 and second["bbox"] == [10.0, 5.0, 30.0, 25.0]


def exported_model_with_thresholds(tmp_path, thresholds: dict[str, float]):
    """An export's export.json carrying evaluate-model's calibrated thresholds (the predictor
    itself is the fake)."""
    model = tmp_path / "exported"
    model.mkdir()
    classes = [{"id": i, "name": name, "threshold": t, "calibrated": True}
               for i, (name, t) in enumerate(thresholds.items(), start=1)]  # fmt: skip
    (model / "export.json").write_text(json.dumps({"score_thresholds": {"classes": classes}}))
    return str(model)


def test_without_a_threshold_each_label_gets_the_models_calibrated_one(server, tmp_path, env):
    server.add_task(7, labels=["cat", "dog"], frames=frames(1))
    cat, dog = server.label_id(7, "cat"), server.label_id(7, "dog")
    found = [
        det("cat", 0.35, 1, 1, 9, 9),  # kept: cat's threshold is 0.3
        det("cat", 0.25, 11, 1, 19, 9),  # below it
        det("dog", 0.6, 21, 1, 29, 9),  # below dog's 0.7
        det("dog", 0.8, 1, 11, 9, 19),
    ]
    model = exported_model_with_thresholds(tmp_path, {"cat": 0.3, "dog": 0.7})

    result = run_preannotate(
        model, str(tmp_path / "predictions"), report_of(tmp_path), server.url, "7",
        predictor=FakePredictor(["cat", "dog"], [found]), retry_delay=0.01,
    )  # fmt: skip

    assert uploaded(server) == [
        shape("rectangle", 0, cat, [1.0, 1.0, 9.0, 9.0], 0.35),
        shape("rectangle", 0, dog, [1.0, 11.0, 9.0, 19.0], 0.8),
    ]
    metadata = result.metadata["predictions"]
    assert metadata["score_threshold"] == -1.0 and metadata["below_threshold"] == 2
    assert metadata["score_thresholds"] == {"cat": 0.3, "dog": 0.7}
    report = (tmp_path / "report.md").read_text()
    assert "| score threshold | per class, calibrated on the validation split: cat 0.300, " in (
        report
    )


def test_a_given_threshold_overrides_the_models(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(1))
    model = exported_model_with_thresholds(tmp_path, {"cat": 0.3})

    result = run_preannotate(
        model, str(tmp_path / "predictions"), report_of(tmp_path), server.url, "7",
        predictor=FakePredictor(["cat"], [[det("cat", 0.35, 1, 1, 9, 9)]]), retry_delay=0.01,
        score_threshold=0.5,
    )  # fmt: skip

    assert result.metadata["predictions"]["predictions"] == 0
    assert result.metadata["predictions"]["score_thresholds"] == {"cat": 0.5}
    assert "| score threshold | 0.5 (given) |" in (tmp_path / "report.md").read_text()


def test_a_model_without_thresholds_gets_the_default_and_says_so(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(2))
    predictor = FakePredictor(
        ["cat"], [[det("cat", 0.55, 1, 1, 9, 9)], [det("cat", 0.45, 1, 1, 9, 9)]]
    )

    metadata, report = run(server, tmp_path, predictor)  # "unused-model-dir": no export.json

    assert metadata["predictions"] == 1 and metadata["score_thresholds"] == {"cat": 0.5}
    assert "0.5 (default: the model carries no calibrated thresholds" in report


def test_replace_removes_the_annotations_first(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(1))
    cat = server.label_id(7, "cat")
    server.add_shapes(7, {"type": "rectangle", "frame": 0, "label_id": cat, "points": [1, 1, 2, 2]})
    predictor = FakePredictor(["cat"], [[det("cat", 0.6, 1, 2, 3, 4)]])

    metadata, report = run(server, tmp_path, predictor, existing_annotations="replace")

    assert uploaded(server) == [shape("rectangle", 0, cat, [1.0, 2.0, 3.0, 4.0], 0.6)]
    methods = [r.method for r in server.requests if r.path.endswith("/annotations/")]
    assert methods == ["DELETE", "PATCH"]
    assert "replacing the task's annotations" in report


def test_dry_run_writes_predictions_and_changes_nothing(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(2))
    predictor = FakePredictor(["cat"], [[det("cat", 0.6, 1, 2, 3, 4)], []])

    metadata, report = run(
        server, tmp_path, predictor, dry_run=True, existing_annotations="replace"
    )

    assert uploaded(server) == []
    assert [r.method for r in server.requests if "annotations" in r.path] == []
    assert len(predictions_json(tmp_path)["annotations"]) == 1
    assert metadata["dry_run"] is True and metadata["uploaded_shapes"] == 0
    assert "dry run" in report


def colored_frames(n, **kwargs):
    """n frames told apart by their colour (frame i: red = 10 * i)."""
    return [(f"img_{i}.png", png(color=(10 * i, 60, 30), **kwargs)) for i in range(n)]


def reds(predictor):
    """The frames the predictor saw, by the red of their first pixel / 10."""
    return [int(image[0, 0, 0]) // 10 for image in predictor.images]


def data_requests(server, task_id=7):
    """(type, number) of each frame or chunk request, in order."""
    calls = server.calls("GET", rf"/api/tasks/{task_id}/data/?")
    return [(r.query["type"], int(r.query["number"])) for r in calls]


def test_image_frames_come_in_chunks_one_request_each(server, tmp_path, env, logs):
    server.chunk_size = 3
    server.add_task(7, labels=["cat"], frames=colored_frames(7))
    predictor = FakePredictor(["cat"], [[]] * 6 + [[det("cat", 0.6, 1, 2, 3, 4)]])

    metadata, report = run(server, tmp_path, predictor)

    assert data_requests(server) == [("chunk", 0), ("chunk", 1), ("chunk", 2)]
    chunk_calls = server.calls("GET", r"/api/tasks/7/data/?")
    assert {r.query["quality"] for r in chunk_calls} == {"original"}
    assert reds(predictor) == list(range(7))
    assert [s["frame"] for s in uploaded(server)] == [6]
    assert "| frames | fetched in 3 chunk(s) of up to 3 frames |" in report
    assert any("fetched in 3 chunk(s)" in line for line in logs.messages)


def test_the_stand_in_chunk_is_laid_out_as_cvat_writes_it(server):
    server.chunk_size = 3
    server.add_task(7, frames=[("a.png", png()), ("b.jpg", png(exif_orientation=1))] * 2)

    status, body, headers = server._chunk(7, 1)

    assert status == 200 and headers == [("Content-Type", "application/zip")]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == ["000000.jpg"]  # numbered within the chunk
        assert archive.read("000000.jpg") == server.frames[7][3].data


def test_deleted_frames_are_neither_read_nor_predicted(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(4), deleted_frames=[1, 2])
    predictor = FakePredictor(
        ["cat"], [[det("cat", 0.6, 1, 2, 3, 4)], [det("cat", 0.7, 1, 1, 9, 9)]]
    )

    metadata, report = run(server, tmp_path, predictor)

    assert [s["frame"] for s in uploaded(server)] == [0, 3]
    assert data_requests(server) == [("chunk", 0)]  # one chunk of 72 holds all 4
    assert len(predictor.images) == 2
    assert [i["frame"] for i in predictions_json(tmp_path)["images"]] == [0, 3]
    assert "2 deleted frame(s) left out" in report


def test_a_chunk_of_deleted_frames_only_is_not_read(server, tmp_path, env):
    server.chunk_size = 2
    server.add_task(7, labels=["cat"], frames=colored_frames(6), deleted_frames=[2, 3, 5])

    run(server, tmp_path, FakePredictor(["cat"], []))

    assert data_requests(server) == [("chunk", 0), ("chunk", 2)]
    assert [i["frame"] for i in predictions_json(tmp_path)["images"]] == [0, 1, 4]


def test_a_frame_step_reads_the_task_frames_as_cvat_numbers_them(server, tmp_path, env):
    # frame filter step=3 over 8 uploaded images: the task's frames 0-2 are images 0, 3, 6
    server.chunk_size = 2
    server.add_task(7, labels=["cat"], frames=colored_frames(8), frame_step=3)
    predictor = FakePredictor(["cat"], [[], [], [det("cat", 0.6, 1, 2, 3, 4)]])

    run(server, tmp_path, predictor)

    assert data_requests(server) == [("chunk", 0), ("chunk", 1)]
    assert reds(predictor) == [0, 3, 6]
    images = predictions_json(tmp_path)["images"]
    assert [(i["frame"], i["file_name"]) for i in images] == [
        (0, "img_0.png"),
        (1, "img_3.png"),
        (2, "img_6.png"),
    ]
    assert [s["frame"] for s in uploaded(server)] == [2]


def test_a_failing_chunk_is_retried(server, tmp_path, env, logs):
    server.chunk_size = 2
    server.add_task(7, labels=["cat"], frames=colored_frames(3))
    server.fail("GET", "/api/tasks/7/data/", 503, 502)
    predictor = FakePredictor(["cat"], [[], [], [det("cat", 0.6, 1, 2, 3, 4)]])

    run(server, tmp_path, predictor)

    assert data_requests(server) == [("chunk", 0)] * 3 + [("chunk", 1)]
    assert reds(predictor) == [0, 1, 2]
    assert [s["frame"] for s in uploaded(server)] == [2]
    retries = [line for line in logs.messages if "retry" in line]
    assert len(retries) == 2 and "could not download chunk 0 (frames 0-1) of task 7" in retries[0]


def test_a_chunk_that_keeps_failing_stops_before_anything_is_uploaded(server, tmp_path, env):
    server.chunk_size = 2
    server.add_task(7, labels=["cat"], frames=colored_frames(3))
    server.fail("GET", "/api/tasks/7/data/", *[500] * 6)

    with pytest.raises(CvatServerError, match=r"could not download chunk 0 \(frames 0-1\) of "
                       r"task 7 on http://127.0.0.1:\d+ after 6 attempts: HTTP 500"):  # fmt: skip
        run(server, tmp_path, FakePredictor(["cat"], [[det("cat", 0.6, 1, 2, 3, 4)]] * 3))

    assert uploaded(server) == [] and not server.calls("PATCH", ANNOTATIONS)


def test_a_chunk_that_is_not_a_zip_of_its_frames_is_named(server, tmp_path, env):
    server.chunk_size = 2
    server.add_task(7, labels=["cat"], frames=colored_frames(3))
    server._chunk = lambda task_id, number: (200, b"<html>proxy error</html>", [])

    with pytest.raises(CvatServerError, match=r"chunk 0 \(frames 0-1\) of task 7 is not the zip of "
                       r"frames CVAT serves for an image task \(24 bytes\)"):  # fmt: skip
        run(server, tmp_path, FakePredictor(["cat"], []))

    one_file = io.BytesIO()
    with zipfile.ZipFile(one_file, "w") as archive:
        archive.writestr("000000.png", png())
    server._chunk = lambda task_id, number: (200, one_file.getvalue(), [])
    with pytest.raises(CvatServerError, match="it holds 1 file.s. for its 2 frame.s."):
        run(server, tmp_path, FakePredictor(["cat"], []))
    assert uploaded(server) == []


def test_frames_are_fetched_ahead_of_the_model_a_few_at_most(server, tmp_path, env):
    server.chunk_size = 1
    server.add_task(7, labels=["cat"], frames=colored_frames(PREFETCH_FRAMES + 10))
    requests_seen = []

    class SlowFirstFrame(FakePredictor):
        def predict(self, image):
            if not self.images:  # the fetching thread runs on while the model works
                deadline = time.monotonic() + 10
                while len(data_requests(server)) <= PREFETCH_FRAMES and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)
                requests_seen.append(len(data_requests(server)))
            return super().predict(image)

    predictor = SlowFirstFrame(["cat"], [])
    run(server, tmp_path, predictor, dry_run=True)

    # the queue's frames, the one in the thread's hand, the one the model has
    assert PREFETCH_FRAMES < requests_seen[0] <= PREFETCH_FRAMES + 2
    assert reds(predictor) == list(range(PREFETCH_FRAMES + 10))


def test_a_model_failure_stops_the_fetching(server, tmp_path, env):
    server.chunk_size = 1
    server.add_task(7, labels=["cat"], frames=colored_frames(PREFETCH_FRAMES + 20))

    class Failing(FakePredictor):
        def predict(self, image):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run(server, tmp_path, Failing(["cat"], []))

    fetched = len(data_requests(server))
    time.sleep(0.3)
    assert len(data_requests(server)) == fetched <= PREFETCH_FRAMES + 2
    assert not [t for t in threading.enumerate() if t.name == "preannotate-frames"]
    assert uploaded(server) == []


def test_video_frames_take_the_size_of_the_single_meta_entry(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(2), video="clip.mp4")
    predictor = FakePredictor(["cat"], [[], [det("cat", 0.6, 1, 2, 3, 4)]])

    metadata, report = run(server, tmp_path, predictor)

    # CVAT's chunks of a video task are video files: frames come one per request
    assert data_requests(server) == [("frame", 0), ("frame", 1)]
    assert "fetched one per request (its original chunks are video, not image sets)" in report
    assert uploaded(server)[0]["frame"] == 1
    images = predictions_json(tmp_path)["images"]
    assert [(i["file_name"], i["width"]) for i in images] == [
        ("frame_000000", W),
        ("frame_000001", W),
    ]


def test_exif_turned_images_are_predicted_as_cvat_shows_them(server, tmp_path, env):
    # stored 30x40, orientation 6 (turned 90°): CVAT shows and sizes it 40x30
    server.add_task(
        7,
        labels=["cat"],
        frames=[("a.jpg", png(H, W, exif_orientation=6))],
    )
    server.frames[7][0].width, server.frames[7][0].height = W, H
    predictor = FakePredictor(["cat"], [[det("cat", 0.6, 1, 2, 3, 4)]])

    metadata, report = run(server, tmp_path, predictor)

    assert predictor.images[0].shape == (H, W, 3)
    assert metadata["uploaded_shapes"] == 1
    assert "differs" not in report


# --- masks ---------------------------------------------------------------------------------


def l_shape():
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 10:14] = 1
    mask[16:20, 10:30] = 1
    return mask


def two_parts():
    mask = np.zeros((H, W), np.uint8)
    mask[2:6, 2:8] = 1  # 24 px
    mask[10:20, 20:30] = 1  # 100 px: first
    mask[25, 35] = 1  # a 1-pixel speck: dropped
    return mask


def test_masks_become_exact_polygons_parts_grouped_past_the_task_groups(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(1))
    cat = server.label_id(7, "cat")
    server.add_shapes(
        7, {"type": "rectangle", "frame": 0, "label_id": cat, "points": [1, 1, 2, 2], "group": 4}
    )
    predictor = FakePredictor(
        ["cat"],
        [[det("cat", 0.9, 10, 5, 30, 20, l_shape()), det("cat", 0.8, 2, 2, 30, 20, two_parts())]],
        has_masks=True,
    )

    run(server, tmp_path, predictor)

    l_polygon = [10.0, 5.0, 10.0, 20.0, 30.0, 20.0, 30.0, 16.0, 14.0, 16.0, 14.0, 5.0]
    big = [20.0, 10.0, 20.0, 20.0, 30.0, 20.0, 30.0, 10.0]
    small = [2.0, 2.0, 2.0, 6.0, 8.0, 6.0, 8.0, 2.0]
    assert uploaded(server)[1:] == [
        shape("polygon", 0, cat, l_polygon, 0.9),
        shape("polygon", 0, cat, big, 0.8, group=5),
        shape("polygon", 0, cat, small, 0.8, group=5),
    ]
    first, second = predictions_json(tmp_path)["annotations"]
    assert first["segmentation"] == [l_polygon] and first["area"] == l_shape().sum()
    assert second["segmentation"] == [big, small]
    rasterized = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([l_polygon], H, W)))
    assert (rasterized == l_shape()).all()


def test_cvat_masks_decode_back_through_the_sdk_and_our_cvat_xml_reader(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(1))
    cat = server.label_id(7, "cat")
    mask = two_parts()
    predictor = FakePredictor(["cat"], [[det("cat", 0.9, 2, 2, 36, 26, mask)]], has_masks=True)

    run(server, tmp_path, predictor, mask_format="mask")

    (stored,) = uploaded(server)
    assert stored == shape("mask", 0, cat, stored["points"], 0.9)
    assert stored["points"][-4:] == [2.0, 2.0, 35.0, 25.0]  # left, top, right, bottom inclusive
    assert (decode_mask(stored["points"], image_width=W, image_height=H) == mask).all()
    assert (read_back_through_cvat_xml(tmp_path, stored["points"]) == mask).all()
    (annotation,) = predictions_json(tmp_path)["annotations"]
    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    assert (mask_utils.decode(rle) == mask).all()


def read_back_through_cvat_xml(tmp_path, points) -> np.ndarray:
    """The mask as CVAT's "CVAT for images 1.1" dumper writes it, read by our reader."""
    *runs, left, top, right, bottom = (int(v) for v in points)
    root = tmp_path / "cvat_export"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (W, H)).save(root / "images" / "a.png")
    xml = ET.Element("annotations")
    ET.SubElement(xml, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(xml, "meta"), "task")
    ET.SubElement(task, "mode").text = "annotation"
    ET.SubElement(ET.SubElement(ET.SubElement(task, "labels"), "label"), "name").text = "cat"
    image = ET.SubElement(xml, "image", id="0", name="a.png", width=str(W), height=str(H))
    attributes = {
        "label": "cat",
        "rle": ", ".join(map(str, runs)),
        "left": str(left),
        "top": str(top),
        "width": str(right - left + 1),
        "height": str(bottom - top + 1),
    }
    ET.SubElement(image, "mask", attributes)
    ET.ElementTree(xml).write(root / "annotations.xml")
    builder = DatasetBuilder()
    cvat_xml.read(root, builder, None)
    (annotation,) = builder.build(tmp_path / "read_back").annotations
    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    return mask_utils.decode(rle)


def test_label_types_pick_the_shape_and_boxes_fill_polygon_and_mask_labels(server, tmp_path, env):
    server.add_task(
        7, labels=[("cat", "rectangle"), ("dog", "polygon"), ("fox", "mask")], frames=frames(1)
    )
    ids = [server.label_id(7, n) for n in ("cat", "dog", "fox")]
    boxes = [det(n, 0.9, 1, 2, 4, 6) for n in ("cat", "dog", "fox")]

    run(server, tmp_path, FakePredictor(["cat", "dog", "fox"], [boxes]))

    assert uploaded(server) == [
        shape("rectangle", 0, ids[0], [1.0, 2.0, 4.0, 6.0], 0.9),
        shape("polygon", 0, ids[1], [1.0, 2.0, 4.0, 2.0, 4.0, 6.0, 1.0, 6.0], 0.9),
        shape("mask", 0, ids[2], [0.0, 12.0, 1.0, 2.0, 3.0, 5.0], 0.9),
    ]


def test_empty_masks_are_skipped_and_counted(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(1))
    predictor = FakePredictor(["cat"], [[det("cat", 0.9, 1, 2, 4, 6, None)]], has_masks=True)

    metadata, report = run(server, tmp_path, predictor)

    assert uploaded(server) == []
    assert "| empty mask | 1 |" in report


# --- labels --------------------------------------------------------------------------------


def test_model_labels_the_task_lacks_fail_listing_them(server, tmp_path, env):
    server.add_task(7, labels=["Cat", ("pose", "skeleton")], frames=frames(1))
    predictor = FakePredictor(["cat", "pose", "Cat"], [])

    with pytest.raises(ValueError) as error:
        run(server, tmp_path, predictor)

    message = str(error.value)
    assert "'cat': not in the task (the task has 'Cat'; names are case-sensitive)" in message
    assert "'pose': the task's label is a skeleton label" in message
    assert "The task's labels: 'Cat' (any), 'pose' (skeleton)" in message
    assert 'unknown_labels="skip"' in message
    assert predictor.images == [] and uploaded(server) == []


def test_skip_leaves_unknown_labels_out_and_counts_them(server, tmp_path, env):
    server.add_task(7, labels=["cat"], frames=frames(1))
    predictor = FakePredictor(
        ["cat", "dog"], [[det("dog", 0.9, 1, 2, 4, 6), det("cat", 0.8, 1, 2, 4, 6)]]
    )

    metadata, report = run(server, tmp_path, predictor, unknown_labels="skip")

    assert [s["label_id"] for s in uploaded(server)] == [server.label_id(7, "cat")]
    assert "| label 'dog': not in the task | 1 |" in report
    assert "| dog | — | left out: not in the task | | |" in report
    assert metadata["skipped"] == 1


def test_no_usable_label_at_all_fails_even_with_skip(server, tmp_path, env):
    server.add_task(7, labels=["car"], frames=frames(1))

    with pytest.raises(ValueError, match="none of the model's labels can be used in task 7"):
        run(server, tmp_path, FakePredictor(["cat"], []), unknown_labels="skip")


# --- server errors and options ------------------------------------------------------------


def test_transient_upload_errors_are_retried_without_duplicates(server, tmp_path, env, logs):
    server.add_task(7, labels=["cat"], frames=frames(1))
    server.fail("PATCH", "/api/tasks/7/annotations/", 503, 429)
    server.fail("GET", "/api/tasks/7/data/", 502)
    predictor = FakePredictor(["cat"], [[det("cat", 0.9, 1, 2, 4, 6)]])

    run(server, tmp_path, predictor)

    assert len(uploaded(server)) == 1
    assert len(server.calls("PATCH", ANNOTATIONS)) == 3
    assert sum("retry" in line for line in logs.messages) == 3


def test_a_missing_task_is_named(server, tmp_path, env):
    with pytest.raises(CvatServerError, match="task 9 not found on"):
        run(server, tmp_path, FakePredictor(["cat"], []), task_id="9")


def test_credentials_come_from_the_environment_only(server, tmp_path, env):
    env.delenv("CVAT_ACCESS_TOKEN")
    with pytest.raises(CvatServerError, match="no CVAT credentials in the environment"):
        run(server, tmp_path, FakePredictor(["cat"], []))


def test_password_login_works_for_every_call(server, tmp_path, env):
    env.delenv("CVAT_ACCESS_TOKEN")
    env.setenv("CVAT_USERNAME", server.username)
    env.setenv("CVAT_PASSWORD", server.password)
    server.add_task(7, labels=["cat"], frames=frames(1))

    run(
        server,
        tmp_path,
        FakePredictor(["cat"], [[det("cat", 0.9, 1, 2, 4, 6)]]),
        existing_annotations="replace",
    )

    assert len(uploaded(server)) == 1


@pytest.mark.parametrize("task_id", ["", " ", "abc", "0", "-3", "1.5", "7,8"])
def test_task_id_must_be_a_positive_integer(tmp_path, env, task_id):
    with pytest.raises(ValueError, match="task_id must be a positive integer"):
        run_preannotate(
            "m", str(tmp_path), report_of(tmp_path), "http://cvat", task_id, predictor=object()
        )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mask_format": "rle"}, "mask_format must be one of 'polygon', 'mask'"),
        ({"unknown_labels": "ignore"}, "unknown_labels must be one of"),
        ({"existing_annotations": "clear"}, "existing_annotations must be one of"),
        ({"score_threshold": 1.5}, r"score_threshold must be in \[0, 1\], or -1"),
        ({"score_threshold": -0.5}, r"score_threshold must be in \[0, 1\], or -1"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_options_are_checked_first(tmp_path, env, options, message):
    with pytest.raises(ValueError, match=message):
        run_preannotate(
            "m",
            str(tmp_path),
            report_of(tmp_path),
            "http://cvat",
            "7",
            predictor=object(),
            **options,
        )


def test_a_cvat_url_with_credentials_is_refused_and_its_password_never_shown(
    server, tmp_path, env, logs
):
    server.add_task(7, labels=["cat"], frames=frames(1))
    predictor = FakePredictor(["cat"], [[det("cat", 0.9, 1, 2, 4, 6)]])
    url = server.url.replace("http://", "http://alice:s3cret-pw@")

    with pytest.raises(ValueError) as error:
        run_preannotate("m", str(tmp_path), report_of(tmp_path), url, "7", predictor=predictor)

    message = str(error.value)
    assert "carries credentials" in message and "CVAT_ACCESS_TOKEN" in message
    assert "CVAT_USERNAME and CVAT_PASSWORD" in message
    assert server.url in message  # which URL, without its user info
    shown = "\n".join([message, *logs.messages, logs.text])
    assert "s3cret-pw" not in shown and "alice" not in shown
    assert server.requests == [] and predictor.images == []
