"""evaluate-model: COCO metrics, per-class AP, confusion matrix and report on a test split.

`run_evaluate_model` loads the model (a trained Model or an exported model) through
`load_predictor`; `evaluate` does the work with any Predictor, so tests can give it fakes.

Outputs (the `evaluation_dir`, the component's `evaluation` artifact):
- detections.json: every detection in COCO results form (pixel [x, y, w, h] boxes; compressed
  RLE masks with str counts for mask models), all scores (COCO AP ranks them all); boxes to
  1/1000 pixel and scores to 5 decimals there, the metrics computed on the unrounded values;
- ground_truth.json: the test split in COCO instances form (pixel boxes, RLE masks);
- per_class.json: per-class counts, AP/AP50/AP75 (and mask_*), and the precision-recall curves;
- metrics.json: the metrics, the confusion matrix, the thresholds and the model's description;
- thresholds.json: per class, the score threshold of highest F1 on the val split (thresholds.py),
  or the default and why; every class at the default when no val split is given.

Score thresholds: COCO AP counts every detection. The confusion matrix, the drawn images and the
F1 figures count those at or above a class's threshold: by default (score_threshold -1) the ones
calibrated on the val split, else the one score_threshold given for every class. The metrics
also give the test split's mean F1 at the calibrated thresholds and at the single default 0.5.

Metrics keep COCO's -1 for "no ground-truth object of that size" (see coco_eval.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ..common.dataset import mask_to_rle
from ..common.label_map import LabelMap
from ..common.report import markdown_cell, write_output
from .coco_eval import STAT_NAMES, CocoEvalResult, run_cocoeval
from .confusion import BACKGROUND, ImageMatches, confusion_matrix, match_image
from .report_html import ReportImage, render_report
from .tfrecords import Split, decode_image, load_split
from .thresholds import (
    CALIBRATION_IOU,
    DEFAULT_SCORE_THRESHOLD,
    THRESHOLDS_FILE,
    ImageObjects,
    calibrate,
    class_outcomes,
    mean_f1,
    thresholds_json,
    write_thresholds,
)

Log = Callable[[str], None]
logger = logging.getLogger(__name__)

DETECTIONS_FILE = "detections.json"
GROUND_TRUTH_FILE = "ground_truth.json"
PER_CLASS_FILE = "per_class.json"
METRICS_FILE = "metrics.json"
JSON_BOX_DECIMALS = 3  # detections.json: pixels to 1/1000
JSON_SCORE_DECIMALS = 5
CALIBRATED = -1.0  # score_threshold: each class's threshold calibrated on the val split
NO_VAL_SPLIT = "default: no validation split given"
F1_DEFAULT_METRIC = "mean_F1_at_0.5"  # test mean F1 at DEFAULT_SCORE_THRESHOLD for every class
F1_CALIBRATED_METRIC = "mean_F1_calibrated"  # ... at the thresholds calibrated on val


class EvaluationError(ValueError):
    """The model cannot be evaluated on this split: label maps differ, bad arguments, bad output."""


@dataclass
class ImagePredictions:
    """One test image's detections, in pixels (COCO [x, y, w, h])."""

    image_id: int
    boxes: np.ndarray  # float64 [N, 4]
    classes: np.ndarray  # int [N]
    scores: np.ndarray  # float [N]
    masks: list[dict] | None  # compressed RLEs, or None for a box model


@dataclass(frozen=True)
class EvaluateModelResult:
    metrics: dict[str, float]  # AP ... ARl, and mask_AP ... mask_ARl for mask models; -1: n/a
    class_names: list[str]  # the confusion matrix's categories: the label map's, then background
    confusion_matrix: list[list[int]]  # rows true, columns predicted
    per_class: list[dict] = field(default_factory=list)
    num_images: int = 0
    num_objects: int = 0
    num_detections: int = 0
    metadata: dict[str, dict] = field(init=False)  # keyed by the face's output: evaluation

    def __post_init__(self):
        counts = {
            "num_images": self.num_images,
            "num_objects": self.num_objects,
            "num_detections": self.num_detections,
        }
        object.__setattr__(self, "metadata", {"evaluation": counts})


