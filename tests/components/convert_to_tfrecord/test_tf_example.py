"""The hand-written tf.train.Example: byte-identical to TensorFlow's, and read back alike."""

import random
import struct

import numpy as np
import pytest
import tensorflow as tf

from cvat_kfp.components.convert_to_tfrecord.example import (
    FEATURE_KINDS,
    ImageTask,
    build_image_features,
    build_image_record,
)
from cvat_kfp.components.convert_to_tfrecord.tf_example import BYTES, FLOAT, INT64, encode_example

from .conftest import CLASS_NAMES


def tensorflow_example(features: dict, kinds: dict) -> tf.train.Example:
    feature = {}
    for key, values in features.items():
        if kinds[key] == BYTES:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif kinds[key] == FLOAT:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def assert_same_as_tensorflow(features: dict, kinds: dict) -> bytes:
    ours = encode_example(features, kinds)
    assert ours == tensorflow_example(features, kinds).SerializeToString(deterministic=True)
    return ours


EDGE_CASES = {
    "empty lists": ({"a": [], "b": [], "c": []}, {"a": BYTES, "b": FLOAT, "c": INT64}),
    "no feature": ({}, {}),
    "int64 extremes": (
        {"i": [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63), -300]},
        {"i": INT64},
    ),
    "floats rounded to float32": (
        {"f": [0.1, 1 / 3, -2.5, 1e-40, 3.4e38, 0.0, -0.0, float("inf")]},
        {"f": FLOAT},
    ),
    "bytes of every length class": (
        {"b": [b"", b"x", bytes(range(256)), b"\x00" * 127, b"y" * 128, b"z" * 70_000]},
        {"b": BYTES},
    ),
    "keys sorted by their bytes": (
        {"b/x": [1], "a/a": [2], "B": [3], "a/b": [4], "é": [5], "z": [6]},
        dict.fromkeys(["b/x", "a/a", "B", "a/b", "é", "z"], INT64),
    ),
}


def test_no_feature_key_is_a_prefix_of_another():
    """Where one is, protobuf implementations order map keys differently (see tf_example.py)."""
    keys = sorted(FEATURE_KINDS)
    assert not any(b.startswith(a) for a, b in zip(keys, keys[1:]))


@pytest.mark.parametrize("case", EDGE_CASES, ids=list(EDGE_CASES))
def test_edge_cases_are_byte_identical_to_tensorflow(case):
    features, kinds = EDGE_CASES[case]
    assert_same_as_tensorflow(features, kinds)


def test_random_features_are_byte_identical_to_tensorflow():
    rng = random.Random(3)
    for _ in range(200):
        features, kinds = {}, {}
        for k in range(rng.randint(0, 20)):
            key = f"image/{rng.choice(['object/', ''])}{k}_{rng.random():.3f}"  # prefix-free
            kinds[key] = kind = rng.choice([BYTES, FLOAT, INT64])
            size = rng.choice([0, 1, 5, 200])
            if kind == BYTES:
                features[key] = [rng.randbytes(rng.choice([0, 3, 200])) for _ in range(size)]
            elif kind == FLOAT:
                features[key] = [rng.uniform(-1e6, 1e6) for _ in range(size)]
            else:
                features[key] = [rng.randint(-(2**63), 2**63 - 1) for _ in range(size)]
        assert_same_as_tensorflow(features, kinds)


@pytest.fixture()
def image_task(tmp_path, image_bytes):
    path = tmp_path / "a.jpg"
    path.write_bytes(image_bytes(40, 30))
    image = {"id": 12, "file_name": "a.jpg", "width": 40, "height": 30}
    annotations = [
        {"id": 1, "image_id": 12, "category_id": 2, "iscrowd": 0, "bbox": [2, 3, 10, 9],
         "area": 61.5, "segmentation": [[2, 3, 12, 3, 12, 12, 2, 12]]},
        {"id": 2, "image_id": 12, "category_id": 3, "iscrowd": 1, "bbox": [-4, 20, 20, 20]},
    ]  # fmt: skip
    return ImageTask(image, annotations, str(path), CLASS_NAMES, True)


def test_an_image_record_is_its_features_serialized_as_tensorflow_does(image_task):
    features = build_image_features(image_task).features
    result = build_image_record(image_task)
    assert result.features is None and not result.refused and result.num_instances == 2
    assert result.record == assert_same_as_tensorflow(features, FEATURE_KINDS)


def test_an_image_record_parses_back_to_its_features(image_task):
    features = build_image_features(image_task).features
    spec = {
        key: tf.io.VarLenFeature({BYTES: tf.string, FLOAT: tf.float32, INT64: tf.int64}[kind])
        for key, kind in FEATURE_KINDS.items()
    }
    parsed = tf.io.parse_single_example(build_image_record(image_task).record, spec)
    for key, values in features.items():
        got = tf.sparse.to_dense(parsed[key]).numpy().tolist()
        if FEATURE_KINDS[key] == FLOAT:
            expected = np.float32(values).tolist()  # float32 on the wire
            assert got == expected, key
        else:
            assert got == values, key


def test_floats_travel_as_little_endian_float32():
    record = encode_example({"f": [1.0]}, {"f": FLOAT})
    assert record.endswith(struct.pack("<f", 1.0))
