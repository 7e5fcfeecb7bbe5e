"""A synthetic shapes Dataset: coloured circles, squares and triangles with polygon masks.

For tests, the demo and benchmarks, where no real data may be downloaded. Deterministic per seed.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from .dataset import IMAGES_DIR, Dataset

SHAPES = ("circle", "square", "triangle")
COLOURS = {"circle": (220, 60, 50), "square": (40, 160, 70), "triangle": (50, 90, 220)}


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[float]:
    """The outline of a shape as a flat [x1, y1, x2, y2, ...] list."""
    corners = {"circle": 24, "square": 4, "triangle": 3}[shape]
    points = []
    for k in range(corners):
        a = angle + 2 * math.pi * k / corners
        points += [round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)]
    return points


def polygon_area(polygon: list[float]) -> float:
    xs, ys = polygon[0::2], polygon[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def make_shapes_dataset(
    out_dir: str | Path,
    num_images: int = 8,
    image_size: tuple[int, int] = (128, 96),
    classes: tuple[str, ...] = SHAPES,
    max_shapes: int = 3,
    seed: int = 0,
    num_groups: int = 0,
) -> Path:
    """Write a Dataset directory of `num_images` JPEGs, each with 1..max_shapes shapes.

    `num_groups` > 0 assigns images round-robin to that many `group`s (as video frames would be).
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape class(es) {unknown}; choose from {SHAPES}")
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    width, height = image_size
    categories = [{"id": i, "name": name, "supercategory": "shape"} for i, name in
                  enumerate(classes, start=1)]  # fmt: skip
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        file_name = f"shapes_{image_id:05d}.jpg"
        background = tuple(rng.randint(150, 255) for _ in range(3))
        picture = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(picture)
        for _ in range(rng.randint(1, max_shapes)):
            category_id = rng.randint(1, len(classes))
            shape = classes[category_id - 1]
            r = rng.uniform(0.08, 0.22) * min(width, height)
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            polygon = shape_polygon(shape, cx, cy, r, rng.uniform(0, math.pi))
            draw.polygon(polygon, fill=COLOURS[shape])
            xs, ys = polygon[0::2], polygon[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(polygon_area(polygon), 2),
                "segmentation": [polygon],
                "iscrowd": 0,
            })  # fmt: skip
        picture.save(out_dir / IMAGES_DIR / file_name, quality=90)
        image = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        if num_groups:
            image["group"] = f"video_{image_id % num_groups}"
        images.append(image)
    Dataset(images, annotations, categories, root=out_dir).save(out_dir)
    return out_dir
