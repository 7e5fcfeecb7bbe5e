"""evaluate() with a fake predictor: metrics, matrix, files and report from known mistakes."""

import copy
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.evaluate_model import evaluate as evaluate_module
from cvat_kfp.components.evaluate_model.coco_eval import STAT_NAMES
from cvat_kfp.components.evaluate_model.evaluate import (
    EvaluationError,
    evaluate,
    run_evaluate_model,
)
from cvat_kfp.components.evaluate_model.tfrecords import Split, SplitImage
from tests.components.evaluate_model.fakes import FakePredictor

CLASSES = ["circle", "square", "triangle"]
BOX_METRICS = set(STAT_NAMES)
MASK_METRICS = {f"mask_{name}" for name in STAT_NAMES}
F1_METRICS = {"mean_F1_at_0.5"}  # and mean_F1_calibrated with a val split


def quiet(message):
    pass


def gt_counts(split):
    counts = [0] * len(CLASSES)
    for ann in split.ground_truth["annotations"]:
        counts[ann["category_id"] - 1] += 1
    return counts


def test_perfect_predictions(shapes_split, tmp_path):
    predictor = FakePredictor(shapes_split, has_masks=True)

    ap_table = tmp_path / "ap_table.md"
    result = evaluate(
        predictor, shapes_split, tmp_path, ap_table_path=ap_table, max_report_images=5, log=quiet
    )

    assert set(result.metrics) == BOX_METRICS | MASK_METRICS | F1_METRICS
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert result.metrics["mask_AP"] == pytest.approx(1.0)
    assert result.metrics["APl"] == -1.0  # no large object in 256x192 shapes: COCO's -1 kept
    assert result.class_names == [*CLASSES, "background"]
    counts = gt_counts(shapes_split)
    assert result.confusion_matrix == [
        [counts[0], 0, 0, 0],
        [0, counts[1], 0, 0],
        [0, 0, counts[2], 0],
        [0, 0, 0, 0],
    ]
    assert predictor.calls == 8
    for name in ("detections.json", "ground_truth.json", "per_class.json", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert len(detections) == result.num_detections == shapes_split.num_objects
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert json.loads((tmp_path / "ground_truth.json").read_text()) == shapes_split.ground_truth
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"] == result.metrics
    assert saved["confusion_matrix"]["matrix"] == result.confusion_matrix
    per_class = json.loads((tmp_path / "per_class.json").read_text())
    assert [c["name"] for c in per_class["classes"]] == CLASSES
    assert len(per_class["classes"][0]["pr_curves"]["segm"]["iou_0.50"]) == 101
    assert "| circle | 1 |" in ap_table.read_text()
    assert "mask AP" in ap_table.read_text()


def test_known_mistakes_land_in_the_right_cells(shapes_split, tmp_path):
    anns = shapes_split.ground_truth["annotations"]
    first = {image_id: next(a for a in anns if a["image_id"] == image_id) for image_id in (1, 2, 3)}
    wrong = 1 if first[2]["category_id"] != 1 else 2
    predictor = FakePredictor(
        shapes_split,
        drop={1: {0}},  # a miss
        relabel={2: {0: wrong}},  # a confusion
        extra={
            3: [
                ((0.0, 0.0, 0.1, 0.1), 3, 0.8),  # a false detection
                ((0.0, 0.5, 0.1, 0.6), 2, 0.2),
            ],  # below the score threshold: not in the matrix
        },  # fmt: skip
        jitter=0.5,
    )

    result = evaluate(
        predictor, shapes_split, tmp_path / "evaluation", report_path=tmp_path / "report.html",
        max_report_images=3, log=quiet,
    )  # fmt: skip

    matrix = result.confusion_matrix
    counts = gt_counts(shapes_split)
    assert [sum(row) for row in matrix[:3]] == counts  # every object once: found or missed
    assert matrix[3] == [0, 0, 1, 0]  # one false triangle
    assert matrix[first[1]["category_id"] - 1][3] == 1  # the miss
    assert matrix[first[2]["category_id"] - 1][wrong - 1] == 1  # the confusion
    assert sum(matrix[i][i] for i in range(3)) == shapes_split.num_objects - 2
    assert result.num_detections == shapes_split.num_objects - 1 + 2
    assert 0.3 < result.metrics["AP"] < 1.0
    assert "mask_AP" not in result.metrics  # a box model
    # the report draws the three worst images: 1 (miss), 2 (confusion), 3 (false detection)
    html = (tmp_path / "report.html").read_text()
    captions = re.findall(r"<figcaption>([^<]*\(id (\d+)\)[^<]*)</figcaption>", html)
    assert sorted(int(image_id) for _, image_id in captions) == [1, 2, 3]
    assert "1 missed" in html and "1 false" in html and "1 wrong class" in html


def test_the_report_is_self_contained_with_a_curve_per_class(shapes_split, tmp_path):
    result = evaluate(
        FakePredictor(shapes_split, has_masks=True, jitter=1.0),
        shapes_split,
        tmp_path / "evaluation",
        report_path=tmp_path / "report.html",
        max_report_images=24,
        log=quiet,
    )
    html = (tmp_path / "report.html").read_text()
    assert result.metadata["evaluation"]["num_images"] == 8

    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", html)  # nothing fetched
    assert "http" not in html and "<script" not in html
    svgs = re.findall(r"<svg class='pr-curve'.*?</svg>", html, flags=re.S)
    assert [re.search(r"data-class='([^']*)'", s).group(1) for s in svgs] == CLASSES
    for svg in svgs:
        tree = ET.fromstring(svg)
        assert len(tree.findall("polyline")) == 4  # boxes and masks, IoU .50 and .50:.95
    assert html.count("src='data:image/jpeg;base64,") == 8  # all 8 test images, at most 24
    assert "score &ge; 0.5" in html and "IoU is &ge; 0.5" in html
    assert len(html) < 1_500_000


def test_no_detections_at_all(shapes_split, tmp_path):
    result = evaluate(FakePredictor(shapes_split, empty=True), shapes_split, tmp_path, log=quiet)

    assert result.metrics["AP"] == 0.0 and result.metrics["AR100"] == 0.0
    assert result.num_detections == 0
    counts = gt_counts(shapes_split)
    assert [row[3] for row in result.confusion_matrix] == [*counts, 0]  # all missed
    assert json.loads((tmp_path / "detections.json").read_text()) == []


def test_a_class_without_ground_truth_has_no_ap(shapes_split, tmp_path):
    gt = shapes_split.ground_truth
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] != 3]

    ap_table, report = tmp_path / "ap_table.md", tmp_path / "report.html"
    result = evaluate(
        FakePredictor(shapes_split), shapes_split, tmp_path / "evaluation",
        ap_table_path=ap_table, report_path=report, log=quiet,
    )  # fmt: skip

    triangle = result.per_class[2]
    assert triangle["num_objects"] == 0 and triangle["AP"] is None
    assert "| triangle | 3 | 0 | 0 | n/a | n/a | n/a |" in ap_table.read_text()
    assert "triangle: no object of this class in the test split" in report.read_text()
    assert result.metrics["AP"] == pytest.approx(1.0)  # the mean over classes with objects
    assert result.confusion_matrix[2] == [0, 0, 0, 0]


