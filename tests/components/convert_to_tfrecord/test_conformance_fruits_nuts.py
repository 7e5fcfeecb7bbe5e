"""Conformance on a real COCO export (fruits_nuts): every record decodes with Model Garden's decoder
and matches the source JSON, checked with pycocotools straight from the JSON."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder
from pycocotools import mask as mask_utils

from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord


@pytest.fixture()
def fruits_nuts(shared_test_data, tmp_path):
    """A Dataset directory in tmp_path: the export's JSON, its images hard-linked (or copied)."""
    source = shared_test_data / "fruits_nuts_coco" / "data"
    root = tmp_path / "fruits_nuts"
    (root / "images").mkdir(parents=True)
    shutil.copyfile(source / "trainval.json", root / "annotations.json")
    for image in (source / "images").iterdir():
        try:
            os.link(image, root / "images" / image.name)
        except OSError:
            shutil.copyfile(image, root / "images" / image.name)
    return root, json.loads((source / "trainval.json").read_text())


def test_fruits_nuts_records_match_the_source_annotations(fruits_nuts, tmp_path):
    root, coco = fruits_nuts
    result = run_convert_to_tfrecord(root, tmp_path / "out", num_workers=1)
    assert (result.num_examples, result.num_instances) == (18, 165)
    assert result.has_masks and result.report.refusals == []

    decoder = TfExampleDecoder(include_mask=True)
    shards = [str(p) for p in result.shard_paths]
    records = list(tf.data.TFRecordDataset(shards))
    decoded = [decoder.decode(r) for r in records]
    for image, record in zip(coco["images"], records):  # image bytes passed through untouched
        example = tf.train.Example.FromString(record.numpy()).features.feature
        original = (root / "images" / image["file_name"]).read_bytes()
        assert example["image/encoded"].bytes_list.value == [original]
    assert len(decoded) == 18 == len(coco["images"])
    instances = 0
    for image, example in zip(coco["images"], decoded):
        h, w = image["height"], image["width"]
        annotations = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert example["source_id"].numpy() == str(image["id"]).encode()
        assert tuple(example["image"].shape) == (h, w, 3)

        x, y, bw, bh = np.array([a["bbox"] for a in annotations], dtype=np.float64).T
        expected_boxes = np.stack(
            [np.clip(y, 0, h), np.clip(x, 0, w), np.clip(y + bh, 0, h), np.clip(x + bw, 0, w)], 1
        )
        boxes = example["groundtruth_boxes"].numpy() * [h, w, h, w]
        np.testing.assert_allclose(boxes, expected_boxes, atol=1e-3)
        classes = example["groundtruth_classes"].numpy().tolist()
        assert classes == [a["category_id"] for a in annotations]

        masks = example["groundtruth_instance_masks"].numpy()
        assert masks.shape == (len(annotations), h, w)
        for mask, annotation in zip(masks, annotations):
            rle = mask_utils.merge(mask_utils.frPyObjects(annotation["segmentation"], h, w))
            assert mask.sum() == mask_utils.area(rle), annotation["id"]
        instances += len(annotations)
    assert instances == 165
