"""The serving module without training: mask pasting, input checks, every preset builds."""

import numpy as np
import pytest
import tensorflow as tf

from cvat_kfp.components.inference.predictor import check_image
from cvat_kfp.components.inference.serving import ServingModule, paste_masks
from cvat_kfp.components.training.experiment import build_experiment_config
from cvat_kfp.components.training.hyperparameters import parse_hyperparameters
from cvat_kfp.components.training.presets import PRESETS

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


def test_a_full_box_mask_fills_exactly_its_box():
    masks = np.ones((1, 28, 28), np.float32)
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)  # ymin, xmin, ymax, xmax (pixels)
    pasted = paste_masks(masks, boxes, 48, 64).numpy()
    assert pasted.shape == (1, 48, 64) and pasted.dtype == np.uint8
    expected = np.zeros((48, 64), np.uint8)
    expected[10:30, 20:60] = 1
    np.testing.assert_array_equal(pasted[0], expected)


def test_the_mask_keeps_its_place_inside_the_box():
    # left half of the box's mask on: the left half of the box in the image
    masks = np.zeros((2, 28, 28), np.float32)
    masks[0, :, :14] = 1.0
    masks[1, 14:, :] = 1.0  # bottom half
    boxes = np.array([[0.0, 0.0, 40.0, 40.0], [8.0, 8.0, 36.0, 64.0]], np.float32)
    pasted = paste_masks(masks, boxes, 40, 64).numpy()
    assert pasted[0, :, :20].all() and not pasted[0, :, 20:].any()
    assert pasted[1, 22:36, 8:64].all()
    assert not pasted[1, :22].any() and not pasted[1, 36:].any() and not pasted[1, :, :8].any()


def test_masks_of_boxes_leaving_the_image_are_clipped_and_zero_boxes_give_an_empty_array():
    masks = np.ones((1, 28, 28), np.float32)
    pasted = paste_masks(masks, np.array([[-10.0, -10.0, 10.0, 10.0]], np.float32), 20, 20)
    assert pasted.numpy()[0].sum() == 100
    empty = paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), 5, 7)
    assert empty.shape == (0, 5, 7)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 4, 3), np.float32), "got dtype float32"),
        (np.zeros((1, 4, 4, 3), np.uint8), "not a batch"),
        (np.zeros((4, 4), np.uint8), "got shape (4, 4)"),
        (np.zeros((4, 4, 4), np.uint8), "convert grayscale or RGBA to RGB"),
        (np.zeros((0, 4, 3), np.uint8), "empty image"),
    ],
)
def test_predict_input_checks_say_what_was_given_and_what_is_expected(image, message):
    with pytest.raises(ValueError, match="uint8 RGB image|RGB image|empty") as error:
        check_image(image)
    assert message in str(error.value)


def test_a_list_is_refused_with_its_type():
    with pytest.raises(TypeError, match="got list"):
        check_image([[0, 0, 0]])


def _config(preset_name: str):
    preset = PRESETS[preset_name]
    hp = parse_hyperparameters(f"image_size: {max(128, preset.size_multiple)}", preset)
    return build_experiment_config(
        preset,
        hp,
        train_pattern="/nonexistent/train-*.tfrecord",
        val_pattern="/nonexistent/val-*.tfrecord",
        num_classes=2,
        include_masks=preset.include_mask,
    )


@pytest.mark.parametrize("preset_name", sorted(PRESETS))
def test_every_preset_builds_and_serves_at_a_tiny_size(preset_name):
    """Untrained weights, the smallest input size the preset allows: the graph, not the values."""
    config = _config(preset_name).replace(  # a built config is locked: an unlocked copy
        task={"model": {"detection_generator": {"pre_nms_score_threshold": 0.0}}}
    )
    module = ServingModule(config, ["a", "b"])
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    outputs = {k: v.numpy() for k, v in module.detect(tf.constant(image[None])).items()}
    n = int(outputs["num_detections"][0])
    assert outputs["detection_boxes"].shape == (1, n, 4)
    assert outputs["detection_boxes"].min() >= 0 and outputs["detection_boxes"].max() <= 1
    assert set(outputs["detection_classes"].ravel()) <= {1, 2}
    assert set(outputs["detection_class_names"].ravel()) <= {b"a", b"b"}
    assert module.has_masks == PRESETS[preset_name].include_mask
    if module.has_masks:
        assert outputs["detection_masks"].shape == (1, n, 40, 50)
        assert outputs["detection_masks"].dtype == np.uint8
    else:
        assert "detection_masks" not in outputs
