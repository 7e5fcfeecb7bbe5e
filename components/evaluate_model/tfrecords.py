"""The test split's TFRecords (convert-to-tfrecord output) as COCO ground truth and images.

Examples carry the TF Object Detection API keys convert-to-tfrecord writes; boxes are
normalized and become COCO pixel boxes here, each instance's 0/1 PNG mask a compressed RLE.
Images stay encoded until a caller decodes one (`decode_image`): the stored pixels, as the
training input pipeline reads them (no EXIF rotation: convert-to-tfrecord already applied it).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..common.dataset import mask_to_rle
from ..common.label_map import JSON_FILE, PBTXT_FILE, LabelMap

MANIFEST_FILE = "manifest.json"


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
    """uint8 RGB [H, W, 3]."""
    try:
        with Image.open(io.BytesIO(image.encoded)) as picture:
            array = np.asarray(picture.convert("RGB"))
    except Exception as e:  # PIL raises several types for bad data
        where = f"image {image.file_name} (id {image.id})"
        raise SplitError(f"{where} cannot be decoded: {e}") from None
    if array.shape[:2] != (image.height, image.width):
        raise SplitError(
            f"image {image.file_name} (id {image.id}) is {array.shape[1]}x{array.shape[0]} "
            f"but its record says {image.width}x{image.height}"
        )
    return array


def load_split(directory: str | Path) -> Split:
    """Read every record of a convert-to-tfrecord directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SplitError(f"test TFRecords directory {directory} does not exist")
    label_map = _load_label_map(directory)
    shards = _shard_paths(directory)
    images, annotations = [], []
    seen_ids: dict[int, str] = {}
    for shard in shards:
        for index, record in enumerate(_records(shard)):
            where = f"record {index} of {shard.name}"
            image, anns = _parse_example(record, where, label_map, len(annotations))
            if image.id in seen_ids:
                raise SplitError(
                    f"{where}: image/source_id {image.id} is also the id of "
                    f"{seen_ids[image.id]}; each test image needs its own numeric id"
                )
            seen_ids[image.id] = image.file_name
            images.append(image)
            annotations += anns
    if not images:
        raise SplitError(f"the test TFRecords in {directory} hold no example")
    has_masks = bool(annotations) and all("segmentation" in ann for ann in annotations)
    ground_truth = {
        "info": {"description": f"test split {directory}"},
        "images": [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in images
        ],
        "annotations": annotations,
        "categories": label_map.to_categories(),
    }
    return Split(directory, label_map, images, ground_truth, has_masks)


def _load_label_map(directory: Path) -> LabelMap:
    for name in (JSON_FILE, PBTXT_FILE):
        if (directory / name).is_file():
            return LabelMap.load(directory / name)
    raise SplitError(
        f"{directory} has no {JSON_FILE} or {PBTXT_FILE}: is it a convert-to-tfrecord output?"
    )


def _shard_paths(directory: Path) -> list[Path]:
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        shards = sorted(directory.glob(manifest["file_pattern"]))
        expected = int(manifest.get("num_shards", len(shards)))
        if len(shards) != expected:
            raise SplitError(
                f"{manifest_path} lists {expected} shard(s) matching {manifest['file_pattern']}, "
                f"found {len(shards)}: the directory is incomplete"
            )
    else:
        shards = sorted(directory.glob("*.tfrecord"))
    if not shards:
        raise SplitError(f"no .tfrecord shard in {directory}")
    return shards


def _records(path: Path):
    import tensorflow as tf

    try:
        yield from tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    except tf.errors.DataLossError as e:
        raise SplitError(f"{path} is corrupt or truncated: {e.message}") from None


def _parse_example(record: bytes, where: str, label_map: LabelMap, first_ann_index: int):
    from tensorflow.core.example.example_pb2 import Example

    feature = Example.FromString(record).features.feature

    def values(key: str, kind: str) -> list:
        if key not in feature:
            return []
        return list(getattr(feature[key], kind).value)

    def scalar(key: str, kind: str):
        found = values(key, kind)
        if len(found) != 1:
            raise SplitError(f"{where}: {key} should hold one value, holds {len(found)}")
        return found[0]

    height = int(scalar("image/height", "int64_list"))
    width = int(scalar("image/width", "int64_list"))
    source_id = scalar("image/source_id", "bytes_list").decode("utf-8")
    try:
        image_id = int(source_id)
    except ValueError:
        raise SplitError(
            f"{where}: image/source_id {source_id!r} is not numeric; convert the split with "
            "convert-to-tfrecord, which writes numeric ids"
        ) from None
    file_name = (values("image/filename", "bytes_list") or [source_id.encode()])[0].decode("utf-8")
    where = f"{where} ({file_name})"
    image = SplitImage(image_id, file_name, width, height, scalar("image/encoded", "bytes_list"))

    boxes = {
        side: values(f"image/object/bbox/{side}", "float_list")
        for side in ("ymin", "xmin", "ymax", "xmax")
    }
    labels = values("image/object/class/label", "int64_list")
    count = len(labels)
    crowd = values("image/object/is_crowd", "int64_list") or [0] * count
    areas = values("image/object/area", "float_list")
    masks = values("image/object/mask", "bytes_list")
    optional = {"is_crowd": crowd, "mask": masks, "area": areas}
    for key, found in [*boxes.items(), *optional.items()]:
        if len(found) != count and (key in boxes or found):
            raise SplitError(f"{where}: {len(found)} {key} value(s) for {count} object labels")
    annotations = []
    for i in range(count):
        class_id = int(labels[i])
        if not 1 <= class_id <= len(label_map):
            raise SplitError(
                f"{where}: object {i} has class label {class_id}, outside the label map's "
                f"1..{len(label_map)}"
            )
        x0, x1 = boxes["xmin"][i] * width, boxes["xmax"][i] * width
        y0, y1 = boxes["ymin"][i] * height, boxes["ymax"][i] * height
        ann = {
            "id": first_ann_index + len(annotations) + 1,
            "image_id": image_id,
            "category_id": class_id,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "iscrowd": int(crowd[i]),
        }
        if masks:
            rle = mask_to_rle(_decode_mask(masks[i], height, width, f"{where} object {i}"))
            ann["segmentation"] = rle
            area = float(mask_utils.area(rle))
        else:
            area = (x1 - x0) * (y1 - y0)
        ann["area"] = float(areas[i]) if areas and areas[i] > 0 else area
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
