"""COCOeval wrapper: the published numbers exactly, and the edge cases COCOeval leaves to us."""

import copy
import json

import pytest

from cvat_kfp.components.evaluate_model.coco_eval import STAT_NAMES, run_cocoeval

REFERENCE = "coco_eval_reference"
GT_FILE = "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json"
RESULTS = "cocoapi/results/instances_val2014_fake{}100_results.json"
# ../shared/test_data/coco_eval_reference/README.md (faster_coco_eval's full-precision values)
EXPECTED = {
    "bbox": [
        0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
        0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
        0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982,
    ],
    "segm": [
        0.3195452758576433, 0.5622883972521636, 0.29892653412086784, 0.3873740315997838,
        0.31018272403369485, 0.3269339071005138, 0.2682297225711534, 0.41544868114906375,
        0.4168394992198818, 0.4694498622754236, 0.37675922666197265, 0.3814715099715099,
    ],
}  # fmt: skip


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_reproduces_the_published_cocoeval_numbers(shared_test_data, iou_type):
    root = shared_test_data / REFERENCE
    ground_truth = json.loads((root / GT_FILE).read_text())
    detections = json.loads((root / RESULTS.format(iou_type)).read_text())
    image_ids = sorted(image["id"] for image in ground_truth["images"])[:100]
    before = copy.deepcopy(detections)

    result = run_cocoeval(ground_truth, detections, iou_type, image_ids)

    # exact up to summation order: segm APs differs from the reference in the last bit
    assert list(result.stats.values()) == pytest.approx(EXPECTED[iou_type], rel=0, abs=1e-12)
    assert list(result.stats) == list(STAT_NAMES)
    assert detections == before  # loadRes writes into what it gets: we give it copies
    prefix = "mask_" if iou_type == "segm" else ""
    assert result.metrics()[f"{prefix}AP"] == result.stats["AP"]
    assert len(result.classes) == 80
    assert "Average Precision" in result.summary


def test_per_class_ap_averages_to_the_overall_ap(shared_test_data):
    root = shared_test_data / REFERENCE
    ground_truth = json.loads((root / GT_FILE).read_text())
    detections = json.loads((root / RESULTS.format("bbox")).read_text())

    result = run_cocoeval(ground_truth, detections, "bbox")

    with_gt = [c for c in result.classes if c.ap is not None]
    assert all(c.num_gt > 0 for c in with_gt)
    assert all(c.num_gt == 0 and c.precision_iou50 is None for c in result.classes
               if c.ap is None)  # fmt: skip
    # COCO's AP is the mean over classes with ground truth of each class's AP
    assert sum(c.ap for c in with_gt) / len(with_gt) == pytest.approx(result.stats["AP"], abs=1e-12)
    assert sum(c.ap50 for c in with_gt) / len(with_gt) == pytest.approx(result.stats["AP50"])
    person = next(c for c in result.classes if c.name == "person")
    assert len(person.precision_iou50) == len(result.recall_thresholds) == 101
    assert person.num_detections == sum(1 for d in detections if d["category_id"] == 1)


def _tiny_gt():
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
             "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 50, 40, 40], "area": 1600,
             "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    }  # fmt: skip


def test_no_detections_give_zero_ap_and_keep_minus_one_for_absent_sizes():
    result = run_cocoeval(_tiny_gt(), [], "bbox")

    assert result.stats["AP"] == 0.0 and result.stats["AR100"] == 0.0
    assert result.stats["APm"] == 0.0
    assert result.stats["APs"] == -1.0 and result.stats["APl"] == -1.0  # no small/large objects
    a, b, c = result.classes
    assert (a.ap, b.ap, a.num_detections) == (0.0, 0.0, 0)
    assert c.ap is None and c.num_gt == 0  # a class without ground truth: no AP, not 0


def test_perfect_detections_and_a_class_without_ground_truth():
    gt = _tiny_gt()
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "score": 0.9} for a in gt["annotations"]
    ] + [{"image_id": 1, "category_id": 3, "bbox": [60, 60, 10, 10], "score": 0.5}]  # fmt: skip

    result = run_cocoeval(gt, detections, "bbox")

    assert result.stats["AP"] == pytest.approx(1.0) and result.stats["AR100"] == 1.0
    assert [c.ap for c in result.classes] == [pytest.approx(1.0), pytest.approx(1.0), None]
    assert result.classes[2].num_detections == 1
    assert result.classes[0].precision_iou50 == pytest.approx([1.0] * 101)  # COCO adds an eps


def test_mask_ap_uses_the_mask_area_not_the_box_area():
    """A 40x40 detection box around a 20x20 mask: small by its mask (< 32²), medium by its
    box; COCO's loadRes would take the box area if the result kept its bbox."""
    import numpy as np
    from pycocotools import mask as mask_utils

    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                         "area": 400.0, "iscrowd": 0, "segmentation": rle}],
        "categories": [{"id": 1, "name": "a"}],
    }  # fmt: skip
    detection = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "score": 0.9,
                 "segmentation": rle}  # fmt: skip

    result = run_cocoeval(gt, [detection], "segm")

    assert result.stats["APs"] == pytest.approx(1.0) and result.stats["APm"] == -1.0
    assert "segmentation" in detection and "bbox" in detection  # untouched


def test_segm_wants_a_mask_per_detection():
    with pytest.raises(ValueError, match="no segmentation"):
        run_cocoeval(_tiny_gt(), [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                                   "score": 1.0}], "segm")  # fmt: skip


@pytest.mark.parametrize("as_coco", [False, True], ids=["dict", "COCO"])
def test_the_ground_truth_is_left_as_it_was_given(as_coco):
    """COCOeval adds `ignore` to every annotation and, for segm, swaps polygons for RLE with
    bytes counts, which JSON cannot hold."""
    from pycocotools import mask as mask_utils

    from cvat_kfp.components.evaluate_model.coco_eval import coco_from_dict

    gt = _tiny_gt()
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    before = copy.deepcopy(gt)
    given = coco_from_dict(gt) if as_coco else gt
    rle = mask_utils.merge(
        mask_utils.frPyObjects(before["annotations"][0]["segmentation"], 100, 100)
    )
    rle["counts"] = rle["counts"].decode()
    detections = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9,
                   "segmentation": rle}]  # fmt: skip

    for iou_type in ("bbox", "segm", "segm"):  # a second use sees what the first left
        result = run_cocoeval(given, detections, iou_type)
        assert result.classes[0].ap == pytest.approx(1.0)

    assert gt == before
    json.dumps(gt)
