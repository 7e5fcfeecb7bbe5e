"""Detections as CVAT shapes: boxes as rectangles, masks as polygons or CVAT masks.

`detections_to_shapes` turns one frame's detections into shapes of the type each label takes; it
knows nothing of tasks, servers or uploads.

CVAT coordinates are pixel corners: pixel (x, y) covers [x, x + 1) × [y, y + 1). A rectangle's
points are [xtl, ytl, xbr, ybr]; a polygon's [x1, y1, x2, y2, ...]; a mask's are CVAT's RLE over
the mask's tight box, row by row, starting with a run of 0s, then [left, top, right, bottom] with
right and bottom inclusive (cvat_sdk.masks.encode_mask, which CVAT's "CVAT for images" dumper
turns into rle/left/top/width = right - left + 1/height).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from cvat_sdk.masks import encode_mask

from ..common.dataset import mask_to_rle
from ..inference.thresholds import DEFAULT_SCORE_THRESHOLD

POLYGON_TOLERANCE = 0.5  # px: Douglas-Peucker simplification of the exact pixel outline
MIN_PART_PIXELS = 4  # smaller parts of a mask are dropped unless nothing else is left
SHAPE_TYPES = ("rectangle", "polygon", "mask")

NO_SHAPE_TYPE = "no shape type for the label"
EMPTY_BOX = "empty box (no area inside the frame)"
EMPTY_MASK = "empty mask"


@dataclass(frozen=True)
class Shape:
    """One detection as CVAT shapes of one type: one shape per part (a mask's connected parts
    become one polygon each)."""

    label: str
    score: float
    type: str  # one of SHAPE_TYPES
    box: tuple[float, float, float, float]  # pixels: xtl, ytl, xbr, ybr
    parts: tuple[tuple[float, ...], ...]  # the CVAT points of each shape
    segmentation: Any  # the same in COCO: None (a rectangle), polygons or RLE
    area: float  # pixels


@dataclass(frozen=True)
class Skipped:
    """A detection at or above the threshold that gave no shape, and why."""

    label: str
    reason: str  # NO_SHAPE_TYPE, EMPTY_BOX or EMPTY_MASK


@dataclass(frozen=True)
class FrameShapes:
    shapes: tuple[Shape, ...]  # in the detections' order
    skipped: tuple[Skipped, ...]
    below_threshold: int


def detections_to_shapes(
    detections,
    width: int,
    height: int,
    shape_types: Mapping[str, str],
    score_threshold: float | Mapping[str, float],
) -> FrameShapes:
    """One frame's detections (an inference Detections) as CVAT shapes for a width × height frame.

    `shape_types` maps each label to its shape type; a mask model's masks become polygons or CVAT
    masks, a boxes-only model's boxes fill a polygon or a mask label with their box.
    `score_threshold`: one for every label, or label -> threshold (inference.thresholds: the
    model's calibrated ones), whose missing labels get DEFAULT_SCORE_THRESHOLD.
    """
    shapes, skipped, below_threshold = [], [], 0
    for k in range(len(detections)):
        score = float(detections.scores[k])
        label = detections.class_names[k]
        if isinstance(score_threshold, Mapping):
            threshold = score_threshold.get(label, DEFAULT_SCORE_THRESHOLD)
        else:
            threshold = score_threshold
        if score < threshold:
            below_threshold += 1
            continue
        shape_type = shape_types.get(label)
        if shape_type is None:
            skipped.append(Skipped(label, NO_SHAPE_TYPE))
            continue
        box = box_to_pixels(detections.boxes[k], width, height)
        if box[2] <= box[0] or box[3] <= box[1]:
            skipped.append(Skipped(label, EMPTY_BOX))
            continue
        mask = None
        if detections.masks is not None:
            mask = resized_mask(detections.masks[k], width, height)
        shape = detection_shape(label, score, box, shape_type, mask, width, height)
        if shape is None:
            skipped.append(Skipped(label, EMPTY_MASK))
        else:
            shapes.append(shape)
    return FrameShapes(tuple(shapes), tuple(skipped), below_threshold)


def detection_shape(label, score, box, shape_type, mask, width, height) -> Shape | None:
    """The detection's box (pixels) and full-frame mask (or None) as a `shape_type` shape; None
    when its mask is empty."""
    box = tuple(box)
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    if shape_type == "rectangle":
        return Shape(label, score, shape_type, box, (box,), None, box_area)
    if shape_type == "polygon" and mask is None:
        polygon = box_polygon(box)
        return Shape(label, score, shape_type, box, (tuple(polygon),), [polygon], box_area)
    if mask is None:  # a mask label, a boxes-only model: the pixels the box touches
        mask = np.zeros((height, width), np.uint8)
        left, top, right, bottom = box_mask_points(box)[2:]
        mask[int(top) : int(bottom) + 1, int(left) : int(right) + 1] = 1
    if shape_type == "polygon":
        polygons = mask_polygons(mask)
        parts, segmentation = tuple(map(tuple, polygons)), polygons
    else:
        encoded = mask_points(mask)
        parts, segmentation = ((tuple(encoded),), mask_to_rle(mask)) if encoded else ((), None)
    if not parts:
        return None
    area = float(np.count_nonzero(mask))
    return Shape(label, score, shape_type, box, parts, segmentation, area)


def box_to_pixels(box, width: int, height: int) -> list[float]:
    """Normalized [ymin, xmin, ymax, xmax] → pixel [xtl, ytl, xbr, ybr], clipped to the frame."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    xtl, xbr = (round(min(max(v * width, 0.0), width), 2) for v in (xmin, xmax))
    ytl, ybr = (round(min(max(v * height, 0.0), height), 2) for v in (ymin, ymax))
    return [xtl, ytl, xbr, ybr]


def box_polygon(points: list[float]) -> list[float]:
    xtl, ytl, xbr, ybr = points
    return [xtl, ytl, xbr, ytl, xbr, ybr, xtl, ybr]


def box_mask_points(points: list[float]) -> list[float]:
    """A CVAT mask filling the pixels the box touches."""
    xtl, ytl, xbr, ybr = points
    left, top = int(np.floor(xtl)), int(np.floor(ytl))
    right, bottom = max(int(np.ceil(xbr)) - 1, left), max(int(np.ceil(ybr)) - 1, top)
    return [0.0, float((right - left + 1) * (bottom - top + 1)), left, top, right, bottom]


def mask_points(mask: np.ndarray) -> list[float] | None:
    """CVAT's mask points for a full-frame 0/1 mask; None when it is empty."""
    bitmap = np.asarray(mask).astype(bool)
    if not bitmap.any():
        return None
    return [float(v) for v in encode_mask(bitmap)]


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """One polygon per connected part (8-connected) of a full-frame 0/1 mask, biggest first.

    The outline follows the pixel edges exactly (traced on the mask upsampled ×2, whose boundary
    pixels map back to pixel corners), then is simplified within POLYGON_TOLERANCE. Holes are
    filled. Parts under MIN_PART_PIXELS pixels are dropped unless no other part is left.
    """
    bitmap = np.asarray(mask).astype(bool)
    ys, xs = np.nonzero(bitmap)
    if not len(xs):
        return []
    left, top = int(xs.min()), int(ys.min())
    crop = bitmap[top : ys.max() + 1, left : xs.max() + 1].astype(np.uint8)
    upsampled = np.pad(np.kron(crop, np.ones((2, 2), np.uint8)), 1)
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    parts = []
    for contour in contours:
        # Sub-pixel j (j + 1 once padded) lies in pixel j // 2: an even j is on the pixel's
        # left/top edge, corner j // 2; an odd j on its right/bottom edge, corner j // 2 + 1.
        corners = contour.reshape(-1, 2) // 2  # (j + 1) // 2
        corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]
        if len(corners) < 3:
            continue
        area = abs(cv2.contourArea(corners.astype(np.float32)))
        simplified = cv2.approxPolyDP(corners.reshape(-1, 1, 2), POLYGON_TOLERANCE, True)
        if len(simplified) >= 3:
            corners = simplified.reshape(-1, 2)
        polygon = (corners + [left, top]).astype(float).ravel().tolist()
        parts.append((area, polygon))
    parts.sort(key=lambda part: -part[0])
    kept = [polygon for area, polygon in parts if area >= MIN_PART_PIXELS]
    return kept or [polygon for _, polygon in parts[:1]]


def resized_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """The mask at the frame size CVAT knows (nearest neighbour) when the image differs."""
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
