"""The model as a CVAT auto-annotation function, driven by cvat-sdk's own driver
(`cvat_sdk.auto_annotation.annotate_task`) against the CVAT stand-in, with a predictor whose
detections are known: the shapes that reach the task are checked exactly. The real models are in
test_cvat_function_real_model.py."""

import io
import json
import zipfile

import numpy as np
import pytest
from cvat_sdk import Client, Config
from cvat_sdk.auto_annotation import BadFunctionError, annotate_task
from cvat_sdk.core.client import AccessTokenCredentials
from cvat_sdk.masks import decode_mask
from PIL import Image

from cvat_kfp.components.preannotate import shapes as geometry
from cvat_kfp.components.preannotate.cvat_function import (
    ModelFunction,
    ModelSourceError,
    create,
    fetch_model,
)
from tests.components.export_annotations.cvat_mock_server import CvatMockServer
from tests.components.preannotate.test_preannotate import FakePredictor, H, W, det, png

NAMES = ("cat", "dog")


@pytest.fixture()
def cvat(tmp_path):
    """(server, connect): the stand-in, and a cvat-sdk Client logged in to it (its own cache)."""
    with CvatMockServer(chunk_size=2) as server:

        def connect():
            client = Client(server.url, config=Config(cache_dir=tmp_path / "sdk-cache"))
            client.login(AccessTokenCredentials(server.token))
            return client

        yield server, connect


def annotate(cvat, predictor, frames, labels=NAMES, **options):
    """Run cvat-sdk's driver on task 7 (these frames and labels); the shapes it stored."""
    server, connect = cvat
    server.add_task(7, labels=list(labels), frames=frames)
    with connect() as client:
        annotate_task(client, 7, ModelFunction(predictor, **options.pop("function", {})), **options)
    return server.shapes(7)


def frames(count=3):
    return [(f"img_{i}.png", png(color=(10 * i, 60, 30))) for i in range(count)]


def test_the_spec_declares_the_model_labels_with_their_shape_type():
    boxes = ModelFunction(FakePredictor(NAMES, []))
    masks = ModelFunction(FakePredictor(NAMES, [], has_masks=True))

    assert [(lb.name, lb.id, lb.type) for lb in boxes.spec.labels] == [
        ("cat", 1, "rectangle"),
        ("dog", 2, "rectangle"),
    ]
    assert [(lb.name, lb.id, lb.type) for lb in masks.spec.labels] == [
        ("cat", 1, "mask"),
        ("dog", 2, "mask"),
    ]


def test_the_driver_uploads_the_boxes_in_pixels_on_their_frames(cvat):
    predictor = FakePredictor(
        NAMES,
        [
            [det("cat", 0.9, 2, 3, 20, 15), det("dog", 0.8, 10.5, 0, 40, 30)],
            [],
            [det("dog", 0.7, 0, 5, 12, 25)],
        ],
    )

    shapes = annotate(cvat, predictor, frames())

    server = cvat[0]
    cat, dog = (server.label_id(7, name) for name in NAMES)
    assert [(s["frame"], s["label_id"], s["type"], s["source"]) for s in shapes] == [
        (0, cat, "rectangle", "auto"),
        (0, dog, "rectangle", "auto"),
        (2, dog, "rectangle", "auto"),
    ]
    expected = [[2, 3, 20, 15], [10.5, 0, 40, 30], [0, 5, 12, 25]]
    for stored, box in zip(shapes, expected, strict=True):
        assert stored["points"] == pytest.approx(box, abs=0.01)
    assert [s["score"] for s in shapes] == pytest.approx([0.9, 0.8, 0.7])
    # Frames come in CVAT's chunks (2 frames each here), not one request per frame; one upload.
    data = server.calls("GET", r"/api/tasks/7/data/?")
    assert sorted(r.query["number"] for r in data if r.query["type"] == "chunk") == ["0", "1"]
    assert not [r for r in data if r.query["type"] == "frame"]
    assert len(server.calls("PATCH", r"/api/tasks/7/annotations/?")) == 1
    assert [img.shape for img in predictor.images] == [(H, W, 3)] * 3


