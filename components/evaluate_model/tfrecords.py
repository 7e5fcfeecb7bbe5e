"""The test split's TFRecords (convert-to-tfrecord output) as COCO ground truth and images.

The directory and its records are read through the TFRecords contract (common/tfrecords.py);
boxes are normalized there and become COCO pixel boxes here, each instance's 0/1 PNG mask a
compressed RLE. Images stay encoded until a caller decodes one (`decode_image`): with the decode
training's input pipeline runs (no EXIF rotation: convert-to-tfrecord already applied it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..common import tfrecords
from ..common.dataset import mask_to_rle
from ..common.label_map import LabelMap


class SplitError(ValueError):
    """A test split that cannot be evaluated on: missing files, unreadable records."""


@dataclass
class SplitImage:
    id: int
    file_name: str
    width: int
    height: int
    encoded: bytes


@dataclass
class Split:
    directory: Path
    label_map: LabelMap
    images: list[SplitImage]
    ground_truth: dict  # COCO instances: images, annotations (pixels; RLE masks), categories
    has_masks: bool

    @property
    def num_objects(self) -> int:
        return sum(1 for ann in self.ground_truth["annotations"] if not ann["iscrowd"])


def decode_image(image: SplitImage) -> np.ndarray:
    """uint8 RGB [H, W, 3], the pixels training decodes from the same record."""
    where = f"image {image.file_name} (id {image.id})"
    try:
        array = tfrecords.decode_image(image.encoded, where)
    except tfrecords.TFRecordsError as e:
        raise SplitError(str(e)) from None
    if array.shape[:2] != (image.height, image.width):
        raise SplitError(
            f"{where} is {array.shape[1]}x{array.shape[0]} "
            f"but its record says {image.width}x{image.height}"
        )
    return array


def load_split(directory: str | Path) -> Split:
    """Read every record of a convert-to-tfrecord directory."""
    try:
        split = tfrecords.read_tfrecords(directory)
        label_map = split.label_map
        images, annotations = [], []
        seen_ids: dict[int, str] = {}
        for where, record in split.records():
            example = tfrecords.parse_example(record, where)
            image, anns = _ground_truth(example, where, label_map, len(annotations))
            if image.id in seen_ids:
                raise SplitError(
                    f"{where}: {tfrecords.SOURCE_ID} {image.id} is also the id of "
                    f"{seen_ids[image.id]}; each test image needs its own numeric id"
                )
            seen_ids[image.id] = image.file_name
            images.append(image)
            annotations += anns
    except tfrecords.TFRecordsError as e:
        raise SplitError(f"the test split: {e}") from None
    if not images:
        raise SplitError(f"the test TFRecords in {split.directory} hold no example")
    has_masks = bool(annotations) and all("segmentation" in ann for ann in annotations)
    ground_truth = {
        "info": {"description": f"test split {split.directory}"},
        "images": [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in images
        ],
        "annotations": annotations,
        "categories": label_map.to_categories(),
    }
    return Split(split.directory, label_map, images, ground_truth, has_masks)


def _ground_truth(example: tfrecords.ExampleRecord, where, label_map: LabelMap, first_ann_index):
    """The example as a SplitImage and its COCO annotations (pixel boxes, RLE masks)."""
    try:
        image_id = int(example.source_id)
    except ValueError:
        raise SplitError(
            f"{where}: {tfrecords.SOURCE_ID} {example.source_id!r} is not numeric; convert the "
            "split with convert-to-tfrecord, which writes numeric ids"
        ) from None
    height, width = example.height, example.width
    where = f"{where} ({example.filename})"
    image = SplitImage(image_id, example.filename, width, height, example.encoded)
    annotations = []
    for i in range(len(example)):
        class_id = int(example.labels[i])
        if not 1 <= class_id <= len(label_map):
            raise SplitError(
                f"{where}: object {i} has class label {class_id}, outside the label map's "
                f"1..{len(label_map)}"
            )
        ymin, xmin, ymax, xmax = (float(v) for v in example.boxes[i])
        x0, x1 = xmin * width, xmax * width
        y0, y1 = ymin * height, ymax * height
        ann = {
            "id": first_ann_index + len(annotations) + 1,
            "image_id": image_id,
            "category_id": class_id,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "iscrowd": int(example.is_crowd[i]),
        }
        if example.masks:
            mask = _decode_mask(example.masks[i], height, width, f"{where} object {i}")
            ann["segmentation"] = mask_to_rle(mask)
            area = float(mask_utils.area(ann["segmentation"]))
        else:
            area = (x1 - x0) * (y1 - y0)
        given = example.areas
        ann["area"] = float(given[i]) if given is not None and given[i] > 0 else area
        annotations.append(ann)
    return image, annotations


def _decode_mask(png: bytes, height: int, width: int, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(png)) as picture:
            mask = np.asarray(picture)
    except Exception as e:
        raise SplitError(f"{where}: its mask PNG cannot be decoded: {e}") from None
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != (height, width):
        raise SplitError(f"{where}: its mask is {mask.shape[::-1]}, the image {width}x{height}")
    return (mask > 0).astype(np.uint8)