def test_label_maps_must_match(shapes_split, tmp_path):
    other = LabelMap(("circle", "box", "triangle", "star"))
    predictor = FakePredictor(shapes_split, label_map=other)

    with pytest.raises(EvaluationError) as error:
        evaluate(predictor, shapes_split, tmp_path, log=quiet)

    message = str(error.value)
    assert "id 2: model 'box', test split 'square'" in message
    assert "id 4: model 'star', test split (no class)" in message
    assert "circle" not in message.split(":", 1)[1].split("Evaluate")[0]  # only the differences
    assert predictor.calls == 0


def test_a_mask_model_on_a_box_only_split_is_evaluated_on_boxes(shapes_split, tmp_path):
    for ann in shapes_split.ground_truth["annotations"]:
        del ann["segmentation"]
    shapes_split.has_masks = False
    logged = []

    result = evaluate(FakePredictor(shapes_split, has_masks=True), shapes_split, tmp_path,
                      log=logged.append)  # fmt: skip

    assert set(result.metrics) == BOX_METRICS | F1_METRICS
    assert any("the test split has no masks" in line for line in logged)
    assert any("evaluation done" in line for line in logged)


def test_a_mask_model_must_give_masks(shapes_split, tmp_path):
    predictor = FakePredictor(shapes_split, has_masks=True, return_masks=False)
    with pytest.raises(EvaluationError, match="gave no mask for each detection"):
        evaluate(predictor, shapes_split, tmp_path, log=quiet)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": -0.5}, r"or -1 for the thresholds calibrated"),
        ({"iou_threshold": 0.0}, "iou_threshold"),
        ({"max_report_images": -1}, "max_report_images"),
    ],
)
def test_bad_arguments(shapes_split, tmp_path, arguments, message):
    with pytest.raises(EvaluationError, match=message):
        evaluate(FakePredictor(shapes_split), shapes_split, tmp_path, log=quiet, **arguments)


