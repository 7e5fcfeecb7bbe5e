"""The TFRecords contract: convert-to-tfrecord's output read back by the one strict reader."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from cvat_kfp.components.common import tfrecords
from cvat_kfp.components.common.tfrecords import (
    MANIFEST_FILE,
    TFRecordsError,
    decode_image,
    parse_example,
    read_manifest,
    read_tfrecords,
    write_manifest,
)
from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord
from cvat_kfp.components.evaluate_model import tfrecords as evaluation_split

CLASSES = ("cell", "debris")
# 16-bit levels with different high bytes (0..255), many of them above 255: PIL's "I;16" to RGB
# clips those to 255, TensorFlow keeps the high byte.
DEEP_LEVELS = np.array([0, 255, 256, 1000, 4095, 32768, 40000, 65535], dtype=np.uint16)


def deep_gray(width: int, height: int) -> np.ndarray:
    """A 16-bit grayscale picture holding every DEEP_LEVELS value."""
    return np.resize(DEEP_LEVELS, (height, width)).astype(np.uint16)


def encoded(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt)
    return out.getvalue()


def write_dataset(root, images):
    """A Dataset directory (images/ and COCO annotations.json) of (file_name, bytes, w, h)
    images, each with one box of class 1."""
    (root / "images").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": []}
    for image_id, (file_name, data, width, height) in enumerate(images, start=1):
        (root / "images" / file_name).write_bytes(data)
        coco["images"].append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        box = [2.0, 3.0, width / 2, height / 2]
        coco["annotations"].append(
            {"id": image_id, "image_id": image_id, "category_id": 1, "bbox": box,
             "area": box[2] * box[3], "iscrowd": 0}
        )  # fmt: skip
    coco["categories"] = [{"id": i, "name": n} for i, n in enumerate(CLASSES, start=1)]
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def deep_split(tmp_path_factory):
    """A converted split of a 16-bit grayscale PNG and a 16-bit grayscale TIFF."""
    root = tmp_path_factory.mktemp("deep")
    pixels = deep_gray(40, 24)
    dataset = write_dataset(
        root / "dataset",
        [("deep.png", encoded(pixels, "PNG"), 40, 24),
         ("deep.tif", encoded(pixels, "TIFF"), 40, 24)],
    )  # fmt: skip
    run_convert_to_tfrecord(dataset, root / "test", split_name="test", num_workers=1)
    return root / "test"


def model_garden_decode(record: bytes) -> dict:
    """The record as training's input pipeline decodes it: Model Garden's TfExampleDecoder, which
    the experiment's `simple_decoder` data config makes."""
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    return TfExampleDecoder(include_mask=True).decode(record)


def training_pixels(record: bytes) -> np.ndarray:
    return model_garden_decode(record)["image"].numpy()


def test_a_16_bit_image_decodes_to_the_same_pixels_for_training_and_evaluation(deep_split):
    records = [record for _, record in read_tfrecords(deep_split).records()]
    split = evaluation_split.load_split(deep_split)
    assert len(records) == len(split.images) == 2
    high_bytes = (deep_gray(40, 24) >> 8).astype(np.uint8)
    for record, image in zip(records, split.images):
        example = parse_example(record, image.file_name)
        assert Image.open(io.BytesIO(example.encoded)).mode == "I;16"  # kept 16-bit
        trained_on = training_pixels(record)
        evaluated_on = evaluation_split.decode_image(image)
        assert evaluated_on.dtype == trained_on.dtype == np.uint8
        np.testing.assert_array_equal(evaluated_on, trained_on)
        for channel in range(3):
            np.testing.assert_array_equal(evaluated_on[..., channel], high_bytes)


def test_a_jpeg_decodes_to_the_same_pixels_for_training_and_evaluation(tmp_path):
    # PIL's and TensorFlow's JPEG decoders differ by a few levels on most pixels
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    dataset = write_dataset(tmp_path / "dataset", [("noise.jpg", encoded(noise, "JPEG"), 64, 48)])
    run_convert_to_tfrecord(dataset, tmp_path / "test", split_name="test", num_workers=1)
    (_, record), = read_tfrecords(tmp_path / "test").records()  # fmt: skip
    image = evaluation_split.load_split(tmp_path / "test").images[0]

    np.testing.assert_array_equal(evaluation_split.decode_image(image), training_pixels(record))