def test_cvat_threshold_keeps_exactly_the_scores_at_or_above_it(cvat):
    predictor = FakePredictor(
        NAMES,
        [[det("cat", 0.75, 0, 0, 5, 5), det("dog", 0.5, 0, 0, 6, 6), det("cat", 0.25, 1, 1, 4, 4)]],
    )

    shapes = annotate(
        cvat, predictor, frames(1), conf_threshold=0.5, function={"score_threshold": 0.9}
    )

    assert [s["score"] for s in shapes] == [0.75, 0.5]


def test_without_a_cvat_threshold_the_function_default_applies(cvat):
    predictor = FakePredictor(NAMES, [[det("cat", 0.75, 0, 0, 5, 5), det("dog", 0.5, 0, 0, 6, 6)]])

    shapes = annotate(cvat, predictor, frames(1), function={"score_threshold": 0.6})

    assert [s["score"] for s in shapes] == [0.75]


def test_the_models_calibrated_thresholds_apply_per_label_without_a_cvat_threshold(
    cvat, tmp_path, monkeypatch
):
    """create() with score_threshold not given (-1): each label's threshold from export.json."""
    from cvat_kfp.components.inference import predictor as inference

    model = tmp_path / "exported"
    model.mkdir()
    table = {"classes": [{"name": "cat", "threshold": 0.3}, {"name": "dog", "threshold": 0.7}]}
    (model / "export.json").write_text(json.dumps({"score_thresholds": table}))
    found = [
        det("cat", 0.35, 0, 0, 5, 5),
        det("dog", 0.6, 0, 0, 6, 6),
        det("cat", 0.25, 1, 1, 4, 4),
    ]
    monkeypatch.setattr(inference, "load_predictor", lambda path, checkpoint: FakePredictor(
        NAMES, [list(found), list(found)]))  # fmt: skip
    server, connect = cvat
    server.add_task(7, labels=list(NAMES), frames=frames(1))

    with connect() as client:
        annotate_task(client, 7, create(model=str(model)))
    assert [s["score"] for s in server.shapes(7)] == [pytest.approx(0.35)]  # dog's 0.6 < 0.7

    with connect() as client:  # a threshold given by the user is one for every label
        annotate_task(client, 7, create(model=str(model), score_threshold=0.5), clear_existing=True)
    assert [s["score"] for s in server.shapes(7)] == [pytest.approx(0.6)]


def two_part_mask():
    mask = np.zeros((H, W), np.uint8)
    mask[2:10, 3:12] = 1
    mask[15:25, 20:35] = 1
    return mask


def test_masks_reach_cvat_as_masks_of_the_same_pixels(cvat):
    mask = two_part_mask()
    predictor = FakePredictor(NAMES, [[det("cat", 0.9, 3, 2, 35, 25, mask=mask)]], has_masks=True)

    shapes = annotate(cvat, predictor, frames(1))

    assert [s["type"] for s in shapes] == ["mask"]
    decoded = decode_mask(shapes[0]["points"], image_width=W, image_height=H)
    np.testing.assert_array_equal(decoded, mask.astype(bool))


def test_conv_mask_to_poly_gives_one_polygon_per_part(cvat):
    mask = two_part_mask()
    predictor = FakePredictor(NAMES, [[det("cat", 0.9, 3, 2, 35, 25, mask=mask)]], has_masks=True)

    shapes = annotate(cvat, predictor, frames(1), conv_mask_to_poly=True)

    assert [s["type"] for s in shapes] == ["polygon", "polygon"]
    assert [s["points"] for s in shapes] == geometry.mask_polygons(mask)
    assert {s["label_id"] for s in shapes} == {cvat[0].label_id(7, "cat")}


def test_a_model_label_missing_from_the_task_is_the_driver_error(cvat):
    predictor = FakePredictor(NAMES, [[det("cat", 0.9, 0, 0, 5, 5)]])

    with pytest.raises(BadFunctionError, match="label 'dog' is not in dataset"):
        annotate(cvat, predictor, frames(1), labels=["cat"])

    assert cvat[0].shapes(7) == []
    assert not cvat[0].calls("PATCH")


def test_allow_unmatched_labels_uploads_the_labels_the_task_has(cvat):
    predictor = FakePredictor(NAMES, [[det("cat", 0.9, 0, 0, 5, 5), det("dog", 0.8, 1, 1, 6, 6)]])

    shapes = annotate(cvat, predictor, frames(1), labels=["cat"], allow_unmatched_labels=True)

    assert [s["label_id"] for s in shapes] == [cvat[0].label_id(7, "cat")]


