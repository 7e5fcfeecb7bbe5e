"""The serving module: a trained Model Garden detector wrapped in our one signature.

`ServingModule` is what export-model saves and what a predictor over a trained Model runs in
memory, so both answer alike. It builds the model from the run's effective ExperimentConfig,
preprocesses as Model Garden's evaluation does (normalize, resize keeping the aspect ratio, pad)
and maps the model's outputs back to the original image:

- boxes: the model answers in resized-input pixels; divided by the resize scale and normalized
  by the original size, they become [ymin, xmin, ymax, xmax] in [0, 1] of the original image;
- masks (Mask R-CNN): the model answers 28x28 probabilities per box; `paste_masks` resamples
  each into the whole original image (bilinear, threshold 0.5) as uint8 0/1;
- only the valid detections are returned (N = num_detections, no padding): full-image masks for
  the detection generator's 100 padded slots would cost 100*H*W bytes whatever the image holds.

Signatures (batch of one image):

    serving_default(images: uint8 [1, H, W, 3])
    serve_image_bytes(image_bytes: string [1])       JPEG, PNG, GIF (first frame) or BMP
      -> detection_boxes float32 [1, N, 4], detection_classes int32 [1, N] (1..K),
         detection_class_names string [1, N], detection_scores float32 [1, N],
         num_detections int32 [1], detection_masks uint8 [1, N, H, W] (mask models only)
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

SERVING_DEFAULT = "serving_default"
SERVE_IMAGE_BYTES = "serve_image_bytes"
IMAGES_INPUT = "images"
IMAGE_BYTES_INPUT = "image_bytes"
MASK_THRESHOLD = 0.5
OUTPUT_KEYS = (
    "detection_boxes",
    "detection_classes",
    "detection_class_names",
    "detection_scores",
    "num_detections",
)
MASKS_KEY = "detection_masks"


def _model_kind(config) -> str:
    from official.vision import configs

    if isinstance(config.task.model, configs.maskrcnn.MaskRCNN):
        return "maskrcnn"
    if isinstance(config.task.model, configs.retinanet.RetinaNet):
        return "retinanet"
    raise ValueError(
        f"cannot serve a {type(config.task.model).__name__} model: export-model serves the "
        "RetinaNet and (Mask / Faster) R-CNN presets"
    )


def input_geometry(config, input_size: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """The model's input size [h, w] and the padded size it really sees (a multiple of 2**max)."""
    from official.vision.ops import preprocess_ops

    size = list(input_size or config.task.model.input_size[:2])
    if config.task.validation_data.parser.pad:
        padded = preprocess_ops.compute_padded_size(size, 2**config.task.model.max_level)
        return size, [int(x) for x in padded]
    return size, size


def build_model(config, padded_size: Sequence[int], batch_size: int | None = 1):
    """The Keras model of `config` (RetinaNet or Mask/Faster R-CNN) for `padded_size` inputs."""
    import tf_keras
    from official.vision.modeling import factory

    input_specs = tf_keras.layers.InputSpec(shape=[batch_size, *padded_size, 3])
    if _model_kind(config) == "maskrcnn":
        return factory.build_maskrcnn(input_specs=input_specs, model_config=config.task.model)
    return factory.build_retinanet(input_specs=input_specs, model_config=config.task.model)


