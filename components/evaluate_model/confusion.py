"""The detection confusion matrix: which class each ground-truth object was detected as.

Rule (per image; the report and the component docs say the same):
1. Detections with score >= score_threshold are taken in descending score order (ties: the
   order the model gave).
2. Each takes the still-unmatched ground-truth object it overlaps most, whatever the two
   classes (class-agnostic matching, so a wrong class shows as a confusion), if that box IoU
   is >= iou_threshold: the cell [true class, predicted class] counts one.
3. A ground-truth object left unmatched is a miss: [its class, background].
4. A detection left unmatched is a false detection: [background, its class], unless it lies
   on a crowd region (its area inside a crowd box >= iou_threshold), which counts nowhere,
   as COCO ignores it. Crowd objects are never counted as objects.

Rows are true classes, columns predicted classes, in label map order with "background" last:
the form of KFP's ClassificationMetrics.log_confusion_matrix(categories, matrix). Row sums are
the ground-truth counts per class (the background row: false detections); [background,
background] is always 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

BACKGROUND = "background"


@dataclass
class ImageMatches:
    """One image's outcome: what the report draws and sorts by."""

    image_id: int
    matched: list[tuple[int, int]]  # (gt index, detection index); classes may differ
    missed: list[int]  # gt indexes
    false_detections: list[int]  # detection indexes
    num_confusions: int = 0  # matches whose classes differ

    @property
    def num_errors(self) -> int:
        return len(self.missed) + len(self.false_detections) + self.num_confusions


def match_image(
    image_id: int,
    gt_boxes: np.ndarray,  # [G, 4] x, y, w, h pixels
    gt_classes: np.ndarray,  # [G]
    gt_crowd: np.ndarray,  # [G] 0/1
    det_boxes: np.ndarray,  # [D, 4] x, y, w, h pixels, already score-filtered
    det_classes: np.ndarray,  # [D]
    det_scores: np.ndarray,  # [D]
    iou_threshold: float,
) -> ImageMatches:
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    crowd = np.asarray(gt_crowd, dtype=bool).reshape(-1)
    objects = np.flatnonzero(~crowd)
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable")
    iou = np.zeros((len(det_boxes), len(gt_boxes)))
    if len(det_boxes) and len(gt_boxes):
        iou = mask_utils.iou(det_boxes, gt_boxes, [int(c) for c in crowd])
        iou = np.asarray(iou, dtype=np.float64).reshape(len(det_boxes), len(gt_boxes))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    matched, false_detections = [], []
    for d in order:
        best, best_iou = -1, iou_threshold
        for g in objects:
            if not taken[g] and iou[d, g] >= best_iou:
                best, best_iou = int(g), iou[d, g]
        if best >= 0:
            taken[best] = True
            matched.append((best, int(d)))
        elif not any(iou[d, g] >= iou_threshold for g in np.flatnonzero(crowd)):
            false_detections.append(int(d))
    missed = [int(g) for g in objects if not taken[g]]
    confusions = sum(1 for g, d in matched if gt_classes[g] != det_classes[d])
    return ImageMatches(image_id, matched, missed, false_detections, confusions)


def confusion_matrix(
    matches: list[ImageMatches],
    gt_classes: dict[int, np.ndarray],
    det_classes: dict[int, np.ndarray],
    num_classes: int,
) -> list[list[int]]:
    """(K+1) x (K+1) counts from every image's matches; class ids 1..K, background last."""
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for image in matches:
        gts, dets = gt_classes[image.image_id], det_classes[image.image_id]
        for g, d in image.matched:
            matrix[int(gts[g]) - 1, int(dets[d]) - 1] += 1
        for g in image.missed:
            matrix[int(gts[g]) - 1, background] += 1
        for d in image.false_detections:
            matrix[background, int(dets[d]) - 1] += 1
    return matrix.tolist()
