"""TFRecord 1.0 reader: legacy TF Object Detection API records, label 0, masks, temp images."""

import csv
import gc
import io
import os
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.readers import tfrecord

from ._formats_helpers import (
    RecordingBuilder,
    build,
    entries,
    instances_per_class,
    locations,
    read,
    write,
)

LABEL_MAP = "item {\n  id: 1\n  name: 'cat'\n}\nitem {\n  id: 2\n  name: 'dog'\n}\n"


def _jpeg(size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(out, "JPEG")
    return out.getvalue()


def _feature(values) -> tf.train.Feature:
    values = list(values)
    if values and isinstance(values[0], bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if values and isinstance(values[0], float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _example(name="a.jpg", size=(40, 30), boxes=(), labels=(), texts=(), **extra) -> bytes:
    """boxes as normalized (xmin, ymin, xmax, ymax); extra: more features by key."""
    feature = {
        "image/encoded": _feature([_jpeg(size)]),
        "image/filename": _feature([name.encode()]),
        "image/format": _feature([b"jpeg"]),
        "image/width": _feature([size[0]]),
        "image/height": _feature([size[1]]),
    }
    if boxes:
        for k, key in enumerate(("xmin", "ymin", "xmax", "ymax")):
            feature[f"image/object/bbox/{key}"] = _feature(float(b[k]) for b in boxes)
    if labels:
        feature["image/object/class/label"] = _feature(labels)
    if texts:
        feature["image/object/class/text"] = _feature(t.encode() for t in texts)
    feature.update((key, _feature(values)) for key, values in extra.items())
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_records(path, *examples):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example)
    return path


def _export(root, *examples, label_map=LABEL_MAP, name="default.tfrecord"):
    _write_records(root / name, *examples)
    if label_map is not None:
        write(root / "label_map.pbtxt", label_map)
    return root


CAT_AND_DOG = _example(
    boxes=[(0.25, 0.1, 0.75, 0.5), (0, 0, 1, 1)], labels=[1, 2], texts=["cat", "dog"]
)


def test_boxes_become_pixels_and_the_label_map_orders_classes(tmp_path):
    root = _export(tmp_path / "export", CAT_AND_DOG, _example("b.jpg", (20, 20)))
    assert tfrecord.detect(root) == ["TFRecord 1.0"]
    builder = read(tfrecord, root)
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("cat", "dog")
    assert [(i["file_name"], i["width"], i["subset"]) for i in dataset.images] == [
        ("a.jpg", 40, "default"),
        ("b.jpg", 20, "default"),
    ]
    assert [a["bbox"] for a in dataset.annotations] == [[10, 3, 20, 12], [0, 0, 40, 30]]
    assert builder.report.entries == []


def test_the_export_is_not_written_to_and_the_temporary_images_go_with_the_builder(tmp_path):
    root = _export(tmp_path / "export", CAT_AND_DOG)
    before = sorted(os.listdir(root))
    builder = read(tfrecord, root, RecordingBuilder())
    (source,) = builder.sources
    scratch = source.parents[2]
    dataset = build(builder, tmp_path)

    assert sorted(os.listdir(root)) == before and not source.is_relative_to(root)
    assert (dataset.root / "images/a.jpg").read_bytes() == source.read_bytes()
    del builder
    gc.collect()
    assert not scratch.exists() and (dataset.root / "images/a.jpg").is_file()


def test_label_0_is_named_by_its_text_or_refused_with_the_record(tmp_path):
    named = _example(boxes=[(0, 0, 0.5, 0.5)], labels=[0], texts=["cat"])
    unnamed = _example("b.jpg", boxes=[(0, 0, 0.5, 0.5)] * 2, labels=[1, 0], texts=["cat", ""])
    builder = read(tfrecord, _export(tmp_path / "export", named, unnamed))

    (refused,) = builder.report.refusals
    assert refused.location == "default.tfrecord record 1 object 1"
    assert "label 0 is background" in refused.message
    assert locations(builder, "class-text-differs") == []  # no map entry for 0: nothing differs
    with pytest.raises(ReportError, match="record 1 object 1"):
        build(builder, tmp_path)


def test_a_zero_based_label_map_names_label_0(tmp_path):
    label_map = "item { id: 0 name: 'cat' }\nitem { id: 1 name: 'dog' }\n"
    example = _example(boxes=[(0, 0, 0.5, 0.5)] * 2, labels=[0, 1])
    builder = read(tfrecord, _export(tmp_path / "export", example, label_map=label_map))
    dataset = build(builder, tmp_path)
    assert instances_per_class(dataset) == {"cat": 1, "dog": 1}
    assert locations(builder, "label-map-zero") == ["label_map.pbtxt"]


def test_a_label_map_with_another_name_is_found_beside_the_records(tmp_path):
    example = _example(boxes=[(0, 0, 0.5, 0.5)], labels=[2])
    root = _export(tmp_path / "export", example, label_map=None)
    write(root / "object-detection.pbtxt", LABEL_MAP)
    dataset = build(read(tfrecord, root), tmp_path)
    assert dataset.label_map.names == ("cat", "dog") and instances_per_class(dataset) == {"dog": 1}


def test_unknown_labels_without_text_are_refused_and_text_disagreements_noted(tmp_path):
    example = _example(boxes=[(0, 0, 0.5, 0.5)] * 2, labels=[7, 2], texts=["", "cat"])
    builder = read(tfrecord, _export(tmp_path / "export", example))
    assert [(e.code, e.location) for e in builder.report.entries] == [
        ("class-unknown", "default.tfrecord record 0 object 0"),
        ("class-text-differs", "default.tfrecord record 0 object 1"),
    ]


def test_masks_crowds_and_attributes(tmp_path):
    masks = np.zeros((2, 30, 40), np.uint8)
    masks[0, 5:10, 10:20] = 1  # the dog's mask stays empty: its box is kept
    pngs = []
    for mask in masks:
        pngs.append(io.BytesIO())
        Image.fromarray(mask).save(pngs[-1], "PNG")
    example = _example(
        boxes=[(0.25, 1 / 6, 0.5, 1 / 3), (0, 0, 0.5, 0.5)],
        labels=[1, 2],
        **{
            "image/object/mask": [p.getvalue() for p in pngs],
            "image/object/is_crowd": [0, 1],
            "image/object/difficult": [1, 0],
        },
    )
    builder = read(tfrecord, _export(tmp_path / "export", example))
    dataset = build(builder, tmp_path)

    cat, dog = dataset.annotations
    assert isinstance(cat["segmentation"], dict) and cat["area"] == 50
    assert cat["attributes"] == {"difficult": True} and cat["iscrowd"] == 0
    assert dog["iscrowd"] == 1 and dog["bbox"] == [0, 0, 20, 15] and dog["segmentation"] == []
    assert locations(builder, "mask-unusable") == ["default.tfrecord record 0 object 1"]


def test_float_masks(tmp_path):
    mask = np.zeros((1, 30, 40), np.float32)
    mask[0, :10, :10] = 1.0
    example = _example(
        boxes=[(0, 0, 0.25, 1 / 3)], labels=[1], **{"image/object/mask": mask.ravel().tolist()}
    )
    dataset = build(read(tfrecord, _export(tmp_path / "export", example)), tmp_path)
    assert dataset.annotations[0]["area"] == 100


def test_mismatched_object_lists_and_missing_image_bytes_are_refused(tmp_path):
    lopsided = _example(boxes=[(0, 0, 0.5, 0.5)], labels=[1, 2])
    no_image = _example("b.jpg", **{"image/encoded": [b""]})
    builder = read(tfrecord, _export(tmp_path / "export", lopsided, no_image))
    assert [(e.code, e.location) for e in builder.report.refusals] == [
        ("tfrecord-objects-malformed", "default.tfrecord record 0"),
        ("image-missing", "default.tfrecord record 1"),
    ]


def test_a_record_without_size_is_sized_by_its_image(tmp_path):
    example = _example(boxes=[(0, 0, 0.5, 0.5)], labels=[1])
    parsed = tf.train.Example.FromString(example)
    del parsed.features.feature["image/width"], parsed.features.feature["image/height"]
    dataset = build(read(tfrecord, _export(tmp_path / "e", parsed.SerializeToString())), tmp_path)
    assert dataset.annotations[0]["bbox"] == [0, 0, 20, 15]


def test_a_corrupt_record_file_is_refused(tmp_path):
    root = _export(tmp_path / "export", CAT_AND_DOG)
    data = (root / "default.tfrecord").read_bytes()
    (root / "default.tfrecord").write_bytes(data[:-20])
    builder = read(tfrecord, root)
    assert locations(builder, "tfrecord-unreadable") == ["default.tfrecord"]


# --- conformance ----------------------------------------------------------------------------

SPEC = {
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
}


def _source(path):
    """[(file name, [class text], [label])] parsed with TF's own parser, not the reader's."""
    out = []
    for raw in tf.data.TFRecordDataset(str(path)):
        example = tf.io.parse_single_example(raw, SPEC)
        texts = [t.decode() for t in tf.sparse.to_dense(example["image/object/class/text"]).numpy()]
        labels = tf.sparse.to_dense(example["image/object/class/label"]).numpy().tolist()
        out.append((example["image/filename"].numpy().decode(), texts, labels))
    return out


def test_raccoon(shared_test_data, tmp_path):
    root = shared_test_data / "raccoon_tfod/data"  # test.record; no label map: class/text
    source = _source(root / "test.record")
    with open(root / "test_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tfrecord.detect(root) == ["TFRecord 1.0"]
    builder = read(tfrecord, root)
    dataset = build(builder, tmp_path)

    assert len(dataset.images) == len(source) == 40
    assert instances_per_class(dataset) == Counter(t for _, texts, _ in source for t in texts)
    assert len(dataset.annotations) == len(rows) == 44 and dataset.label_map.names == ("raccoon",)
    assert {i["subset"] for i in dataset.images} == {"test"}
    assert builder.report.entries == []
    pixels = {
        (r["filename"], *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))) for r in rows
    }
    by_image = dataset.annotations_by_image()
    for image in dataset.images:  # the CSV the records were made from, in pixels
        for x, y, w, h in (a["bbox"] for a in by_image[image["id"]]):
            assert any(
                name == image["file_name"]
                and max(map(abs, (x - x0, y - y0, x + w - x1, y + h - y1))) < 0.01
                for name, x0, y0, x1, y1 in pixels
            )


def test_cvat_tf_detection_api_fixture(shared_test_data, tmp_path):
    root = shared_test_data / "datumaro_cvat-ai/tests/assets/tf_detection_api_dataset"
    source = {p.stem: _source(p) for p in sorted(root.glob("*.tfrecord"))}
    label_0 = [
        (subset, index, k)
        for subset, records in source.items()
        for index, (_, texts, labels) in enumerate(records)
        for k, (text, label) in enumerate(zip(texts, labels))
        if label == 0 and not text
    ]
    assert label_0 == [("train", 0, 2)]  # the fixture's box without a class
    builder = read(tfrecord, root, RecordingBuilder())
    assert [e.location for e in builder.report.refusals] == ["train.tfrecord record 0 object 2"]
    with pytest.raises(ReportError):
        build(builder, tmp_path)

    named = [t for records in source.values() for _, texts, _ in records for t in texts if t]
    assert sorted(label for label, _ in builder.shapes) == sorted(named)  # the rest: all read
    assert len(builder.sources) == sum(map(len, source.values())) == 3
    assert builder.class_names == [f"label_{i}" for i in range(10)]


def test_cvat_fixture_without_the_unlabelled_box(shared_test_data, tmp_path):
    fixture = shared_test_data / "datumaro_cvat-ai/tests/assets/tf_detection_api_dataset"
    root = tmp_path / "export"
    root.mkdir()
    for name in ("val.tfrecord", "test.tfrecord", "label_map.pbtxt"):
        (root / name).symlink_to(fixture / name)
    builder = DatasetBuilder()
    dataset = build(read(tfrecord, root, builder), tmp_path)
    assert [(i["file_name"], i["subset"], i["width"]) for i in dataset.images] == [
        ("3.jpg", "test", 4),
        ("2.jpg", "val", 8),
    ]
    assert instances_per_class(dataset) == {"label_3": 1}
    assert dataset.annotations[0]["bbox"] == [1, 2, 4, 2]
    assert entries(builder, "class-unknown") == []
