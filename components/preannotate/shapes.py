"""Detections as CVAT shapes: boxes as rectangles, masks as polygons or CVAT masks.

CVAT coordinates are pixel corners: pixel (x, y) covers [x, x + 1) × [y, y + 1). A rectangle's
points are [xtl, ytl, xbr, ybr]; a polygon's [x1, y1, x2, y2, ...]; a mask's are CVAT's RLE over
the mask's tight box, row by row, starting with a run of 0s, then [left, top, right, bottom] with
right and bottom inclusive (cvat_sdk.masks.encode_mask, which CVAT's "CVAT for images" dumper
turns into rle/left/top/width = right - left + 1/height).
"""

from __future__ import annotations

import cv2
import numpy as np
from cvat_sdk.masks import encode_mask

POLYGON_TOLERANCE = 0.5  # px: Douglas-Peucker simplification of the exact pixel outline
MIN_PART_PIXELS = 4  # smaller parts of a mask are dropped unless nothing else is left


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
