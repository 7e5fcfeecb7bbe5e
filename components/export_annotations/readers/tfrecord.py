"""TFRecord 1.0: the legacy TF Object Detection API form CVAT exports (`<subset>.tfrecord` and
`label_map.pbtxt`); `*.record` files (the TF OD API tutorials' name) are read too.

Each tf.train.Example is one image: `image/encoded` is written, unchanged, into a fresh temporary
folder (the export itself is never written to; the folder goes away with the builder, after
`build` has linked or copied the files into the Dataset). Boxes (`image/object/bbox/*`,
normalized) are scaled by `image/width` and `image/height` (by the decoded image when absent);
masks (`image/object/mask`, PNGs or 0/1 floats) are kept; `is_crowd` becomes iscrowd and
`difficult`, `truncated`, `group_of` and `view` (as `pose`) attributes.

Classes: an object's `class/text` names it; without one its `class/label` is looked up in the
label map (`label_map.pbtxt`, else the only *.pbtxt beside the records; ids may start at 0 or
have gaps). The TF OD API's ids start at 1 and 0 is background, so a label 0 that neither the text
nor the map names is refused, with the record's index; so is a label the map lacks. The subset is
the record file's name without its suffix.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
import weakref
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ...common.image_file import ImageFileError, probe_image
from ...common.label_map import LabelMapError, parse_pbtxt_items
from ...common.report import Report
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder
from .text import read_text

FORMATS = ("TFRecord 1.0",)

RECORD_SUFFIXES = (".tfrecord", ".record")
LABEL_MAP_FILE = "label_map.pbtxt"
SUFFIX_OF_FORMAT = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "bmp": ".bmp", "gif": ".gif"}
BOX_KEYS = tuple(f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax"))


def detect(root: Path) -> list[str]:
    return list(FORMATS) if _record_files(Path(root)) else []


def _record_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*") if p.suffix in RECORD_SUFFIXES and p.is_file())


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    import tensorflow as tf  # only this reader needs it, and it is slow to import

    root = Path(root)
    records = _record_files(root)
    if not records:
        raise ValueError(f"{root}: no *.tfrecord or *.record files: not a TFRecord export")
    label_map = _label_map(root, builder.report)
    for class_id in sorted(label_map):
        builder.category(label_map[class_id])
    scratch = _scratch_dir(builder)
    for number, path in enumerate(records):
        location = path.relative_to(root).as_posix()
        try:
            for index, raw in enumerate(tf.data.TFRecordDataset(str(path))):
                where = f"{location} record {index}"
                example = _parse(tf, raw.numpy(), where, builder.report)
                if example is not None:
                    folder = scratch / f"{number}_{path.stem}" / f"{index:06d}"
                    _read_example(example, index, path.stem, folder, label_map, where, builder)
        except tf.errors.OpError as e:
            builder.report.refused("tfrecord-unreadable", f"cannot read it: {e.message}", location)


def _scratch_dir(builder: DatasetBuilder) -> Path:
    path = Path(tempfile.mkdtemp(prefix="cvat-kfp-tfrecord-"))
    weakref.finalize(builder, shutil.rmtree, path, ignore_errors=True)
    return path


def _label_map(root: Path, report: Report) -> dict[int, str]:
    """{id: name} from the label map, as given (0 and gaps allowed); {} without one."""
    path = root / LABEL_MAP_FILE
    if not path.is_file():
        found = sorted(root.glob("*.pbtxt"))
        if len(found) != 1:
            return {}
        path = found[0]
    source = path.relative_to(root).as_posix()
    try:
        items = parse_pbtxt_items(read_text(path, source), source)
    except LabelMapError as e:
        raise ValueError(str(e)) from None
    label_map: dict[int, str] = {}
    for item in items:
        class_id, name = item.get("id"), str(item.get("name") or item.get("display_name") or "")
        if not isinstance(class_id, int) or not name.strip() or class_id in label_map:
            raise ValueError(f"{source}: item {item} needs a unique integer id and a name")
        label_map[class_id] = name.strip()
    if 0 in label_map:
        report.note(
            "label-map-zero",
            f"id 0 (background in the TF Object Detection API) is {label_map[0]!r} here: "
            "objects labelled 0 are read as that class",
            source,
        )
    return label_map


def _parse(tf, data: bytes, where: str, report: Report):
    """The record's features, or None (refused) when it is no tf.train.Example."""
    try:
        return tf.train.Example.FromString(data).features.feature
    except Exception as e:  # protobuf's DecodeError
        report.refused("tfrecord-example-malformed", f"not a tf.train.Example ({e})", where)
        return None


def _read_example(features, index, subset, folder: Path, label_map, where, builder) -> None:
    report = builder.report
    encoded = _first(features, "image/encoded", b"")
    if not isinstance(encoded, bytes) or not encoded:
        report.refused("image-missing", "the record holds no image/encoded bytes", where)
        return
    file_name = _file_name(features, subset, index)
    source = folder / (PurePosixPath(file_name).name or "image")
    folder.mkdir(parents=True)
    source.write_bytes(encoded)
    width, height = _size(features, "image/width"), _size(features, "image/height")
    declared = (width, height) if width and height else None
    image_id = builder.add_image(
        source,
        file_name,
        width=width,
        height=height,
        subset=subset,
        location=f"{where} ({file_name})",
    )
    objects = _objects(features, label_map, where, report)
    if not objects:
        return
    size = declared or _displayed_size(source, encoded)
    if size is None:
        report.skipped(
            "objects-without-image",
            f"{len(objects)} object(s) skipped: the image does not decode and gives no size",
            where,
        )
        return
    for obj in objects:
        _add_object(builder, image_id, obj, size, where)


def _values(features, key: str) -> list:
    if key not in features:
        return []
    feature = features[key]
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


