"""load_predictor over trained Models: the light RetinaNet (trained) and Mask R-CNN (barely)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cvat_kfp.components.inference.predictor import Detections, load_predictor
from cvat_kfp.components.inference.trained import ModelArtifactError, load_serving_module
from tests.trained_models import CLASSES, IMAGE_SIZE

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


def read_test_split(model_dir, limit: int = 8) -> list[dict]:
    """The test split next to a tiny trained model: images and ground truth (normalized boxes)."""
    examples = []
    files = sorted(str(p) for p in (model_dir.parent / "test").glob("*.tfrecord"))
    for record in tf.data.TFRecordDataset(files).take(limit):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        boxes = np.stack(
            [
                feature[f"image/object/bbox/{k}"].float_list.value
                for k in ("ymin", "xmin", "ymax", "xmax")
            ],
            axis=-1,
        )
        examples.append(
            {
                "image": tf.io.decode_image(feature["image/encoded"].bytes_list.value[0]).numpy(),
                "boxes": boxes,
                "classes": np.array(feature["image/object/class/label"].int64_list.value),
            }
        )
    return examples


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ymin, xmin = np.maximum(a[:2], b[:2])
    ymax, xmax = np.minimum(a[2:], b[2:])
    inter = max(ymax - ymin, 0) * max(xmax - xmin, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


@pytest.fixture(scope="module")
def retinanet(tiny_retinanet):
    return load_predictor(tiny_retinanet)


def test_trained_retinanet_finds_the_shapes_in_the_original_image_frame(retinanet, tiny_retinanet):
    assert not retinanet.has_masks
    assert retinanet.label_map.names == CLASSES
    assert retinanet.description["source"] == "trained"
    assert retinanet.description["preset"] == "retinanet-mobilenetv2-light"
    assert retinanet.description["checkpoint"] == "best"
    assert retinanet.description["global_step"] == 160
    found = total = 0
    for example in read_test_split(tiny_retinanet):
        assert example["image"].shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3)
        detections = retinanet.predict(example["image"])
        assert isinstance(detections, Detections)
        assert detections.boxes.dtype == np.float32 and detections.boxes.shape == (
            len(detections),
            4,
        )
        assert detections.classes.dtype == np.int32
        assert detections.masks is None
        assert np.all(np.diff(detections.scores) <= 0), "best score first"
        assert detections.class_names == [CLASSES[c - 1] for c in detections.classes]
        confident = detections.scores >= 0.3
        for box, label in zip(example["boxes"], example["classes"]):
            total += 1
            found += any(
                iou(box, det) >= 0.5 and cls == label
                for det, cls in zip(detections.boxes[confident], detections.classes[confident])
            )
    # val AP is ~0.4 after 160 steps: most shapes are found with the right class, in the
    # normalized frame of the 256x192 original (a wrong resize mapping would miss them all)
    assert found / total >= 0.5, (found, total)


def test_serving_with_fewer_nms_candidates_finds_the_same_detections(tiny_retinanet):
    """SERVING_PRE_NMS_TOP_K (1000, for speed) against the training config's 5000."""
    served, _, _ = load_serving_module(tiny_retinanet)
    assert served.config.task.model.detection_generator.pre_nms_top_k == 1000
    trained, _, _ = load_serving_module(tiny_retinanet, detection_overrides={"pre_nms_top_k": 5000})
    for example in read_test_split(tiny_retinanet, 4):
        a = {k: v.numpy() for k, v in served.detect(example["image"][None]).items()}
        b = {k: v.numpy() for k, v in trained.detect(example["image"][None]).items()}
        assert a["num_detections"] == b["num_detections"]
        np.testing.assert_allclose(a["detection_boxes"], b["detection_boxes"], atol=1e-5)
        np.testing.assert_array_equal(a["detection_classes"], b["detection_classes"])


def test_latest_checkpoint_and_the_best_one_are_both_loadable(tiny_retinanet):
    latest = load_predictor(tiny_retinanet, checkpoint="latest")
    assert latest.description["checkpoint"] == "latest"
    assert latest.description["checkpoint_path"].endswith("ckpt-160")


def test_best_falls_back_to_latest_with_a_log_line(tiny_retinanet, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(
        tiny_retinanet, copy, ignore=shutil.ignore_patterns("best", "train", "validation")
    )
    lines = []
    _, _, description = load_serving_module(copy, "best", log=lines.append)
    assert description["checkpoint"] == "latest"
    assert "no best checkpoint" in lines[0]


def test_bad_model_directories_and_arguments_are_named(tiny_retinanet, tmp_path):
    with pytest.raises(ModelArtifactError, match="neither a trained Model"):
        load_predictor(tmp_path)
    with pytest.raises(ModelArtifactError, match="checkpoint must be one of best, latest"):
        load_predictor(tiny_retinanet, checkpoint="newest")
    (tmp_path / "model.json").write_text(json.dumps({"preset": "x"}))
    with pytest.raises(ModelArtifactError, match="lacks params.yaml, label_map.json"):
        load_predictor(tmp_path)


def test_predict_refuses_bad_images_clearly(retinanet):
    with pytest.raises(ValueError, match=r"got dtype float64"):
        retinanet.predict(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"got shape \(8, 8, 4\)"):
        retinanet.predict(np.zeros((8, 8, 4), np.uint8))


def test_trained_maskrcnn_gives_full_image_masks(tiny_maskrcnn):
    predictor = load_predictor(tiny_maskrcnn)
    assert predictor.has_masks
    image = read_test_split(tiny_maskrcnn, 1)[0]["image"]
    detections = predictor.predict(image)
    assert detections.masks is not None
    assert detections.masks.shape == (len(detections), *image.shape[:2])
    assert detections.masks.dtype == np.uint8


def test_maskrcnn_masks_lie_in_their_boxes(tiny_maskrcnn):
    """8 training steps give low scores: lower the threshold to see 100 detections' masks."""
    module, _, _ = load_serving_module(
        tiny_maskrcnn, detection_overrides={"pre_nms_score_threshold": 0.0}
    )
    image = read_test_split(tiny_maskrcnn, 1)[0]["image"]
    outputs = {k: v.numpy() for k, v in module.detect(image[None]).items()}
    n = int(outputs["num_detections"][0])
    assert n > 0
    masks = outputs["detection_masks"][0]
    assert masks.shape == (n, *image.shape[:2]) and set(np.unique(masks)) <= {0, 1}
    height, width = image.shape[:2]
    for box, mask in zip(outputs["detection_boxes"][0], masks):
        ys, xs = np.nonzero(mask)
        if len(ys):
            assert ys.min() >= np.floor(box[0] * height) - 1 and ys.max() <= box[2] * height + 1
            assert xs.min() >= np.floor(box[1] * width) - 1 and xs.max() <= box[3] * width + 1
