"""COCO metrics through pycocotools' COCOeval, with the numbers the report needs beside them.

`run_cocoeval` is COCOeval as the COCO site runs it (evaluate, accumulate, summarize), on
in-memory ground truth and detections, plus what `accumulate` leaves in `eval["precision"]`:
per-class AP and the per-class precision-recall curves.

Conventions:
- stats keep COCO's -1 for "no ground-truth object in that area range" (and AP/AR -1 when the
  split has no object at all): every run has the same 12 keys, and -1 is what every COCO tool
  prints. Readers show it as "n/a".
- Per-class AP is the mean of precision[:, :, k, area=all, maxDets=100] over the entries that
  are not -1, as `summarize` does for all classes together; None for a class without ground truth.
- No detections at all is not an error: AP and AR are 0 for the classes that have objects.
- Segmentation results are evaluated without their `bbox` (else `loadRes` takes the box area as
  the instance's area and sorts it into the wrong small/medium/large range).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.stats, in order
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # fmt: skip
IOU_TYPES = ("bbox", "segm")
METRIC_PREFIX = {"bbox": "", "segm": "mask_"}


@dataclass
class ClassResult:
    id: int
    name: str
    num_gt: int  # objects that count (crowd objects left out)
    num_detections: int
    ap: float | None  # None: the class has no ground truth in the split
    ap50: float | None
    ap75: float | None
    precision_iou50: list[float] | None = None  # at each recall in RECALLS; None without GT
    precision_mean: list[float] | None = None  # the mean over IoU .50:.95


@dataclass
class CocoEvalResult:
    iou_type: str
    stats: dict[str, float]  # STAT_NAMES -> value, -1 where COCO says "no objects"
    classes: list[ClassResult]
    recall_thresholds: list[float] = field(default_factory=list)
    summary: str = ""  # COCOeval's printed table

    def metrics(self) -> dict[str, float]:
        """The stats with the iou type's prefix: AP... for boxes, mask_AP... for masks."""
        prefix = METRIC_PREFIX[self.iou_type]
        return {prefix + name: value for name, value in self.stats.items()}


def coco_from_dict(dataset: dict) -> COCO:
    """A pycocotools COCO object on an in-memory COCO instances dict, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(
    ground_truth: dict | COCO,
    detections: list[dict],
    iou_type: str = "bbox",
    image_ids: list[int] | None = None,
) -> CocoEvalResult:
    """COCOeval of `detections` (COCO results form) against `ground_truth` (a COCO dict).

    `image_ids` restricts the evaluation (COCOeval's params.imgIds); default all GT images.
    Neither argument is modified.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    # COCOeval writes into the ground truth: an `ignore` key on every annotation, and RLE (with
    # bytes counts) in place of polygons for segm. It gets a copy.
    dataset = ground_truth.dataset if isinstance(ground_truth, COCO) else ground_truth
    gt = coco_from_dict(copy.deepcopy(dataset))
    dt = _load_results(gt, detections, iou_type)
    evaluator = COCOeval(gt, dt, iou_type)
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluator.evaluate()
        evaluator.accumulate()
        summary_start = printed.tell()
        evaluator.summarize()
    stats = {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}
    return CocoEvalResult(
        iou_type=iou_type,
        stats=stats,
        classes=_per_class(evaluator, gt, dt),
        recall_thresholds=[float(r) for r in evaluator.params.recThrs],
        summary=printed.getvalue()[summary_start:],
    )


def _load_results(gt: COCO, detections: list[dict], iou_type: str) -> COCO:
    """COCO.loadRes on a copy (it writes into the dicts), keeping only the iou type's geometry;
    an empty list becomes an empty results set (loadRes fails on one)."""
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    anns = []
    for det in detections:
        if iou_type == "segm" and "segmentation" not in det:
            raise ValueError(
                f"detection {det} has no segmentation: mask AP needs a mask for every detection"
            )
        anns.append({key: copy.deepcopy(value) for key, value in det.items() if key != drop})
    if not anns:
        dt = COCO()
        dt.dataset = {
            "images": list(gt.dataset.get("images", [])),
            "categories": copy.deepcopy(gt.dataset.get("categories", [])),
            "annotations": [],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
        return dt
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(anns)


def _per_class(evaluator: COCOeval, gt: COCO, dt: COCO) -> list[ClassResult]:
    params = evaluator.params
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    area_all = list(params.areaRngLbl).index("all")
    max_dets = len(params.maxDets) - 1  # 100
    iou50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    iou75 = int(np.argmin(np.abs(params.iouThrs - 0.75)))
    image_ids = set(params.imgIds)
    results = []
    for k, cat_id in enumerate(params.catIds):
        num_gt = sum(
            1
            for ann in gt.loadAnns(gt.getAnnIds(imgIds=params.imgIds, catIds=[cat_id]))
            if not ann.get("iscrowd", 0)
        )
        num_dets = sum(
            1 for ann in dt.loadAnns(dt.getAnnIds(catIds=[cat_id])) if ann["image_id"] in image_ids
        )
        curves = precision[:, :, k, area_all, max_dets]  # [T, R]
        has_gt = bool((curves > -1).any())
        results.append(
            ClassResult(
                id=int(cat_id),
                name=gt.cats[cat_id]["name"],
                num_gt=num_gt,
                num_detections=num_dets,
                ap=_mean_valid(curves) if has_gt else None,
                ap50=_mean_valid(curves[iou50]) if has_gt else None,
                ap75=_mean_valid(curves[iou75]) if has_gt else None,
                precision_iou50=[float(p) for p in curves[iou50]] if has_gt else None,
                precision_mean=[float(p) for p in curves.mean(axis=0)] if has_gt else None,
            )
        )
    return results


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None