def test_run_evaluate_model_loads_the_predictor(shapes_split_dir, shapes_split, tmp_path,
                                                monkeypatch):  # fmt: skip
    loaded = []

    def fake_load_predictor(path, checkpoint="best"):
        loaded.append((path, checkpoint))
        return FakePredictor(shapes_split)

    monkeypatch.setattr(
        "cvat_kfp.components.inference.predictor.load_predictor", fake_load_predictor
    )
    ap_table, report = tmp_path / "ap_table" / "ap_table.md", tmp_path / "report" / "report.html"
    result = run_evaluate_model(
        "model-dir", shapes_split_dir, tmp_path / "out", ap_table, report, checkpoint="latest",
        max_report_images=0,
    )  # fmt: skip

    assert loaded == [("model-dir", "latest")]
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert report.read_text().startswith("<!DOCTYPE html>") and "base64" not in report.read_text()
    assert ap_table.read_text().startswith("# Per-class average precision")
    assert evaluate_module.METRICS_FILE in {p.name for p in (tmp_path / "out").iterdir()}
    assert {p.name for p in (tmp_path / "out").iterdir()}.isdisjoint({"ap_table.md", "report.html"})


def test_a_class_named_background_keeps_the_categories_distinct(shapes_split, tmp_path):
    shapes_split.label_map = LabelMap(("circle", "background", "triangle"))
    shapes_split.ground_truth["categories"] = shapes_split.label_map.to_categories()

    result = evaluate(FakePredictor(shapes_split), shapes_split, tmp_path, log=quiet)

    assert result.class_names == ["circle", "background", "triangle", "(background)"]


def one_class_split(directory, gt_boxes: dict[int, list[float]], size: int = 100) -> Split:
    """A split of size x size images, image id -> its one ground-truth box (pixels, [x, y, w, h]);
    each image a flat grey of its own level, so FakePredictor tells them apart."""
    images, annotations = [], []
    for image_id, box in gt_boxes.items():
        out = io.BytesIO()
        Image.new("RGB", (size, size), (image_id, image_id, image_id)).save(out, "PNG")
        images.append(SplitImage(image_id, f"{image_id}.png", size, size, out.getvalue()))
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 1, "bbox": box,
                            "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    label_map = LabelMap(("thing",))
    ground_truth = {
        "images": [{"id": i.id, "file_name": i.file_name, "width": size, "height": size}
                   for i in images],
        "annotations": annotations,
        "categories": label_map.to_categories(),
    }  # fmt: skip
    return Split(Path(directory), label_map, images, ground_truth, has_masks=False)


def only(split, detections: dict[int, tuple]) -> FakePredictor:
    """A predictor that misses every object and gives image id -> one (normalized box, class,
    score) detection instead."""
    drop = {image.id: {0} for image in split.images}
    extra = {image_id: [found] for image_id, found in detections.items()}
    return FakePredictor(split, drop=drop, extra=extra)


def test_scores_closer_than_detections_json_shows_still_rank(tmp_path):
    """A hit scored 3e-7 above a false detection on another image ranks first: AP 51/101 (the
    precision is 1 up to recall 0.5). Rounded to 5 decimals the two scores tie, and COCOeval
    breaks the tie by image order, which puts the false detection first and halves AP."""
    split = one_class_split(tmp_path, {1: [10, 10, 40, 40], 2: [10, 10, 40, 40]})
    predictor = only(split, {1: ((0.6, 0.6, 0.9, 0.9), 1, 0.5),  # nowhere near the object
                             2: ((0.1, 0.1, 0.5, 0.5), 1, 0.5000003)})  # fmt: skip

    result = evaluate(predictor, split, tmp_path / "out", max_report_images=0, log=quiet)

    assert result.metrics["AP50"] == pytest.approx(51 / 101)
    assert result.metrics["AP"] == pytest.approx(51 / 101)
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [d["score"] for d in saved] == [0.5, 0.5]  # the file keeps 5 decimals


