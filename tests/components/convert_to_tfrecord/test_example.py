"""Per-image feature building: boxes, classes, areas, masks and the report lines, without TF."""

import hashlib
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cvat_kfp.components.convert_to_tfrecord.example import ImageTask, build_image_features

from .conftest import CLASS_NAMES

WIDTH, HEIGHT = 40, 30


@pytest.fixture()
def features_of(tmp_path, image_bytes):
    """features_of(annotations, write_masks=True) -> ImageResult for one 40x30 PNG, image id 7."""
    data = image_bytes(WIDTH, HEIGHT, "PNG")
    path = tmp_path / "frame 1.png"
    path.write_bytes(data)

    def build(annotations, write_masks=True):
        image = {"id": 7, "file_name": "frame 1.png", "width": WIDTH, "height": HEIGHT}
        annotations = [
            {"id": i, "image_id": 7, "category_id": 1, "iscrowd": 0, **a}
            for i, a in enumerate(annotations, start=101)
        ]
        task = ImageTask(image, annotations, str(path), CLASS_NAMES, write_masks)
        return build_image_features(task)

    build.data = data
    return build


def decoded_masks(features) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(png))) for png in features["image/object/mask"]]


def codes(result, action):
    return [e.code for e in result.entries if e.action == action]


def test_image_keys_pass_the_bytes_through_with_numeric_source_id(features_of):
    result = features_of([])
    f = result.features
    assert f["image/encoded"] == [features_of.data]
    assert f["image/format"] == [b"png"]
    assert f["image/height"] == [HEIGHT] and f["image/width"] == [WIDTH]
    assert f["image/filename"] == [b"frame 1.png"]
    assert f["image/source_id"] == [b"7"]
    assert f["image/key/sha256"] == [hashlib.sha256(features_of.data).hexdigest().encode()]
    # a negative example: every object list present and empty, masks included
    assert f["image/object/bbox/xmin"] == [] and f["image/object/mask"] == []
    assert result.num_instances == 0 and result.entries == []


def test_boxes_are_normalized_with_labels_text_crowd_and_area(features_of):
    result = features_of(
        [
            {"bbox": [4, 3, 20, 15], "area": 123.5, "category_id": 2},
            {"bbox": [0, 0, 40, 30], "area": 7.0, "category_id": 3, "iscrowd": 1},
        ],
        write_masks=False,
    )
    f = result.features
    assert f["image/object/bbox/xmin"] == pytest.approx([0.1, 0.0])
    assert f["image/object/bbox/xmax"] == pytest.approx([0.6, 1.0])
    assert f["image/object/bbox/ymin"] == pytest.approx([0.1, 0.0])
    assert f["image/object/bbox/ymax"] == pytest.approx([0.6, 1.0])
    assert f["image/object/class/label"] == [2, 3]
    assert f["image/object/class/text"] == [CLASS_NAMES[1].encode(), CLASS_NAMES[2].encode()]
    assert f["image/object/is_crowd"] == [0, 1]
    assert f["image/object/area"] == [123.5, 7.0]
    assert "image/object/mask" not in f
    assert result.num_instances == 2 and result.entries == []


def test_a_box_reaching_outside_is_clipped_with_its_area_recomputed(features_of):
    result = features_of([{"bbox": [-5, 20, 20, 20], "area": 400.0}], write_masks=False)
    f = result.features
    assert f["image/object/bbox/xmin"] == [0.0]
    assert f["image/object/bbox/xmax"] == pytest.approx([15 / WIDTH])
    assert f["image/object/bbox/ymin"] == pytest.approx([20 / HEIGHT])
    assert f["image/object/bbox/ymax"] == [1.0]
    assert f["image/object/area"] == [150.0]
    [line] = result.entries
    assert (line.action, line.code) == ("fixed", "box-clipped")
    assert "101" in line.location and "frame 1.png" in line.location


def test_empty_boxes_are_skipped_with_a_line_each(features_of):
    result = features_of(
        [
            {"bbox": [50, 5, 10, 10], "area": 100.0},  # wholly right of the image
            {"bbox": [5, 5, 0, 10], "area": 0.0},  # no width
            {"bbox": [5, 5, 10, 1e-9], "area": 0.0},  # float dust
            {"bbox": [5, 5, 10, 10], "area": 100.0},
        ],
        write_masks=False,
    )
    assert result.num_instances == 1
    assert result.features["image/object/bbox/xmin"] == pytest.approx([5 / WIDTH])
    assert codes(result, "skipped") == ["box-empty"] * 3
    assert [e.location.split()[1] for e in result.entries] == ["101", "102", "103"]


def test_polygon_mask_is_a_full_image_0_1_png(features_of):
    polygon = [2, 2, 12, 2, 12, 8, 2, 8]
    result = features_of([{"bbox": [2, 2, 10, 6], "area": 60.0, "segmentation": [polygon]}])
    [mask] = decoded_masks(result.features)
    expected = mask_utils.decode(mask_utils.frPyObjects([polygon], HEIGHT, WIDTH)[0])
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, expected)
    assert result.features["image/object/area"] == [60.0]
    assert result.entries == []


