"""The TFLite form of a serving module (the mobile presets) and a runner for it.

TFLite input contract: one uint8 RGB image [1, S, S, 3] where S×S is the model's input size
(export.json `tflite.input_size`): resize the image to S×S (stretching it; no padding) before
calling. Normalization runs inside the model. Outputs (fixed size, padded to M = the model's
max_num_detections, 100; read the first `num_detections`):

    detection_boxes float32 [1, M, 4]  ymin, xmin, ymax, xmax normalized to the input, which is
                                       the original image's normalized frame too (the resize
                                       stretches it)
    detection_classes int32 [1, M]     label map ids 1..K
    detection_scores float32 [1, M]
    num_detections int32 [1]
    detection_masks float32 [1, M, 28, 28]   Mask R-CNN only: each box's mask probabilities;
                                       paste them into the image yourself (resize to the box,
                                       threshold 0.5), as `paste_masks` does

No class names (strings are awkward on device): map ids with label_map.json. Full-image masks
stay out of the TFLite model: they would be M×S×S bytes at S, not at the photo's own size, and
the paste (crop_and_resize) is not a TFLite builtin op. Only builtin ops are used (no Flex
delegate, which would ship the TF runtime to the device).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MOBILE_PRESETS = (
    "ssd-mobilenet-v2-coco",
    "retinanet-mobilenetv2-light",
    "maskrcnn-mobilenetv2-light",
)
TFLITE_OUTPUT_KEYS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
TFLITE_MASKS_KEY = "detection_masks"


class TFLiteUnsupported(RuntimeError):
    """This model cannot become a (builtin-ops) TFLite model."""


def tflite_supported(preset: str, module) -> tuple[bool, str]:
    """Whether `preset` gets a TFLite export, and why not."""
    if preset not in MOBILE_PRESETS:
        return False, (
            f"TFLite export covers the mobile presets ({', '.join(MOBILE_PRESETS)}); the "
            "ResNet / SpineNet ones are server models"
        )
    return True, ""


def tflite_function(module):
    """A fixed-size tf.function [1, S, S, 3] uint8 → padded detections, for the converter."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    size = list(module.padded_size)

    @tf.function(input_signature=[tf.TensorSpec([1, *size, 3], tf.uint8, name="images")])
    def detect(images):
        image = preprocess_ops.normalize_image(
            tf.cast(images[0], tf.float32),
            offset=preprocess_ops.MEAN_RGB,
            scale=preprocess_ops.STDDEV_RGB,
        )
        detections = module.model.call(
            images=image[tf.newaxis],
            image_shape=tf.constant([size], tf.float32),
            anchor_boxes={k: v[tf.newaxis] for k, v in module._anchor_boxes.items()},
            training=False,
        )
        scale = tf.constant([size[0], size[1], size[0], size[1]], tf.float32)
        boxes = tf.clip_by_value(detections["detection_boxes"] / scale, 0.0, 1.0)
        outputs = {
            "detection_boxes": boxes,
            "detection_classes": tf.cast(detections["detection_classes"], tf.int32),
            "detection_scores": tf.cast(detections["detection_scores"], tf.float32),
            "num_detections": tf.cast(detections["num_detections"], tf.int32),
        }
        if module.has_masks:
            outputs[TFLITE_MASKS_KEY] = tf.cast(detections["detection_masks"], tf.float32)
        return outputs

    return detect


def export_tflite(module, path: str | os.PathLike) -> dict:
    """Convert `module` to a float32 builtin-ops TFLite model at `path`."""
    import tensorflow as tf

    function = tflite_function(module)
    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        model = converter.convert()
    except Exception as e:  # the converter raises ConverterError and assorted others
        raise TFLiteUnsupported(f"{type(e).__name__}: {str(e).strip()[:2000]}") from e
    path = Path(path)
    path.write_bytes(model)
    max_detections = int(module.config.task.model.detection_generator.max_num_detections)
    return {
        "bytes": len(model),
        "input_size": list(module.padded_size),
        "input": "uint8 [1, S, S, 3] RGB, the image resized (stretched) to S×S",
        "outputs": list(TFLITE_OUTPUT_KEYS) + ([TFLITE_MASKS_KEY] if module.has_masks else []),
        "max_detections": max_detections,
    }


class TFLiteDetector:
    """Runs a model.tflite as export_tflite wrote it; outputs keyed like the SavedModel's."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        # LiteRT's interpreter: tf.lite.Interpreter is deprecated and leaves TensorFlow in 2.20
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner()
        details = self.runner.get_input_details()
        (self.input_name,) = details
        self.input_size = [int(x) for x in details[self.input_name]["shape"][1:3]]

    def resize(self, image: np.ndarray) -> np.ndarray:
        """`image` [H, W, 3] uint8 resized (bilinear, stretched) to the model's input size."""
        import tensorflow as tf

        if list(image.shape[:2]) == self.input_size:
            return image
        resized = tf.image.resize(image, self.input_size, method="bilinear", antialias=False)
        return np.asarray(tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8))

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Padded outputs for one uint8 image [H, W, 3] (resized here when needed)."""
        image = self.resize(image)
        return self.runner(**{self.input_name: image[np.newaxis]})

    @staticmethod
    def full_image_masks(outputs: dict, height: int, width: int) -> np.ndarray:
        """The valid detections' box masks pasted into a height×width image: uint8 [N, H, W]."""
        from .serving import paste_masks

        n = int(outputs["num_detections"][0])
        boxes = outputs["detection_boxes"][0, :n] * np.array([height, width] * 2, np.float32)
        return paste_masks(outputs[TFLITE_MASKS_KEY][0, :n], boxes, height, width).numpy()