def test_an_iou_just_under_the_threshold_is_not_rounded_over_it(tmp_path):
    """A detection covering 0.499996 of its object (IoU 0.499996) misses at IoU 0.5; its width
    49.9996 rounded to 1/1000 pixel would be 50.0, IoU 0.5, a hit."""
    split = one_class_split(tmp_path, {1: [0, 0, 100, 100]})
    predictor = only(split, {1: ((0.0, 0.0, 1.0, 0.499996), 1, 0.9)})

    result = evaluate(predictor, split, tmp_path / "out", max_report_images=0, log=quiet)

    assert result.metrics["AP50"] == 0.0
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert saved[0]["bbox"] == [0.0, 0.0, 50.0, 100.0]


def test_ground_truth_json_is_the_split_as_read(shapes_split, tmp_path):
    """COCOeval marks the ground truth it evaluates (`ignore` keys); the split's stays clean."""
    before = copy.deepcopy(shapes_split.ground_truth)

    evaluate(FakePredictor(shapes_split, has_masks=True), shapes_split, tmp_path, log=quiet)

    assert shapes_split.ground_truth == before
    saved = json.loads((tmp_path / "ground_truth.json").read_text())
    assert saved == before
    assert not any("ignore" in ann for ann in saved["annotations"])


def test_thresholds_are_calibrated_on_val_and_used_on_test(tmp_path):
    """Every object found at score 0.3, a false detection at 0.2 on half the images: on val the
    best F1 (1.0) keeps 0.3 and drops 0.2, so the threshold is 0.25; on test it finds all four
    objects, where the default 0.5 finds none."""
    boxes = {image_id: [10, 10, 40, 40] for image_id in range(1, 9)}
    hit, false = ((0.1, 0.1, 0.5, 0.5), 1, 0.3), ((0.6, 0.6, 0.9, 0.9), 1, 0.2)
    every = one_class_split(tmp_path / "all", boxes)
    predictor = FakePredictor(
        every,
        drop={image_id: {0} for image_id in boxes},
        extra={image_id: [hit, false] if image_id % 2 else [hit] for image_id in boxes},
    )
    val = one_class_split(tmp_path / "val", {i: boxes[i] for i in (1, 2, 3, 4)})
    test = one_class_split(tmp_path / "test", {i: boxes[i] for i in (5, 6, 7, 8)})

    report = tmp_path / "report.html"
    result = evaluate(predictor, test, tmp_path / "out", val=val, report_path=report, log=quiet)

    table = json.loads((tmp_path / "out" / "thresholds.json").read_text())
    assert table["split"] == "val" and table["default_threshold"] == 0.5
    [row] = table["classes"]
    assert row["name"] == "thing" and row["calibrated"] is True
    assert row["threshold"] == pytest.approx(0.25)
    assert (row["precision"], row["recall"], row["f1"], row["val_objects"]) == (1.0, 1.0, 1.0, 4)
    assert result.metrics["mean_F1_calibrated"] == 1.0
    assert result.metrics["mean_F1_at_0.5"] == 0.0
    assert result.confusion_matrix == [[4, 0], [0, 0]]  # the 0.2 false detections dropped
    assert "calibrated on the val split" in report.read_text()
    assert "<td>0.250</td>" in report.read_text()
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["score_thresholds"] == {"thing": pytest.approx(0.25)}
    assert saved["score_thresholds_f1"]["classes"][0]["f1_default"] == 0.0

    given = evaluate(predictor, test, tmp_path / "given", val=val, score_threshold=0.5,
                     report_path=report, log=quiet)  # fmt: skip

    assert given.confusion_matrix == [[0, 4], [0, 0]]  # the one threshold the user gave
    assert "score &ge; 0.5 for every class" in report.read_text()
    table = json.loads((tmp_path / "given" / "thresholds.json").read_text())
    assert table["classes"][0]["threshold"] == pytest.approx(0.25)  # still calibrated for export


def test_without_a_val_split_every_class_keeps_the_default_and_says_so(shapes_split, tmp_path):
    result = evaluate(FakePredictor(shapes_split), shapes_split, tmp_path, log=quiet)

    table = json.loads((tmp_path / "thresholds.json").read_text())
    rows = [(r["name"], r["threshold"], r["calibrated"], r["reason"]) for r in table["classes"]]
    assert rows == [(name, 0.5, False, "default: no validation split given") for name in CLASSES]
    assert "mean_F1_calibrated" not in result.metrics
    assert result.metrics["mean_F1_at_0.5"] == 1.0


def test_a_val_split_of_other_classes_is_refused(shapes_split, tmp_path):
    val = one_class_split(tmp_path / "val", {1: [10, 10, 40, 40]})
    with pytest.raises(EvaluationError, match="label map"):
        evaluate(FakePredictor(shapes_split), shapes_split, tmp_path / "out", val=val, log=quiet)