def _first(features, key: str, default):
    values = _values(features, key)
    return values[0] if values else default


def _text(value) -> str:
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value)


def _size(features, key: str) -> int | None:
    value = _first(features, key, 0)
    return value if isinstance(value, int) and value > 0 else None


def _file_name(features, subset: str, index: int) -> str:
    """image/filename when it is a relative path that stays inside the Dataset's images/, else
    `<subset>_<index>.<format>`."""
    try:
        return reader_relative_path(_text(_first(features, "image/filename", b""))).as_posix()
    except ValueError:
        suffix = SUFFIX_OF_FORMAT.get(_text(_first(features, "image/format", b"")).lower(), ".jpg")
        return f"{subset}_{index:06d}{suffix}"


def _displayed_size(path: Path, data: bytes) -> tuple[int, int] | None:
    try:
        return probe_image(path, data).displayed_size
    except ImageFileError:
        return None


def _objects(features, label_map: dict[int, str], where: str, report: Report) -> list[dict]:
    """One dict per object; [] with a refusal when the record's object lists disagree."""
    boxes = [_values(features, key) for key in BOX_KEYS]
    count = len(boxes[0])
    columns = {
        "label": _values(features, "image/object/class/label"),
        "text": _values(features, "image/object/class/text"),
        "mask": _values(features, "image/object/mask"),
        "is_crowd": _values(features, "image/object/is_crowd"),
        "difficult": _values(features, "image/object/difficult"),
        "truncated": _values(features, "image/object/truncated"),
        "group_of": _values(features, "image/object/group_of"),
        "view": _values(features, "image/object/view"),
    }
    lengths = {key: len(v) for key, v in zip(BOX_KEYS, boxes)}
    lengths.update({key: len(v) for key, v in columns.items() if v and key != "mask"})
    if len(set(lengths.values())) > 1:
        report.refused(
            "tfrecord-objects-malformed", f"object lists differ in length: {lengths}", where
        )
        return []
    objects = []
    for k in range(count):
        obj = {key: values[k] for key, values in columns.items() if values and key != "mask"}
        obj["box"] = tuple(float(b[k]) for b in boxes)
        obj["index"] = k
        obj["name"] = _class_name(obj, label_map, f"{where} object {k}", report)
        if obj["name"] is not None:
            objects.append(obj)
    _attach_masks(objects, columns["mask"], count, features, where, report)
    return objects


def _class_name(obj: dict, label_map: dict[int, str], where: str, report: Report) -> str | None:
    text, label = _text(obj.get("text", b"")), obj.get("label")
    mapped = label_map.get(label)
    if text:
        if mapped is not None and mapped != text:
            report.note(
                "class-text-differs",
                f"class/text {text!r} but the label map's id {label} is {mapped!r}: the text wins",
                where,
            )
        return text
    if mapped is not None:
        return mapped
    if label == 0:
        reason = "label 0 is background in the TF Object Detection API (ids start at 1)"
    elif label is None:
        reason = "the object has no class/label"
    else:
        reason = f"label {label} is not in the label map {sorted(label_map)}"
    report.refused("class-unknown", f"{reason}, and it has no class/text to name its class", where)
    return None


def _attach_masks(objects, masks: list, count: int, features, where, report: Report) -> None:
    """Decode image/object/mask (one PNG per object, or count*height*width 0/1 floats)."""
    if not masks:
        return
    if isinstance(masks[0], bytes) and len(masks) == count:
        try:
            decoded = [np.asarray(Image.open(io.BytesIO(m)).convert("L")) > 0 for m in masks]
        except Exception as e:  # PIL raises many kinds for a corrupt PNG
            report.refused("mask-malformed", f"a mask does not decode ({e})", where)
            objects.clear()
            return
    elif not isinstance(masks[0], bytes):
        height, width = _first(features, "image/height", 0), _first(features, "image/width", 0)
        if len(masks) != count * height * width:
            report.refused(
                "mask-malformed",
                f"{len(masks)} mask values for {count} object(s) of {width}x{height}",
                where,
            )
            objects.clear()
            return
        decoded = list(np.asarray(masks, np.float32).reshape(count, height, width) > 0.5)
    else:
        report.refused("mask-malformed", f"{len(masks)} masks for {count} objects", where)
        objects.clear()
        return
    for obj in objects:
        obj["mask"] = decoded[obj["index"]]


def _add_object(builder: DatasetBuilder, image_id: int, obj: dict, size, where: str) -> None:
    where = f"{where} object {obj['index']}"
    report = builder.report
    attributes = {
        key: bool(obj[key]) for key in ("difficult", "truncated", "group_of") if key in obj
    }
    if obj.get("view"):
        attributes["pose"] = _text(obj["view"])
    options = {"iscrowd": int(obj.get("is_crowd", 0)), "attributes": attributes, "location": where}
    mask = obj.get("mask")
    if mask is not None and mask.shape == (size[1], size[0]) and mask.any():
        builder.add_mask(image_id, obj["name"], mask, **options)
        return
    if mask is not None:
        report.skipped(
            "mask-unusable",
            f"its mask ({mask.shape[1]}x{mask.shape[0]}) is empty or "
            "not the image's size: the box is kept",
            where,
        )
    xmin, ymin, xmax, ymax = obj["box"]
    if not all(map(math.isfinite, obj["box"])):
        report.refused("box-malformed", f"non-finite coordinates {obj['box']}", where)
    elif xmax < xmin or ymax < ymin:
        report.skipped("box-inverted", f"xmax/ymax below xmin/ymin: {obj['box']}", where)
    else:
        width, height = size
        builder.add_box(
            image_id,
            obj["name"],
            xmin * width,
            ymin * height,
            (xmax - xmin) * width,
            (ymax - ymin) * height,
            **options,
        )