def run_evaluate_model(
    model_dir: str | os.PathLike,
    test_tfrecords_dir: str | os.PathLike,
    evaluation_dir: str | os.PathLike,
    ap_table_path: str | os.PathLike,
    report_path: str | os.PathLike,
    val_tfrecords_dir: str | os.PathLike | None = None,
    *,
    checkpoint: str = "best",
    score_threshold: float = CALIBRATED,
    iou_threshold: float = 0.5,
    max_report_images: int = 24,
) -> EvaluateModelResult:
    """Evaluate the model in `model_dir` (trained or exported) on the TFRecords in
    `test_tfrecords_dir`: the files above into `evaluation_dir`, the per-class AP table
    (Markdown) to `ap_table_path`, the HTML report to `report_path`; the score thresholds
    calibrated on the TFRecords in `val_tfrecords_dir` when given."""
    from ..inference.predictor import load_predictor

    _check_arguments(score_threshold, iou_threshold, max_report_images)
    split = load_split(test_tfrecords_dir)  # before the model: a bad split fails in a second
    val = load_split(val_tfrecords_dir) if val_tfrecords_dir is not None else None
    predictor = load_predictor(model_dir, checkpoint=checkpoint)
    return evaluate(
        predictor,
        split,
        evaluation_dir,
        val=val,
        ap_table_path=ap_table_path,
        report_path=report_path,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_report_images=max_report_images,
        log=logger.info,
    )


def evaluate(
    predictor,
    test: Split | str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    val: Split | str | os.PathLike | None = None,
    ap_table_path: str | os.PathLike | None = None,
    report_path: str | os.PathLike | None = None,
    score_threshold: float = CALIBRATED,
    iou_threshold: float = 0.5,
    max_report_images: int = 24,
    log: Log = print,
) -> EvaluateModelResult:
    """Run `predictor` (components/inference Predictor) on every test image and evaluate, with a
    `val` split on every val image too, to calibrate the score thresholds; the AP table and the
    HTML report go to `ap_table_path` and `report_path` when given."""
    _check_arguments(score_threshold, iou_threshold, max_report_images)
    split = test if isinstance(test, Split) else load_split(test)
    check_label_maps(predictor.label_map, split.label_map, split.directory)
    if val is not None:
        val = val if isinstance(val, Split) else load_split(val)
        check_label_maps(predictor.label_map, val.label_map, val.directory)
    label_map = split.label_map
    description = dict(getattr(predictor, "description", {}) or {})
    log(
        f"evaluating {description.get('preset', 'the model')} on {len(split.images)} test "
        f"images ({split.num_objects} objects, {len(label_map)} classes) from {split.directory}"
    )

    predictions = _predict_all(predictor, split, log)
    detections = coco_detections(predictions)

    evaluations = [run_cocoeval(split.ground_truth, detections, "bbox")]
    if predictor.has_masks and split.has_masks:
        evaluations.append(run_cocoeval(split.ground_truth, detections, "segm"))
    elif predictor.has_masks:
        log("the test split has no masks: mask metrics are left out, boxes only")
    metrics = {name: value for e in evaluations for name, value in e.metrics().items()}

    calibration = _calibrate(predictor, val, log)
    calibrated = {row["id"]: row["threshold"] for row in calibration["classes"]}
    if score_threshold == CALIBRATED:
        in_use = calibrated
    else:
        in_use = dict.fromkeys(calibrated, score_threshold)
    score_f1 = _test_f1(split, predictions, calibrated, in_use)
    metrics[F1_DEFAULT_METRIC] = score_f1["mean_f1_default"]
    if val is not None:
        metrics[F1_CALIBRATED_METRIC] = score_f1["mean_f1_calibrated"]

    matches, gt_classes, det_classes = _match_all(split, predictions, in_use, iou_threshold)
    matrix = confusion_matrix(matches, gt_classes, det_classes, len(label_map))
    categories = [*label_map.names, _background_name(label_map)]
    per_class = per_class_rows(evaluations)
    ap_table = ap_table_markdown(per_class, evaluations)

    report = render_report(
        title="Model evaluation",
        description=description,
        split_description=f"{split.directory.name}: {len(split.images)} images, "
        f"{split.num_objects} objects",
        evaluations=evaluations,
        per_class=per_class,
        categories=categories,
        matrix=matrix,
        images=_report_images(split, predictions, matches, in_use, max_report_images),
        label_map=label_map,
        thresholds=_report_thresholds(calibration, score_f1, score_threshold),
        iou_threshold=iou_threshold,
        num_detections=len(detections),
    )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_json(output_dir / DETECTIONS_FILE, rounded_for_json(detections))
    _write_json(output_dir / GROUND_TRUTH_FILE, split.ground_truth)
    recall = evaluations[0].recall_thresholds
    _write_json(output_dir / PER_CLASS_FILE, {"recall_thresholds": recall, "classes": per_class})
    _write_json(
        output_dir / METRICS_FILE,
        {
            "metrics": metrics,
            "num_images": len(split.images),
            "num_objects": split.num_objects,
            "num_detections": len(detections),
            "score_threshold": score_threshold,
            "score_thresholds": {label_map.names[k - 1]: t for k, t in in_use.items()},
            "score_thresholds_f1": score_f1,
            "iou_threshold": iou_threshold,
            "confusion_matrix": {"categories": categories, "matrix": matrix},
            "model": description,
            "note": "-1: no ground-truth object of that size (COCO's convention)",
        },
    )
    write_thresholds(output_dir / THRESHOLDS_FILE, calibration)
    for path, text in ((ap_table_path, ap_table), (report_path, report)):
        if path is not None:
            write_output(path, text)
    for evaluation in evaluations:
        log(f"COCO {evaluation.iou_type} evaluation:\n{evaluation.summary.rstrip()}")
    log(summary_line(metrics, len(detections)))
    log(f1_line(score_f1, val is not None))
    return EvaluateModelResult(
        metrics=metrics,
        class_names=categories,
        confusion_matrix=matrix,
        per_class=per_class,
        num_images=len(split.images),
        num_objects=split.num_objects,
        num_detections=len(detections),
    )


