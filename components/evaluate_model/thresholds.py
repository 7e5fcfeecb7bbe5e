"""Per-class score thresholds calibrated on the validation split, and F1 at given thresholds.

A class's threshold is the score at which its F1 at box IoU >= 0.5 on the val split is highest
(ties: the higher precision). The matching is the confusion matrix's (`confusion.match_image`),
run one class at a time: a detection can only be a true positive for an object of its own class,
as in COCO's AP50, so each class's threshold can be chosen without the others'. Because that
matching takes detections best first, the detections kept at any threshold are matched exactly
as they are within all of them: one matching over all detections gives every threshold's counts.

The threshold written is halfway between the lowest score kept at the best F1 and the highest
score dropped there (the lowest kept score when nothing is dropped), so that an exported model's
slightly different float arithmetic does not flip the borderline detection. A class without val
objects, or whose detections never match one, keeps the global default and says why.

thresholds.json (the evaluation output; export-model copies it into export.json; its format is
checked and read by inference/thresholds.py):

    {"iou_threshold": 0.5, "default_threshold": 0.5, "split": "val", "classes": [
        {"id": 1, "name": "circle", "threshold": 0.31, "calibrated": true, "precision": 0.95,
         "recall": 0.9, "f1": 0.92, "val_objects": 20, "val_detections": 19},
        {"id": 2, "name": "square", "threshold": 0.5, "calibrated": false,
         "reason": "default: no validation objects", "val_objects": 0, "val_detections": 3}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..inference.thresholds import (  # the table's format, shared with what reads it back
    DEFAULT_SCORE_THRESHOLD,
    THRESHOLDS_FILE,
    ThresholdsError,
    read_thresholds,
    thresholds_by_name,
    thresholds_markdown,
)
from .confusion import match_image

CALIBRATION_IOU = 0.5
NO_VALIDATION_OBJECTS = "default: no validation objects"
NO_MATCHED_DETECTION = "default: no detection matched a validation object"


@dataclass(frozen=True)
class ImageObjects:
    """One image's ground truth and detections (pixel [x, y, w, h] boxes, class ids 1..K)."""

    gt_boxes: np.ndarray  # [G, 4]
    gt_classes: np.ndarray  # [G]
    gt_crowd: np.ndarray  # [G] 0/1
    det_boxes: np.ndarray  # [D, 4], every detection (no score filter)
    det_classes: np.ndarray  # [D]
    det_scores: np.ndarray  # [D]


@dataclass(frozen=True)
class ClassOutcomes:
    """A class's judged detections over a split: score and whether it matched an object of its
    class (detections on crowd regions are left out, as COCO ignores them)."""

    scores: np.ndarray  # [N], descending
    true_positive: np.ndarray  # [N] bool
    num_objects: int  # non-crowd ground-truth objects of the class

    def counts_at(self, threshold: float) -> tuple[int, int]:
        """(true positives, detections) among those with score >= threshold."""
        kept = self.scores >= threshold
        return int(self.true_positive[kept].sum()), int(kept.sum())


@dataclass(frozen=True)
class OperatingPoint:
    true_positives: int
    detections: int
    num_objects: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.detections if self.detections else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.num_objects if self.num_objects else 0.0

    @property
    def f1(self) -> float:
        total = self.detections + self.num_objects
        return 2 * self.true_positives / total if total else 0.0


@dataclass(frozen=True)
class ClassThreshold:
    id: int
    name: str
    threshold: float
    calibrated: bool
    val_objects: int
    val_detections: int  # judged detections of the class on val, at any score
    point: OperatingPoint | None = None  # at the threshold; None when not calibrated
    reason: str = ""  # why not calibrated

    def to_json(self) -> dict:
        row = {"id": self.id, "name": self.name, "threshold": self.threshold,
               "calibrated": self.calibrated}  # fmt: skip
        if self.point is not None:
            row.update(precision=self.point.precision, recall=self.point.recall,
                       f1=self.point.f1)  # fmt: skip
        else:
            row["reason"] = self.reason
        row.update(val_objects=self.val_objects, val_detections=self.val_detections)
        return row


def class_outcomes(
    images: Iterable[ImageObjects], num_classes: int, iou_threshold: float = CALIBRATION_IOU
) -> dict[int, ClassOutcomes]:
    """Every class's detections over the images, judged one class at a time."""
    scores: dict[int, list[np.ndarray]] = {k: [] for k in range(1, num_classes + 1)}
    hits: dict[int, list[np.ndarray]] = {k: [] for k in range(1, num_classes + 1)}
    objects = dict.fromkeys(range(1, num_classes + 1), 0)
    for image in images:
        gt_classes = np.asarray(image.gt_classes, dtype=np.int64).reshape(-1)
        gt_crowd = np.asarray(image.gt_crowd, dtype=np.int64).reshape(-1)
        gt_boxes = np.asarray(image.gt_boxes, dtype=np.float64).reshape(-1, 4)
        det_classes = np.asarray(image.det_classes, dtype=np.int64).reshape(-1)
        det_scores = np.asarray(image.det_scores, dtype=np.float64).reshape(-1)
        det_boxes = np.asarray(image.det_boxes, dtype=np.float64).reshape(-1, 4)
        for k in range(1, num_classes + 1):
            gts, dets = np.flatnonzero(gt_classes == k), np.flatnonzero(det_classes == k)
            objects[k] += int((gt_crowd[gts] == 0).sum())
            if not len(dets):
                continue
            found = match_image(0, gt_boxes[gts], gt_classes[gts], gt_crowd[gts],
                                det_boxes[dets], det_classes[dets], det_scores[dets],
                                iou_threshold)  # fmt: skip
            judged = [d for _, d in found.matched] + list(found.false_detections)
            hit = [True] * len(found.matched) + [False] * len(found.false_detections)
            scores[k].append(det_scores[dets][judged])
            hits[k].append(np.array(hit, dtype=bool))
    outcomes = {}
    for k in range(1, num_classes + 1):
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        h = np.concatenate(hits[k]) if hits[k] else np.zeros(0, dtype=bool)
        order = np.argsort(-s, kind="stable")
        outcomes[k] = ClassOutcomes(s[order], h[order], objects[k])
    return outcomes