def test_the_reader_gives_what_model_gardens_decoder_reads(deep_split):
    found = read_tfrecords(deep_split)
    assert found.manifest["split"] == "test" and found.manifest["num_examples"] == 2
    assert found.label_map.names == CLASSES
    assert [path.name for path in found.shards] == ["test-00000-of-00001.tfrecord"]
    assert found.pattern == str(deep_split / "test-*-of-00001.tfrecord")
    for where, record in found.records():
        example = parse_example(record, where)
        decoded = model_garden_decode(record)
        np.testing.assert_array_equal(example.boxes, decoded["groundtruth_boxes"].numpy())
        np.testing.assert_array_equal(example.labels, decoded["groundtruth_classes"].numpy())
        assert example.source_id == decoded["source_id"].numpy().decode()
        assert (example.height, example.width) == (24, 40)
        assert len(example) == 1 and example.masks == []  # boxes only: no masks written
    assert not found.has_masks


def copy_of(directory, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in directory.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_an_unfinished_or_foreign_directory_is_refused(deep_split, tmp_path):
    with pytest.raises(TFRecordsError, match="does not exist"):
        read_tfrecords(tmp_path / "nowhere")
    broken = copy_of(deep_split, tmp_path)
    (broken / MANIFEST_FILE).unlink()
    with pytest.raises(TFRecordsError, match="has no manifest.json: pass the TFRecords artifact"):
        read_tfrecords(broken)

    manifest = json.loads((deep_split / MANIFEST_FILE).read_text())
    (broken / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(TFRecordsError, match="cannot be read as JSON"):
        read_manifest(broken)
    (broken / MANIFEST_FILE).write_text(json.dumps({**manifest, "num_shards": "1"}))
    with pytest.raises(TFRecordsError, match="num_shards should be a int, found '1'"):
        read_manifest(broken)
    (broken / MANIFEST_FILE).write_text(json.dumps({**manifest, "class_names": ["a", "b"]}))
    with pytest.raises(TFRecordsError, match=r"lists the classes \['a', 'b'\]"):
        read_tfrecords(broken)
    (broken / MANIFEST_FILE).write_text(json.dumps({**manifest, "num_shards": 2}))
    with pytest.raises(
        TFRecordsError, match="lists 2 shard.* found 1: the directory is incomplete"
    ):
        read_tfrecords(broken)


def test_the_manifest_written_is_the_manifest_read(tmp_path):
    with pytest.raises(ValueError, match="needs .*'class_names'"):
        write_manifest(tmp_path, {"split": "train"})
    manifest = {
        "split": "train", "file_pattern": "train-*-of-00001.tfrecord", "num_shards": 1,
        "num_examples": 3, "num_instances": 5, "has_masks": False, "class_names": ["a"],
    }  # fmt: skip
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]  # no temporary file left


def example_bytes(features: dict) -> bytes:
    from cvat_kfp.components.convert_to_tfrecord.tf_example import encode_example

    kinds = {**tfrecords.FEATURE_KINDS, "odd": tfrecords.BYTES}
    return encode_example(features, kinds)


def test_a_record_breaking_the_contract_is_refused_with_where():
    image = {
        tfrecords.HEIGHT: [2], tfrecords.WIDTH: [3], tfrecords.SOURCE_ID: [b"7"],
        tfrecords.ENCODED: [b"png"],
    }  # fmt: skip
    boxes = {key: [0.1, 0.2] for key in tfrecords.BOX_KEYS}
    parsed = parse_example(example_bytes({**image, **boxes, tfrecords.CLASS_LABEL: [1, 2]}), "r0")
    assert parsed.filename == "7" and len(parsed) == 2 and parsed.areas is None
    assert parsed.is_crowd.tolist() == [0, 0] and parsed.masks == []

    with pytest.raises(TFRecordsError, match=r"r1 \(7\): 2 image/object/bbox/ymin value\(s\) "
                                             r"for 1 object labels"):  # fmt: skip
        parse_example(example_bytes({**image, **boxes, tfrecords.CLASS_LABEL: [1]}), "r1")
    with pytest.raises(TFRecordsError, match="r2: image/height should hold one value, holds 0"):
        parse_example(example_bytes({**image, tfrecords.HEIGHT: []}), "r2")
    from tensorflow.core.example.example_pb2 import Example

    wrong = Example.FromString(example_bytes(image))
    wrong.features.feature[tfrecords.WIDTH].ClearField("int64_list")
    wrong.features.feature[tfrecords.WIDTH].bytes_list.value.append(b"3")
    with pytest.raises(TFRecordsError, match="r3: image/width holds a bytes_list, the contract"):
        parse_example(wrong.SerializeToString(), "r3")


def test_an_undecodable_image_says_which():
    with pytest.raises(TFRecordsError, match="image x.png cannot be decoded"):
        decode_image(b"not an image", "image x.png")