def _check_arguments(score_threshold: float, iou_threshold: float, max_report_images: int):
    if score_threshold != CALIBRATED and not 0.0 <= score_threshold <= 1.0:
        raise EvaluationError(
            f"score_threshold must be in [0, 1], or -1 for the thresholds calibrated on the val "
            f"split, got {score_threshold}"
        )
    if not 0.0 < iou_threshold <= 1.0:
        raise EvaluationError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if max_report_images < 0:
        raise EvaluationError(f"max_report_images must be >= 0, got {max_report_images}")


def check_label_maps(model: LabelMap, test: LabelMap, test_dir) -> None:
    """The model's classes must be the test split's: same names with the same ids."""
    if tuple(model.names) == tuple(test.names):
        return
    differences = []
    for class_id in range(1, max(len(model), len(test)) + 1):
        ours = model.names[class_id - 1] if class_id <= len(model) else None
        theirs = test.names[class_id - 1] if class_id <= len(test) else None
        if ours != theirs:
            differences.append(f"id {class_id}: model {_name(ours)}, test split {_name(theirs)}")
    raise EvaluationError(
        f"the model's label map ({len(model)} classes) differs from the test split's at "
        f"{test_dir} ({len(test)} classes): {'; '.join(differences)}. Evaluate on a test split "
        "converted with the classes the model was trained on (same names, same ids)."
    )


def _name(name: str | None) -> str:
    return repr(name) if name is not None else "(no class)"


def _background_name(label_map: LabelMap) -> str:
    name = BACKGROUND
    while name in label_map.names:  # a class of that name: keep the categories distinct
        name = f"({name})"
    return name


