"""The features of one image's tf.Example, as plain lists: the per-image work of the stage.

Runs in worker processes, which must not load TensorFlow; they send back the serialized
tf.train.Example (tf_example.py), which the parent only writes. Keys are the TF Object Detection
API's, which Model Garden's TfExampleDecoder reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
from pycocotools import mask as mask_utils

from ..common.dataset import polygons_to_rle
from ..common.report import REFUSED, Entry, Report
from ..common.tfrecords import (
    AREA,
    CLASS_LABEL,
    CLASS_TEXT,
    ENCODED,
    FEATURE_KINDS,
    FILENAME,
    FORMAT,
    HEIGHT,
    IS_CROWD,
    MASK,
    OBJECT_KEYS,
    SHA256,
    SOURCE_ID,
    WIDTH,
    XMAX,
    XMIN,
    YMAX,
    YMIN,
)
from .images import prepare_image
from .masks import encode_mask_png, mask_rows, rle_counts
from .tf_example import encode_example

STAGE = "convert-to-tfrecord"
# Below this many pixels a clip is float noise and a box has no extent.
PIXEL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ImageTask:
    """One image to turn into features: what a worker process receives."""

    image: dict
    annotations: list[dict]
    image_path: str
    class_names: tuple[str, ...]
    write_masks: bool
    exif_policy: str = "apply"


@dataclass
class ImageResult:
    """`features` maps FEATURE_KINDS keys to value lists, `record` is them serialized as a
    tf.train.Example (build_image_record); neither is set when the image was refused."""

    features: dict[str, list] | None
    entries: list[Entry]
    num_instances: int = 0
    record: bytes | None = None

    @property
    def refused(self) -> bool:
        nothing = self.features is None and self.record is None
        return nothing or any(e.action == REFUSED for e in self.entries)


def has_segmentation(annotation: dict) -> bool:
    return annotation.get("segmentation") not in (None, [], {})


def build_image_record(task: ImageTask) -> ImageResult:
    """build_image_features with the features serialized: what a worker sends back, one bytes
    object rather than lists of them to pickle, and nothing left for the parent to build."""
    result = build_image_features(task)
    if result.refused:
        return result
    return replace(result, features=None, record=encode_example(result.features, FEATURE_KINDS))


def build_image_features(task: ImageTask) -> ImageResult:
    report = Report(STAGE)
    image = task.image
    prepared = prepare_image(task.image_path, image, task.exif_policy, report)
    if prepared is None:
        return ImageResult(None, report.entries)

    objects = {key: [] for key in OBJECT_KEYS if task.write_masks or key != MASK}
    num_instances = 0
    for annotation in task.annotations:
        instance = _instance_features(annotation, image, task, report)
        if instance is not None:
            for key, value in instance.items():
                objects[key].append(value)
            num_instances += 1

    features = {
        HEIGHT: [prepared.height],
        WIDTH: [prepared.width],
        FILENAME: [image["file_name"].encode("utf-8")],
        SOURCE_ID: [str(image["id"]).encode("ascii")],
        SHA256: [hashlib.sha256(prepared.encoded).hexdigest().encode("ascii")],
        ENCODED: [prepared.encoded],
        FORMAT: [prepared.format.encode("ascii")],
        **objects,
    }
    return ImageResult(features, report.entries, num_instances)


def _instance_features(annotation: dict, image: dict, task: ImageTask, report: Report):
    """One value per object key for this annotation; None when it is skipped (with a line)."""
    width, height = image["width"], image["height"]
    where = f"annotation {annotation['id']} in {image['file_name']}"
    x, y, w, h = annotation["bbox"]
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 - x0 <= PIXEL_TOLERANCE or y1 - y0 <= PIXEL_TOLERANCE:
        report.skipped(
            "box-empty",
            f"box {annotation['bbox']} has no area within the {width}x{height} image",
            where,
        )
        return None
    box_clipped = max(x0 - x, y0 - y, x + w - x1, y + h - y1) > PIXEL_TOLERANCE
    if box_clipped:
        clipped = [round(v, 3) for v in (x0, y0, x1 - x0, y1 - y0)]
        report.fixed(
            "box-clipped",
            f"box {annotation['bbox']} reaches outside the {width}x{height} image; "
            f"clipped to {clipped}",
            where,
        )

    segmentation = annotation.get("segmentation") if has_segmentation(annotation) else None
    try:
        rle = segmentation_rle(segmentation, height, width) if segmentation is not None else None
    except ValueError as e:
        report.refused("rle-invalid", f"its RLE segmentation cannot be decoded: {e}", where)
        return None
    polygon_clipped = polygon_reaches_outside(segmentation, width, height)
    if polygon_clipped:
        report.fixed(
            "polygon-clipped",
            f"its polygon reaches outside the {width}x{height} image; the mask is clipped to it",
            where,
        )
    instance = {}
    if task.write_masks:
        mask_rle = rle
        if mask_rle is None:
            box = np.array([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float64)
            mask_rle = mask_utils.frPyObjects(box, height, width)[0]
            report.fixed("mask-from-box", "no segmentation: the box is written as its mask", where)
        rows = mask_rows(mask_rle)
        if rows is None:
            report.skipped(
                "mask-empty", "its mask covers no pixel of the image (Mask R-CNN needs one)", where
            )
            return None
        instance[MASK] = encode_mask_png(rows, height, width)

    box_area = (x1 - x0) * (y1 - y0)
    if "area" not in annotation:
        area = float(mask_utils.area(rle)) if rle is not None else box_area
        report.fixed("area-computed", f"no area given: computed {area:g} pixels", where)
    elif box_clipped or polygon_clipped:
        area = float(mask_utils.area(rle)) if rle is not None else box_area
    else:
        area = float(annotation["area"])

    category_id = annotation["category_id"]
    instance.update({
        XMIN: x0 / width,
        XMAX: x1 / width,
        YMIN: y0 / height,
        YMAX: y1 / height,
        CLASS_TEXT: task.class_names[category_id - 1].encode("utf-8"),
        CLASS_LABEL: category_id,
        IS_CROWD: int(annotation.get("iscrowd", 0)),
        AREA: area,
    })  # fmt: skip
    return instance


def segmentation_rle(segmentation, height: int, width: int) -> dict:
    """COCO polygons (merged into one instance) or RLE, compressed or not, as a compressed RLE.

    Raises ValueError for an RLE whose runs are not those of a height x width mask (pycocotools
    would decode such a one into memory it never wrote).
    """
    if isinstance(segmentation, list):
        return polygons_to_rle(segmentation, height, width)
    if isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    rle_counts(rle["counts"], height * width)
    return rle


def polygon_reaches_outside(segmentation, width: int, height: int) -> bool:
    """Whether rasterizing these polygons clips them (RLE always fits the image)."""
    if not isinstance(segmentation, list):
        return False
    for polygon in segmentation:
        xs, ys = polygon[0::2], polygon[1::2]
        if min(xs) < -PIXEL_TOLERANCE or min(ys) < -PIXEL_TOLERANCE:
            return True
        if max(xs) > width + PIXEL_TOLERANCE or max(ys) > height + PIXEL_TOLERANCE:
            return True
    return False
