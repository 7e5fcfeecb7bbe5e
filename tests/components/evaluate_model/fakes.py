"""A fake Predictor that answers from the test split's own ground truth, perturbed on purpose."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.evaluate_model.tfrecords import Split, decode_image
from cvat_kfp.components.inference.predictor import Detections


def image_key(pixels: np.ndarray) -> str:
    return hashlib.sha256(pixels.tobytes()).hexdigest()


@dataclass
class FakePredictor:
    """Ground truth as detections (score 0.9), then per image id: `drop` (objects missed),
    `relabel` (object index -> other class id), `extra` (false detections: normalized box,
    class, score), `jitter` (pixels of box noise, seeded)."""

    split: Split
    has_masks: bool = False
    label_map: LabelMap | None = None
    drop: dict[int, set[int]] = field(default_factory=dict)
    relabel: dict[int, dict[int, int]] = field(default_factory=dict)
    extra: dict[int, list[tuple]] = field(default_factory=dict)
    jitter: float = 0.0
    empty: bool = False
    return_masks: bool | None = None  # default: has_masks; False with has_masks: a broken model
    description: dict = field(default_factory=lambda: {"preset": "fake", "source": "test"})
    calls: int = 0

    def __post_init__(self):
        self.label_map = self.label_map or self.split.label_map
        self._by_key = {}
        for image in self.split.images:
            anns = [a for a in self.split.ground_truth["annotations"] if a["image_id"] == image.id]
            self._by_key[image_key(decode_image(image))] = (image, anns)
        self._rng = np.random.default_rng(0)

    def predict(self, pixels: np.ndarray) -> Detections:
        self.calls += 1
        image, anns = self._by_key[image_key(pixels)]
        h, w = image.height, image.width
        boxes, classes, scores, masks = [], [], [], []
        with_masks = self.has_masks if self.return_masks is None else self.return_masks
        for i, ann in enumerate([] if self.empty else anns):
            if i in self.drop.get(image.id, set()):
                continue
            x, y, bw, bh = np.array(ann["bbox"]) + self._rng.normal(0, self.jitter, 4)
            boxes.append([y / h, x / w, (y + bh) / h, (x + bw) / w])
            classes.append(self.relabel.get(image.id, {}).get(i, ann["category_id"]))
            scores.append(0.9 - 0.01 * i)
            if "segmentation" in ann:
                masks.append(mask_utils.decode(ann["segmentation"]))
            else:
                masks.append(_box_mask(ann["bbox"], h, w))
        for box, class_id, score in [] if self.empty else self.extra.get(image.id, []):
            boxes.append(box)
            classes.append(class_id)
            scores.append(score)
            ymin, xmin, ymax, xmax = box
            pixel_box = [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h]
            masks.append(_box_mask(pixel_box, h, w))
        return Detections(
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            classes=np.array(classes, np.int32),
            scores=np.array(scores, np.float32),
            class_names=[self.label_map.name_of(int(c)) for c in classes],
            masks=np.array(masks, np.uint8).reshape(-1, h, w) if with_masks else None,
        )


def _box_mask(bbox, height: int, width: int) -> np.ndarray:
    x, y, w, h = (int(round(v)) for v in bbox)
    mask = np.zeros((height, width), np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask
