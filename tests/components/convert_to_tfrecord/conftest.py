"""Tiny datasets and images built with Pillow, for the convert-to-tfrecord tests."""

import io
import json

import numpy as np
import pytest
from PIL import Image

CLASS_NAMES = ("cat", 'dog, "spotted"', "ёж")


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A picture whose every pixel differs from its neighbours, so a rotation shows."""
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack([xs * 255 // max(1, width - 1), ys * 255 // max(1, height - 1), (xs + ys) % 256])
    return Image.fromarray(rgb.transpose(1, 2, 0).astype(np.uint8)).convert(mode)


def encode(picture: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture()
def image_bytes():
    """image_bytes(width, height, fmt="JPEG", mode="RGB", **save_options) -> encoded bytes."""

    def make(width, height, fmt="JPEG", mode="RGB", **options):
        return encode(gradient_image(width, height, mode), fmt, **options)

    return make


@pytest.fixture()
def write_dataset():
    """write_dataset(root, images, annotations) writes a Dataset directory and returns root.

    `images` are (file_name, encoded bytes, width, height) tuples, given ids 1..N; annotations
    get ids 1..M and default category 1, iscrowd 0; categories are CLASS_NAMES.
    """

    def write(root, images, annotations=(), categories=CLASS_NAMES):
        (root / "images").mkdir(parents=True, exist_ok=True)
        coco_images = []
        for image_id, (file_name, data, width, height) in enumerate(images, start=1):
            path = root / "images" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            coco_images.append(
                {"id": image_id, "file_name": file_name, "width": width, "height": height}
            )
        coco_annotations = [
            {"id": ann_id, "category_id": 1, "iscrowd": 0, **ann}
            for ann_id, ann in enumerate(annotations, start=1)
        ]
        coco = {
            "images": coco_images,
            "annotations": coco_annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(categories, start=1)],
        }
        (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
        return root

    return write