def test_multi_polygon_instance_is_merged_into_one_mask(features_of):
    left, right = [1, 1, 6, 1, 6, 6, 1, 6], [20, 10, 30, 10, 30, 20, 20, 20]
    result = features_of([{"bbox": [1, 1, 29, 19], "area": 125.0, "segmentation": [left, right]}])
    [mask] = decoded_masks(result.features)
    assert result.num_instances == 1
    assert mask[3, 3] == 1 and mask[15, 25] == 1 and mask[15, 10] == 0
    merged = mask_utils.merge(mask_utils.frPyObjects([left, right], HEIGHT, WIDTH))
    assert mask.sum() == mask_utils.area(merged)


def _blob() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[5:12, 8:30] = 1
    mask[20:25, 2:4] = 1
    return mask


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    return counts + [run]


@pytest.mark.parametrize("counts_form", ["compressed string", "uncompressed list"])
def test_rle_masks_in_both_count_forms(features_of, counts_form):
    blob = _blob()
    if counts_form == "compressed string":
        counts = mask_utils.encode(np.asfortranarray(blob))["counts"].decode("ascii")
    else:
        counts = _uncompressed_counts(blob)
    rle = {"size": [HEIGHT, WIDTH], "counts": counts}
    result = features_of([{"bbox": [2, 5, 28, 20], "area": 164.0, "segmentation": rle}])
    [mask] = decoded_masks(result.features)
    np.testing.assert_array_equal(mask, blob)


def test_crowd_rle_instance_keeps_its_mask_and_flag(features_of):
    rle = {"size": [HEIGHT, WIDTH], "counts": _uncompressed_counts(_blob())}
    result = features_of([{"bbox": [2, 5, 28, 20], "iscrowd": 1, "area": 1.0, "segmentation": rle}])
    assert result.features["image/object/is_crowd"] == [1]
    np.testing.assert_array_equal(decoded_masks(result.features)[0], _blob())


@pytest.mark.parametrize(
    "counts, problem",
    [
        ([5, 10], "cover the 1200 pixels"),  # uncompressed, too short
        ("4a", "ends inside a count"),  # compressed, cut short
        ("ab cd", "outside"),
    ],
)
def test_an_rle_that_is_no_mask_of_the_image_is_refused(features_of, counts, problem):
    rle = {"size": [HEIGHT, WIDTH], "counts": counts}
    result = features_of([{"bbox": [0, 0, 1, 5], "area": 5.0, "segmentation": rle}])
    assert result.refused and codes(result, "refused") == ["rle-invalid"]
    assert problem in result.entries[0].message and "101" in result.entries[0].location


def test_annotation_without_segmentation_gets_its_box_as_mask(features_of):
    result = features_of([{"bbox": [10, 5, 8, 4], "area": 32.0}])
    [mask] = decoded_masks(result.features)
    assert mask.sum() == 32 and mask[5:9, 10:18].all()
    assert codes(result, "fixed") == ["mask-from-box"]


def test_instance_whose_mask_is_empty_is_skipped(features_of):
    outside = [50, 50, 60, 50, 60, 60]
    result = features_of([{"bbox": [1, 1, 5, 5], "area": 25.0, "segmentation": [outside]}])
    assert result.num_instances == 0 and result.features["image/object/mask"] == []
    assert codes(result, "skipped") == ["mask-empty"]


def test_area_is_computed_when_missing_and_recomputed_when_the_polygon_is_clipped(features_of):
    polygon = [2, 2, 12, 2, 12, 8, 2, 8]
    big = [-10, -10, 10, -10, 10, 10, -10, 10]
    result = features_of(
        [
            {"bbox": [2, 2, 10, 6], "segmentation": [polygon]},
            {"bbox": [3, 3, 4, 5]},
            {"bbox": [0, 0, 10, 10], "area": 400.0, "segmentation": [big]},
        ],
        write_masks=False,
    )
    polygon_area = mask_utils.area(mask_utils.frPyObjects([polygon], HEIGHT, WIDTH))[0]
    clipped_area = mask_utils.area(mask_utils.frPyObjects([big], HEIGHT, WIDTH))[0]
    assert result.features["image/object/area"] == [polygon_area, 20.0, clipped_area]
    assert clipped_area == 100
    assert codes(result, "fixed") == ["area-computed", "area-computed", "polygon-clipped"]


def test_refused_image_gives_no_features(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    image = {"id": 1, "file_name": "bad.jpg", "width": 4, "height": 4}
    result = build_image_features(ImageTask(image, [], str(tmp_path / "bad.jpg"), ("a",), True))
    assert result.features is None and result.refused
    assert codes(result, "refused") == ["image-unreadable"]


def test_worker_modules_do_not_load_tensorflow():
    code = (
        "import sys, cvat_kfp.components.convert_to_tfrecord.example; "
        "sys.exit('tensorflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
