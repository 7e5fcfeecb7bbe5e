"""Reading a convert-to-tfrecord split back as COCO ground truth."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cvat_kfp.components.evaluate_model.tfrecords import (
    SplitError,
    decode_image,
    load_split,
)


def test_ground_truth_is_the_dataset_in_pixels(shapes_split_dir, shapes_split):
    dataset = json.loads(
        (shapes_split_dir.parent / "test_dataset" / "annotations.json").read_text()
    )
    gt = shapes_split.ground_truth

    assert shapes_split.label_map.names == ("circle", "square", "triangle")
    assert shapes_split.has_masks
    assert [i["id"] for i in gt["images"]] == [i["id"] for i in dataset["images"]]
    assert [(i["width"], i["height"]) for i in gt["images"]] == [(256, 192)] * 8
    assert len(gt["annotations"]) == len(dataset["annotations"]) == shapes_split.num_objects
    for ours, theirs in zip(gt["annotations"], dataset["annotations"]):
        assert ours["image_id"] == theirs["image_id"]
        assert ours["category_id"] == theirs["category_id"]
        assert ours["bbox"] == pytest.approx(theirs["bbox"], abs=1e-3)  # float32 normalized
        assert ours["iscrowd"] == 0
        assert ours["segmentation"]["size"] == [192, 256]
        assert ours["area"] == pytest.approx(theirs["area"], rel=1e-6)
        polygon = mask_utils.frPyObjects(theirs["segmentation"], 192, 256)
        iou = mask_utils.iou([ours["segmentation"]], polygon, [0])
        assert iou.max() > 0.99
    assert {c["name"] for c in gt["categories"]} == {"circle", "square", "triangle"}
    pixels = decode_image(shapes_split.images[0])
    assert pixels.shape == (192, 256, 3) and pixels.dtype == np.uint8


def test_clear_errors_for_what_is_not_a_test_split(tmp_path, shapes_split_dir):
    with pytest.raises(SplitError, match="does not exist"):
        load_split(tmp_path / "nowhere")
    with pytest.raises(SplitError, match="has no manifest.json"):
        load_split(tmp_path)

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in shapes_split_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    shard = next(broken.glob("*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(SplitError, match="corrupt or truncated"):
        load_split(broken)
    shard.unlink()
    with pytest.raises(SplitError, match="lists 1 shard"):
        load_split(broken)