def best_threshold(outcomes: ClassOutcomes) -> tuple[float, OperatingPoint] | None:
    """The threshold of highest F1 (ties: higher precision) and the counts there; None when no
    detection ever matches (F1 is 0 at every threshold)."""
    if outcomes.num_objects == 0 or not outcomes.true_positive.any():
        return None
    scores, gt = outcomes.scores, outcomes.num_objects
    true_positives = np.cumsum(outcomes.true_positive)
    best = None  # (index of the last kept detection, tp, detections)
    for i in range(len(scores)):
        if i + 1 < len(scores) and scores[i + 1] == scores[i]:
            continue  # a threshold keeps all detections of one score or none
        tp, det = int(true_positives[i]), i + 1
        if best is None:
            best = (i, tp, det)
            continue
        _, best_tp, best_det = best
        # integers, no rounding: F1 = 2 tp / (det + gt), precision = tp / det
        f1_order = tp * (best_det + gt) - best_tp * (det + gt)
        if f1_order > 0 or (f1_order == 0 and tp * best_det > best_tp * det):
            best = (i, tp, det)
    index, tp, det = best
    lowest_kept = float(scores[index])
    threshold = lowest_kept
    if index + 1 < len(scores):
        threshold = (lowest_kept + float(scores[index + 1])) / 2
    return threshold, OperatingPoint(tp, det, gt)


def calibrate(
    outcomes: Mapping[int, ClassOutcomes],
    class_names: Sequence[str],
    default_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> list[ClassThreshold]:
    """One ClassThreshold per class of the label map (ids 1..K, `class_names` in id order)."""
    rows = []
    for class_id, name in enumerate(class_names, start=1):
        found = outcomes[class_id]
        best = best_threshold(found)
        common = dict(id=class_id, name=name, val_objects=found.num_objects,
                      val_detections=len(found.scores))  # fmt: skip
        if best is not None:
            rows.append(ClassThreshold(threshold=best[0], calibrated=True, point=best[1], **common))
        else:
            reason = NO_VALIDATION_OBJECTS if found.num_objects == 0 else NO_MATCHED_DETECTION
            rows.append(ClassThreshold(threshold=default_threshold, calibrated=False,
                                       reason=reason, **common))  # fmt: skip
    return rows


def mean_f1(
    outcomes: Mapping[int, ClassOutcomes], thresholds: Mapping[int, float]
) -> tuple[float, dict[int, OperatingPoint]]:
    """Mean F1 over the classes with objects (a class with none has no recall to weigh; -1, as
    COCO's "no ground truth", when none has), and each class's counts, at the given per-class
    thresholds."""
    points = {}
    for class_id, found in outcomes.items():
        tp, det = found.counts_at(thresholds[class_id])
        points[class_id] = OperatingPoint(tp, det, found.num_objects)
    scored = [p.f1 for p in points.values() if p.num_objects]
    return (float(np.mean(scored)) if scored else -1.0), points


def thresholds_json(
    rows: Sequence[ClassThreshold],
    default_threshold: float = DEFAULT_SCORE_THRESHOLD,
    iou_threshold: float = CALIBRATION_IOU,
    split: str = "val",
) -> dict:
    return {
        "iou_threshold": iou_threshold,
        "default_threshold": default_threshold,
        "split": split,
        "rule": "per class, the score of highest F1 at box IoU >= iou_threshold on the split "
        "(ties: higher precision), halfway to the next lower detection score; classes not "
        "calibrated keep default_threshold",
        "classes": [row.to_json() for row in rows],
    }


def write_thresholds(path: str | os.PathLike, table: dict) -> None:
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)


__all__ = [
    "CALIBRATION_IOU",
    "DEFAULT_SCORE_THRESHOLD",
    "THRESHOLDS_FILE",
    "ClassOutcomes",
    "ClassThreshold",
    "ImageObjects",
    "OperatingPoint",
    "ThresholdsError",
    "best_threshold",
    "calibrate",
    "class_outcomes",
    "mean_f1",
    "read_thresholds",
    "thresholds_by_name",
    "thresholds_json",
    "thresholds_markdown",
    "write_thresholds",
]