def _predict_all(predictor, split: Split, log: Log) -> list[ImagePredictions]:
    num_classes = len(split.label_map)
    started, last_log = time.monotonic(), time.monotonic()
    predictions = []
    for index, image in enumerate(split.images, start=1):
        pixels = decode_image(image)
        found = predictor.predict(pixels)
        where = f"the model's detections on {image.file_name} (id {image.id})"
        boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(found.classes).reshape(-1).astype(np.int64)
        scores = np.asarray(found.scores, dtype=np.float64).reshape(-1)
        if not len(boxes) == len(classes) == len(scores):
            raise EvaluationError(
                f"{where}: {len(boxes)} boxes, {len(classes)} classes, {len(scores)} scores"
            )
        if len(classes) and (classes.min() < 1 or classes.max() > num_classes):
            raise EvaluationError(f"{where}: class ids {sorted(set(classes.tolist()))} "
                                  f"outside the label map's 1..{num_classes}")  # fmt: skip
        h, w = image.height, image.width
        ymin, xmin, ymax, xmax = np.clip(boxes, 0.0, 1.0).T
        pixel_boxes = np.stack([xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h], axis=1)
        masks = None
        if predictor.has_masks:
            if found.masks is None or len(found.masks) != len(scores):
                raise EvaluationError(f"{where}: a mask model gave no mask for each detection")
            if len(found.masks) and found.masks.shape[1:] != (h, w):
                raise EvaluationError(
                    f"{where}: masks are {found.masks.shape[2]}x{found.masks.shape[1]}, "
                    f"the image {w}x{h}"
                )
            masks = [mask_to_rle(mask > 0) for mask in found.masks]
        predictions.append(ImagePredictions(image.id, pixel_boxes, classes, scores, masks))
        if time.monotonic() - last_log > 30 or index == len(split.images):
            last_log = time.monotonic()
            log(f"  predicted {index}/{len(split.images)} images "
                f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    return predictions


def coco_detections(predictions: list[ImagePredictions]) -> list[dict]:
    """COCO results form: image_id, category_id, bbox (pixels), score, segmentation (RLE).

    Values as the model gave them: COCOeval ranks by score and matches by IoU on these, so
    rounding here would tie scores and move IoUs across thresholds (`rounded_for_json` rounds
    the copy written to detections.json).
    """
    detections = []
    for image in predictions:
        for i in range(len(image.scores)):
            detection = {
                "image_id": image.image_id,
                "category_id": int(image.classes[i]),
                "bbox": [float(v) for v in image.boxes[i]],
                "score": float(image.scores[i]),
            }
            if image.masks is not None:
                detection["segmentation"] = image.masks[i]
            detections.append(detection)
    return detections


def rounded_for_json(detections: list[dict]) -> list[dict]:
    """The detections with boxes to 1/1000 pixel and scores to 5 decimals: detections.json's
    precision, for reading and size; never evaluated."""
    return [
        {**d, "bbox": [round(v, JSON_BOX_DECIMALS) for v in d["bbox"]],
         "score": round(d["score"], JSON_SCORE_DECIMALS)}
        for d in detections
    ]  # fmt: skip


def _calibrate(predictor, val: Split | None, log: Log) -> dict:
    """thresholds.json's table: calibrated on `val`, or every class at the default without it."""
    names = predictor.label_map.names
    if val is None:
        log(f"no val split: every class's score threshold is {DEFAULT_SCORE_THRESHOLD:g}")
        table = thresholds_json(calibrate(class_outcomes([], len(names)), names), split=None)
        for row in table["classes"]:
            row["reason"] = NO_VAL_SPLIT
        return table
    log(f"calibrating score thresholds on {len(val.images)} val images from {val.directory}")
    val_predictions = _predict_all(predictor, val, log)
    table = thresholds_json(
        calibrate(class_outcomes(image_objects(val, val_predictions), len(names)), names)
    )
    for row in table["classes"]:
        how = (
            f"precision {row['precision']:.3f}, recall {row['recall']:.3f}, F1 {row['f1']:.3f}"
            if row["calibrated"]
            else row["reason"]
        )
        log(f"  {row['name']}: score threshold {row['threshold']:.3f} ({how})")
    return table


def image_objects(split: Split, predictions: list[ImagePredictions]) -> list[ImageObjects]:
    """Each image's ground truth and every detection, for thresholds.class_outcomes."""
    by_image: dict[int, list[dict]] = {image.id: [] for image in split.images}
    for ann in split.ground_truth["annotations"]:
        by_image[ann["image_id"]].append(ann)
    found = []
    for image in predictions:
        anns = by_image[image.image_id]
        found.append(
            ImageObjects(
                np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
                np.array([a["category_id"] for a in anns], dtype=np.int64),
                np.array([a["iscrowd"] for a in anns], dtype=np.int64),
                image.boxes,
                image.classes,
                image.scores,
            )
        )
    return found


def _test_f1(split, predictions, calibrated: dict, in_use: dict) -> dict:
    """The test split's per-class precision, recall and F1 at box IoU .5 (the calibration's
    matching) at the calibrated thresholds and at the single default, and their means."""
    outcomes = class_outcomes(image_objects(split, predictions), len(split.label_map))
    default = dict.fromkeys(calibrated, DEFAULT_SCORE_THRESHOLD)
    mean_calibrated, at_calibrated = mean_f1(outcomes, calibrated)
    mean_default, at_default = mean_f1(outcomes, default)
    mean_in_use, at_in_use = mean_f1(outcomes, in_use)
    return {
        "iou_threshold": CALIBRATION_IOU,
        "default_threshold": DEFAULT_SCORE_THRESHOLD,
        "mean_f1_calibrated": mean_calibrated,
        "mean_f1_default": mean_default,
        "mean_f1_in_use": mean_in_use,
        "note": "mean over the classes with test objects",
        "classes": [
            {
                "id": k,
                "name": split.label_map.names[k - 1],
                "test_objects": at_in_use[k].num_objects,
                "threshold": in_use[k],
                "precision": at_in_use[k].precision,
                "recall": at_in_use[k].recall,
                "f1": at_in_use[k].f1,
                "f1_calibrated": at_calibrated[k].f1,
                "f1_default": at_default[k].f1,
            }
            for k in sorted(outcomes)
        ],
    }


def _report_thresholds(calibration: dict, score_f1: dict, score_threshold: float) -> dict:
    """What the report says of the thresholds: which were used, how each was chosen."""
    if score_threshold == CALIBRATED and calibration["split"] is None:
        used = f"with score &ge; {DEFAULT_SCORE_THRESHOLD:g} for every class (no val split given)"
    elif score_threshold == CALIBRATED:
        used = "at or above their class's score threshold, calibrated on the val split (below)"
    else:
        used = f"with score &ge; {score_threshold:g} for every class (score_threshold)"
    return {"used": used, "calibration": calibration, "test": score_f1}


def f1_line(score_f1: dict, calibrated: bool) -> str:
    line = f"test mean F1 (box IoU .5) at score {score_f1['default_threshold']:g}: "
    line += format_value(score_f1["mean_f1_default"])
    if calibrated:
        line += f", at the calibrated thresholds: {format_value(score_f1['mean_f1_calibrated'])}"
    return line


def _kept(scores: np.ndarray, classes: np.ndarray, thresholds: dict[int, float]) -> np.ndarray:
    """Indexes of the detections at or above their class's threshold."""
    per_class = np.array([thresholds.get(int(c), DEFAULT_SCORE_THRESHOLD) for c in classes])
    return np.flatnonzero(scores >= per_class) if len(scores) else np.zeros(0, dtype=np.int64)


def _match_all(split: Split, predictions: list[ImagePredictions], thresholds: dict, iou):
    by_image: dict[int, list[dict]] = {image.id: [] for image in split.images}
    for ann in split.ground_truth["annotations"]:
        by_image[ann["image_id"]].append(ann)
    matches: list[ImageMatches] = []
    gt_classes, det_classes = {}, {}
    for image in predictions:
        anns = by_image[image.image_id]
        gt_classes[image.image_id] = np.array([a["category_id"] for a in anns], dtype=np.int64)
        det_classes[image.image_id] = image.classes
        kept = _kept(image.scores, image.classes, thresholds)
        found = match_image(
            image.image_id,
            np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
            gt_classes[image.image_id],
            np.array([a["iscrowd"] for a in anns], dtype=np.int64),
            image.boxes[kept],
            image.classes[kept],
            image.scores[kept],
            iou,
        )
        # back to indexes into all of the image's detections
        found.matched = [(g, int(kept[d])) for g, d in found.matched]
        found.false_detections = [int(kept[d]) for d in found.false_detections]
        matches.append(found)
    return matches, gt_classes, det_classes


def per_class_rows(evaluations: list[CocoEvalResult]) -> list[dict]:
    """One dict per class: counts, AP/AP50/AP75 (None: no ground truth), mask_* and the curves."""
    rows = []
    for k, box in enumerate(evaluations[0].classes):
        row = {
            "id": box.id,
            "name": box.name,
            "num_objects": box.num_gt,
            "num_detections": box.num_detections,
            "pr_curves": {},
        }
        for evaluation in evaluations:
            prefix = "mask_" if evaluation.iou_type == "segm" else ""
            found = evaluation.classes[k]
            row.update({f"{prefix}AP": found.ap, f"{prefix}AP50": found.ap50,
                        f"{prefix}AP75": found.ap75})  # fmt: skip
            row["pr_curves"][evaluation.iou_type] = {
                "iou_0.50": found.precision_iou50,
                "iou_0.50:0.95": found.precision_mean,
            }
        rows.append(row)
    return rows


def ap_table_markdown(per_class: list[dict], evaluations: list[CocoEvalResult]) -> str:
    columns = ["AP", "AP50", "AP75"]
    if any(e.iou_type == "segm" for e in evaluations):
        columns += ["mask_AP", "mask_AP50", "mask_AP75"]
    header = ["class", "id", "objects", "detections", *(c.replace("_", " ") for c in columns)]
    lines = [
        "# Per-class average precision",
        "",
        "COCO AP (IoU .50:.95), AP50 and AP75 on the test split, every detection counted "
        "(area all, 100 detections per image). n/a: no object of the class in the split.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in per_class:
        cells = [markdown_cell(row["name"]), str(row["id"]), str(row["num_objects"]),
                 str(row["num_detections"]), *(format_value(row[c]) for c in columns)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    overall = evaluations_overall(evaluations)
    cells = ["**all**", "", str(sum(r["num_objects"] for r in per_class)),
             str(sum(r["num_detections"] for r in per_class)),
             *(format_value(overall.get(c)) for c in columns)]  # fmt: skip
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluations_overall(evaluations: list[CocoEvalResult]) -> dict[str, float]:
    return {name: value for e in evaluations for name, value in e.metrics().items()}


def format_value(value: float | None) -> str:
    if value is None or value < 0:
        return "n/a"
    return f"{value:.3f}"


def summary_line(metrics: dict[str, float], num_detections: int) -> str:
    parts = [f"{name} {format_value(metrics[name])}" for name in ("AP", "AP50", "AP75", "AR100")]
    if "mask_AP" in metrics:
        parts += [f"mask_{n} {format_value(metrics['mask_' + n])}" for n in ("AP", "AP50")]
    return f"evaluation done, {num_detections} detections: " + ", ".join(parts)


def _report_images(split, predictions, matches, thresholds, max_images) -> list[ReportImage]:
    """The worst images first (most misses, false detections and confusions), then test order."""
    order = sorted(range(len(split.images)), key=lambda i: (-matches[i].num_errors, i))
    by_image: dict[int, list[dict]] = {image.id: [] for image in split.images}
    for ann in split.ground_truth["annotations"]:
        by_image[ann["image_id"]].append(ann)
    chosen = []
    for i in order[:max_images]:
        image, found, match = split.images[i], predictions[i], matches[i]
        keep = _kept(found.scores, found.classes, thresholds)
        masks = None
        if found.masks is not None:
            masks = [mask_utils.decode(found.masks[d]) for d in keep]
        chosen.append(
            ReportImage(
                image=image,
                pixels=decode_image(image),
                gt=by_image[image.id],
                det_boxes=found.boxes[keep],
                det_classes=found.classes[keep],
                det_scores=found.scores[keep],
                det_masks=masks,
                matches=match,
            )
        )
    return chosen


def _write_json(path: Path, value) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(value, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(temp, path)


__all__ = [
    "CALIBRATED",
    "STAT_NAMES",
    "EvaluationError",
    "EvaluateModelResult",
    "check_label_maps",
    "evaluate",
    "run_evaluate_model",
]
