"""The TFRecords contract: what convert-to-tfrecord writes, and the one reader of it.

A TFRecords directory (the TFRecords artifact of convert-to-tfrecord) holds:

    <split>-NNNNN-of-MMMMM.tfrecord   the shards: one tf.train.Example per image (FEATURE_KINDS)
    label_map.pbtxt/.csv/.json        the classes, ids 1..N
    report.json/.md/.html             what the conversion clipped, converted, skipped
    manifest.json                     written last: a directory without one is unfinished

Examples carry the TF Object Detection API keys, which Model Garden's TfExampleDecoder reads in
training. Everything else reads them here: `read_tfrecords` (training and evaluation),
`read_manifest` (the engine's checks), `parse_example` (evaluation's ground truth) and
`decode_image`, the image decode TfExampleDecoder runs, so that a model is evaluated on the
pixels it was trained on. The writer (convert-to-tfrecord) builds its records without TensorFlow;
the readers import it when they read records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .label_map import JSON_FILE, LabelMap, LabelMapError

MANIFEST_FILE = "manifest.json"

# The kinds of tf.train.Feature lists, as tf_example.encode_example names them.
BYTES, FLOAT, INT64 = "bytes", "float", "int64"
KIND_LISTS = {BYTES: "bytes_list", FLOAT: "float_list", INT64: "int64_list"}

HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
SOURCE_ID = "image/source_id"
SHA256 = "image/key/sha256"
ENCODED = "image/encoded"
FORMAT = "image/format"
XMIN = "image/object/bbox/xmin"
XMAX = "image/object/bbox/xmax"
YMIN = "image/object/bbox/ymin"
YMAX = "image/object/bbox/ymax"
CLASS_TEXT = "image/object/class/text"
CLASS_LABEL = "image/object/class/label"
IS_CROWD = "image/object/is_crowd"
AREA = "image/object/area"
MASK = "image/object/mask"  # one 0/1 PNG per object

FEATURE_KINDS = {
    HEIGHT: INT64,
    WIDTH: INT64,
    FILENAME: BYTES,
    SOURCE_ID: BYTES,
    SHA256: BYTES,
    ENCODED: BYTES,
    FORMAT: BYTES,
    XMIN: FLOAT,
    XMAX: FLOAT,
    YMIN: FLOAT,
    YMAX: FLOAT,
    CLASS_TEXT: BYTES,
    CLASS_LABEL: INT64,
    IS_CROWD: INT64,
    AREA: FLOAT,
    MASK: BYTES,
}
OBJECT_KEYS = tuple(key for key in FEATURE_KINDS if key.startswith("image/object/"))
BOX_KEYS = (YMIN, XMIN, YMAX, XMAX)  # the order of Model Garden's groundtruth_boxes

# manifest.json: the keys every reader relies on, and their types.
MANIFEST_FIELDS = {
    "split": str,
    "file_pattern": str,
    "num_shards": int,
    "num_examples": int,
    "num_instances": int,
    "has_masks": bool,
    "class_names": list,
}


class TFRecordsError(ValueError):
    """A TFRecords directory or record that breaks the contract: what is wrong, and where."""


@dataclass(frozen=True)
class TFRecordsDir:
    """A complete convert-to-tfrecord output: its manifest, label map and shards, checked."""

    directory: Path
    manifest: dict[str, Any]
    label_map: LabelMap
    shards: tuple[Path, ...]

    @property
    def pattern(self) -> str:
        """The shards' path pattern, as a data config's input_path takes it."""
        return str(self.directory / self.manifest["file_pattern"])

    @property
    def has_masks(self) -> bool:
        return self.manifest["has_masks"]

    def records(self) -> Iterator[tuple[str, bytes]]:
        """Every serialized example, shard by shard, with where it is ("record 3 of ...")."""
        for shard in self.shards:
            for index, record in enumerate(read_records(shard)):
                yield f"record {index} of {shard.name}", record


@dataclass(frozen=True)
class ExampleRecord:
    """One image's tf.Example, its object lists checked to be one value per object."""

    height: int
    width: int
    source_id: str
    filename: str  # the source id where the record has none
    encoded: bytes
    boxes: np.ndarray  # float32 [N, 4], normalized ymin, xmin, ymax, xmax
    labels: np.ndarray  # int64 [N], 1..num_classes
    is_crowd: np.ndarray  # int64 [N], zeros where the record has none
    areas: np.ndarray | None  # float32 [N] pixels; None where the record has none
    masks: list[bytes]  # one PNG per object, or none

    def __len__(self) -> int:
        return len(self.labels)