def paste_masks(masks: tf.Tensor, boxes: tf.Tensor, height, width) -> tf.Tensor:
    """Per-box mask probabilities [N, m, m] pasted into full images: uint8 0/1 [N, height, width].

    `boxes` [N, 4] are in original-image pixels (ymin, xmin, ymax, xmax; not clipped: the mask
    covers the whole box). Each output pixel centre samples the box's mask bilinearly, outside the
    box it reads 0; one image-sized float buffer at a time (map_fn), whatever N is.
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    m_h = tf.cast(tf.shape(masks)[1], tf.float32)
    m_w = tf.cast(tf.shape(masks)[2], tf.float32)
    # a zero border: pixels near the box edge interpolate towards 0 instead of reading the
    # extrapolation value outright (which would shave half a mask cell off every side)
    masks = tf.pad(masks, [[0, 0], [1, 1], [1, 1]])
    size_h = tf.cast(height, tf.float32)
    size_w = tf.cast(width, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    box_h = tf.maximum(ymax - ymin, 1e-6)
    box_w = tf.maximum(xmax - xmin, 1e-6)

    # crop_and_resize samples at y1 * (m'-1) + i * (y2-y1) * (m'-1) / (H-1) in the padded mask
    # (m' = m + 2); pixel centre i + 0.5 sits at (i + 0.5 - ymin) * m / box_h - 0.5 + 1 there.
    def edge(pixel, start, length, m):
        return ((pixel + 0.5 - start) * m / length + 0.5) / (m + 1.0)

    crop_boxes = tf.stack(
        [
            edge(0.0, ymin, box_h, m_h),
            edge(0.0, xmin, box_w, m_w),
            edge(size_h - 1.0, ymin, box_h, m_h),
            edge(size_w - 1.0, xmin, box_w, m_w),
        ],
        axis=1,
    )

    def paste_one(args):
        mask, crop_box = args
        full = tf.image.crop_and_resize(
            mask[tf.newaxis, :, :, tf.newaxis],
            crop_box[tf.newaxis],
            [0],
            tf.stack([height, width]),
            extrapolation_value=0.0,
        )
        return tf.cast(full[0, :, :, 0] >= MASK_THRESHOLD, tf.uint8)

    def paste_all():
        return tf.map_fn(
            paste_one,
            (masks, crop_boxes),
            fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
            parallel_iterations=4,
        )

    # map_fn cannot stack zero results of an unknown shape
    return tf.cond(
        tf.shape(masks)[0] > 0,
        paste_all,
        lambda: tf.zeros(tf.stack([0, height, width]), tf.uint8),
    )


def check_image_tensor(images: tf.Tensor) -> list:
    """In-graph checks of the images input: one RGB image [1, H, W, 3], not empty.

    The rank check runs first (the others read dimensions that only rank 4 has).
    """
    expected = "one uint8 RGB image of shape [1, height, width, 3]"
    rank = tf.debugging.assert_equal(
        tf.rank(images), 4, message=f"{IMAGES_INPUT}: expected {expected}; got rank"
    )
    with tf.control_dependencies([rank]):
        shape = tf.shape(images)
        batch = tf.debugging.assert_equal(
            shape[0], 1, message=f"{IMAGES_INPUT}: expected {expected}; got batch size"
        )
        channels = tf.debugging.assert_equal(
            shape[-1],
            3,
            message=f"{IMAGES_INPUT}: expected {expected} (convert grayscale or RGBA to RGB); "
            "got channels",
        )
        size = tf.debugging.assert_positive(
            shape[1:3], message=f"{IMAGES_INPUT}: expected {expected}; got an empty image of size"
        )
    return [rank, batch, channels, size]


class ServingModule(tf.Module):
    """A detector with our serving signatures; `model` is restored by the caller (checkpoint)."""

    def __init__(self, config, class_names: Sequence[str], input_size=None, name=None):
        super().__init__(name=name)
        self.config = config
        self.kind = _model_kind(config)
        self.has_masks = self.kind == "maskrcnn" and bool(config.task.model.include_mask)
        self.class_names = list(class_names)
        self.input_size, self.padded_size = input_geometry(config, input_size)
        self.model = build_model(config, self.padded_size)
        # index = class id; 0 is background and never detected
        self._names = tf.constant(["", *self.class_names], dtype=tf.string)
        self._anchor_boxes = self._build_anchor_boxes()
        keep = config.task.validation_data.parser.keep_aspect_ratio
        self._keep_aspect_ratio = bool(keep)

        # [None] * 4, not [1, None, None, 3]: the in-graph checks then name a wrong batch or channel
        # count in words instead of TF's bare "incompatible shape"
        self.detect = tf.function(
            self._detect,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, IMAGES_INPUT)],
        )
        self.detect_image_bytes = tf.function(
            self._detect_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, IMAGE_BYTES_INPUT)],
        )

    def _build_anchor_boxes(self) -> dict:
        from official.vision.ops import anchor

        model = self.config.task.model
        generator = anchor.build_anchor_generator(
            min_level=model.min_level,
            max_level=model.max_level,
            num_scales=model.anchor.num_scales,
            aspect_ratios=model.anchor.aspect_ratios,
            anchor_size=model.anchor.anchor_size,
        )
        return generator(image_size=self.padded_size)

    def signatures(self) -> dict:
        """The concrete functions to save as the SavedModel's signatures."""
        return {
            SERVING_DEFAULT: self.detect.get_concrete_function(),
            SERVE_IMAGE_BYTES: self.detect_image_bytes.get_concrete_function(),
        }

    def preprocess(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One uint8 image [H, W, 3] as the model sees it [1, h, w, 3], and its image_info."""
        from official.vision.ops import preprocess_ops

        image = preprocess_ops.normalize_image(
            tf.cast(image, tf.float32),
            offset=preprocess_ops.MEAN_RGB,
            scale=preprocess_ops.STDDEV_RGB,
        )
        image, image_info = preprocess_ops.resize_and_crop_image(
            image,
            self.input_size,
            padded_size=self.padded_size,
            aug_scale_min=1.0,
            aug_scale_max=1.0,
            keep_aspect_ratio=self._keep_aspect_ratio,
        )
        image.set_shape([*self.padded_size, 3])
        return image[tf.newaxis], image_info

    def _detect(self, images: tf.Tensor) -> dict:
        with tf.control_dependencies(check_image_tensor(images)):
            image = tf.identity(images[0])
        return self._run(image)

    def _detect_image_bytes(self, image_bytes: tf.Tensor) -> dict:
        checks = [
            tf.debugging.assert_equal(
                tf.size(image_bytes),
                1,
                message=f"{IMAGE_BYTES_INPUT}: expected one encoded image [1]; got count",
            )
        ]
        with tf.control_dependencies(checks):
            image = tf.io.decode_image(image_bytes[0], channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return self._run(image)

    def _run(self, image: tf.Tensor) -> dict:
        inputs, image_info = self.preprocess(image)
        detections = self.model.call(
            images=inputs,
            image_shape=image_info[tf.newaxis, 1, :],
            anchor_boxes={level: boxes[tf.newaxis] for level, boxes in self._anchor_boxes.items()},
            training=False,
        )
        return self.postprocess(detections, image_info)

    def postprocess(self, detections: dict, image_info: tf.Tensor) -> dict:
        """Model outputs (resized-input pixels, padded) → valid detections on the original image."""
        count = tf.cast(detections["num_detections"][0], tf.int32)
        original = image_info[0]
        scale = tf.tile(image_info[2], [2])
        offset = tf.tile(image_info[3], [2])
        boxes = (detections["detection_boxes"][0, :count] + offset) / scale  # original pixels
        normalized = tf.clip_by_value(boxes / tf.tile(original, [2]), 0.0, 1.0)
        classes = tf.cast(detections["detection_classes"][0, :count], tf.int32)
        outputs = {
            "detection_boxes": normalized[tf.newaxis],
            "detection_classes": classes[tf.newaxis],
            "detection_class_names": tf.gather(self._names, classes)[tf.newaxis],
            "detection_scores": tf.cast(detections["detection_scores"][0, :count], tf.float32)[
                tf.newaxis
            ],
            "num_detections": count[tf.newaxis],
        }
        if self.has_masks:
            height = tf.cast(original[0], tf.int32)
            width = tf.cast(original[1], tf.int32)
            masks = paste_masks(detections["detection_masks"][0, :count], boxes, height, width)
            outputs[MASKS_KEY] = masks[tf.newaxis]
        return outputs