def test_a_task_label_of_another_shape_type_is_the_driver_error(cvat):
    predictor = FakePredictor(NAMES, [])

    with pytest.raises(BadFunctionError, match="'rectangle' in the function, but 'polygon'"):
        annotate(cvat, predictor, frames(1), labels=[("cat", "polygon"), "dog"])


def test_an_exif_turned_jpeg_is_predicted_and_annotated_as_cvat_shows_it(cvat):
    # Stored 40 x 30 with orientation 6 (turn 90° clockwise): CVAT shows it 30 wide, 40 high.
    turned = png(width=40, height=30, exif_orientation=6)
    predictor = FakePredictor(NAMES, [[det("cat", 0.9, 3, 4, 27, 36, width=30, height=40)]])

    shapes = annotate(cvat, predictor, [("turned.jpg", turned)])

    assert predictor.images[0].shape == (40, 30, 3)
    assert shapes[0]["points"] == pytest.approx([3, 4, 27, 36], abs=0.01)


def test_a_grayscale_frame_reaches_the_model_as_rgb(cvat):
    out = io.BytesIO()
    Image.new("L", (W, H), 90).save(out, "PNG")
    predictor = FakePredictor(NAMES, [[]])

    annotate(cvat, predictor, [("gray.png", out.getvalue())])

    assert predictor.images[0].shape == (H, W, 3)
    assert (predictor.images[0] == 90).all()


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "0.5", True])
def test_a_bad_score_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match="score_threshold must be a number in"):
        ModelFunction(FakePredictor(NAMES, []), threshold)


# --- where the model comes from


def fake_export(folder):
    """Files where an export-model output has them (fetching does not read them)."""
    (folder / "saved_model").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    (folder / "label_map.json").write_text('{"1": "cat"}')
    return folder


def zipped(folder, archive):
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, f"exported/{path.relative_to(folder)}")
    return archive


def test_a_local_model_folder_is_used_in_place(tmp_path):
    export = fake_export(tmp_path / "exported")

    assert fetch_model(str(export), tmp_path / "cache") == export
    assert not (tmp_path / "cache").exists()


def test_an_archive_is_extracted_once_into_the_cache(tmp_path):
    archive = zipped(fake_export(tmp_path / "exported"), tmp_path / "model.zip")

    first = fetch_model(str(archive), tmp_path / "cache")
    (first / "marker").write_text("kept")
    second = fetch_model(str(archive), tmp_path / "cache")

    assert (first / "saved_model" / "saved_model.pb").read_bytes() == b"graph"
    assert second == first and (second / "marker").exists()
    assert len([p for p in (tmp_path / "cache").iterdir()]) == 1


def test_an_https_archive_is_downloaded_once(tmp_path, http_files):
    zipped(fake_export(tmp_path / "exported"), http_files.root / "model.zip")
    url = http_files.url("model.zip") + "?X-Goog-Signature=secret"

    first = fetch_model(url, tmp_path / "cache")
    requests = http_files.requests
    second = fetch_model(url, tmp_path / "cache")

    assert second == first and (first / "label_map.json").read_text() == '{"1": "cat"}'
    assert http_files.requests == requests


def test_a_missing_model_is_named_and_the_signature_kept_out(tmp_path, http_files):
    with pytest.raises(ModelSourceError, match="no such file or folder"):
        fetch_model(str(tmp_path / "nowhere"), tmp_path / "cache")
    with pytest.raises(ModelSourceError, match="no model given"):
        fetch_model("  ", tmp_path / "cache")
    with pytest.raises(ModelSourceError, match="model s3://bucket/model") as error:
        fetch_model("s3://bucket/model", tmp_path / "cache")
    with pytest.raises(ModelSourceError, match="not found") as error:
        fetch_model(http_files.url("gone.zip") + "?X-Goog-Signature=secret", tmp_path / "cache")
    assert "secret" not in str(error.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_a_folder_that_is_no_model_is_refused_by_create(tmp_path):
    (tmp_path / "not_a_model").mkdir()

    with pytest.raises(ModelSourceError, match="neither a trained Model .* nor an exported model"):
        create(model=str(tmp_path / "not_a_model"))
    with pytest.raises(ModelSourceError, match="checkpoint must be 'best' or 'latest'"):
        create(model=str(tmp_path / "not_a_model"), checkpoint="newest")