# --- the directory --------------------------------------------------------------------------


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write `manifest` as the directory's manifest.json, atomically: it marks the output done."""
    missing = [key for key in MANIFEST_FIELDS if key not in manifest]
    if missing:
        raise ValueError(f"a TFRecords manifest needs {missing} too; got {sorted(manifest)}")
    path = Path(directory) / MANIFEST_FILE
    temp = path.with_name(f".{MANIFEST_FILE}.tmp")
    temp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return path


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a convert-to-tfrecord output, its fields checked (MANIFEST_FIELDS)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TFRecordsError(f"the TFRecords directory {directory} does not exist")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise TFRecordsError(
            f"{directory} has no {MANIFEST_FILE}: pass the TFRecords artifact of "
            "convert-to-tfrecord (its manifest is written last, so an unfinished conversion has "
            "none)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TFRecordsError(f"{path} cannot be read as JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise TFRecordsError(f"{path} holds a {type(manifest).__name__}, not a JSON object")
    for key, kind in MANIFEST_FIELDS.items():
        value = manifest.get(key)
        # bool is an int to Python; a count must not be one
        wrong_bool = kind is int and isinstance(value, bool)
        if key not in manifest or not isinstance(value, kind) or wrong_bool:
            raise TFRecordsError(
                f"{path}: {key} should be a {kind.__name__}, found {value!r}; the file is not "
                "convert-to-tfrecord's manifest, or was edited. Convert the split again."
            )
    return manifest


def read_tfrecords(directory: str | os.PathLike) -> TFRecordsDir:
    """A convert-to-tfrecord output, checked whole before any record is read: its manifest, its
    label map (the manifest's classes) and every shard the manifest counts."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    label_map_path = directory / JSON_FILE
    try:
        label_map = LabelMap.load(label_map_path)
    except (OSError, LabelMapError) as e:
        raise TFRecordsError(f"{directory} has no usable label map ({JSON_FILE}): {e}") from None
    if manifest["class_names"] != list(label_map.names):
        raise TFRecordsError(
            f"{directory}: {MANIFEST_FILE} lists the classes {manifest['class_names']}, "
            f"{JSON_FILE} {list(label_map.names)}; the directory mixes two conversions. "
            "Convert the split again into an empty directory."
        )
    pattern = manifest["file_pattern"]
    shards = tuple(sorted(directory.glob(pattern)))
    if len(shards) != manifest["num_shards"]:
        raise TFRecordsError(
            f"{directory / MANIFEST_FILE} lists {manifest['num_shards']} shard(s) matching "
            f"{pattern}, found {len(shards)}: the directory is incomplete"
        )
    return TFRecordsDir(directory, manifest, label_map, shards)


def read_records(path: Path) -> Iterator[bytes]:
    """The serialized records of one shard."""
    import tensorflow as tf

    try:
        yield from tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    except tf.errors.DataLossError as e:
        raise TFRecordsError(f"{path} is corrupt or truncated: {e.message}") from None


# --- one record -----------------------------------------------------------------------------


def parse_example(record: bytes, where: str) -> ExampleRecord:
    """Read one serialized tf.Example strictly: each key of its FEATURE_KINDS kind, the image
    keys one value each, the object keys one value per object (or, but for boxes and labels,
    none)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example.example_pb2 import Example

    try:
        features = Example.FromString(record).features.feature
    except DecodeError as e:
        raise TFRecordsError(f"{where}: not a tf.train.Example: {e}") from None

    def values(key: str) -> list:
        if key not in features:
            return []
        kind = features[key].WhichOneof("kind")
        expected = KIND_LISTS[FEATURE_KINDS[key]]
        if kind not in (None, expected):
            raise TFRecordsError(f"{where}: {key} holds a {kind}, the contract a {expected}")
        return list(getattr(features[key], expected).value)

    def scalar(key: str):
        found = values(key)
        if len(found) != 1:
            raise TFRecordsError(f"{where}: {key} should hold one value, holds {len(found)}")
        return found[0]

    height, width = int(scalar(HEIGHT)), int(scalar(WIDTH))
    source_id = scalar(SOURCE_ID).decode("utf-8")
    filename = (values(FILENAME) or [source_id.encode("utf-8")])[0].decode("utf-8")
    where = f"{where} ({filename})"
    encoded = scalar(ENCODED)

    labels = values(CLASS_LABEL)
    count = len(labels)
    columns = {key: values(key) for key in (*BOX_KEYS, IS_CROWD, AREA, MASK)}
    for key, found in columns.items():
        if len(found) != count and (key in BOX_KEYS or found):
            raise TFRecordsError(f"{where}: {len(found)} {key} value(s) for {count} object labels")
    return ExampleRecord(
        height=height,
        width=width,
        source_id=source_id,
        filename=filename,
        encoded=encoded,
        boxes=np.array([columns[key] for key in BOX_KEYS], np.float32).T.reshape(count, 4),
        labels=np.array(labels, np.int64),
        is_crowd=np.array(columns[IS_CROWD] or [0] * count, np.int64),
        areas=np.array(columns[AREA], np.float32) if columns[AREA] else None,
        masks=columns[MASK],
    )


def decode_image(encoded: bytes, where: str) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the pixels Model Garden's TfExampleDecoder gives training.

    The same TensorFlow decode (`tf.io.decode_image`, 3 channels, uint8): JPEGs through
    TensorFlow's libjpeg settings, 16-bit PNGs (which convert-to-tfrecord keeps, and makes of
    16-bit TIFFs) reduced to their high byte, not clipped as PIL does. No EXIF rotation:
    convert-to-tfrecord applied it to the pixels already.
    """
    import tensorflow as tf

    try:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        raise TFRecordsError(f"{where} cannot be decoded: {e.message}") from None
    return image.numpy()
