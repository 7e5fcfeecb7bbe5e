"""One way to run a model on images, for evaluate-model, export-model and preannotate.

A `Predictor` wraps either a trained Model artifact (train-tfod / train-maskrcnn: params.yaml
plus a checkpoint) or an exported model (export-model: saved_model/), and answers with the
exported signature's conventions whatever it wraps: boxes normalized to the original image
[ymin, xmin, ymax, xmax], class ids 1..N (the label map's), scores, and full-image masks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..common.label_map import JSON_FILE, LabelMap, LabelMapError
from .trained import METADATA_FILE, ModelArtifactError

SAVED_MODEL_DIR = "saved_model"
EXPORT_METADATA_FILE = "export.json"


@dataclass(frozen=True)
class Detections:
    """One image's detections, valid ones only (no padding), best score first."""

    boxes: np.ndarray  # float32 [N, 4]: ymin, xmin, ymax, xmax in [0, 1] of the original image
    classes: np.ndarray  # int32 [N]: label map ids 1..K
    scores: np.ndarray  # float32 [N]
    class_names: list[str]
    masks: np.ndarray | None = None  # uint8 [N, H, W] 0/1 at the original image size, or None

    def __len__(self) -> int:
        return len(self.scores)


class Predictor(Protocol):
    label_map: LabelMap
    has_masks: bool
    description: dict  # preset, global step, source ("trained" or "exported"), checkpoint

    def predict(self, image: np.ndarray) -> Detections:
        """Detections on one uint8 RGB image [H, W, 3]."""
        ...


def load_predictor(path: str | os.PathLike, checkpoint: str = "best") -> Predictor:
    """The predictor of a trained Model directory or of an exported model directory.

    `checkpoint` ("best" or "latest") applies to trained models; "best" falls back to the latest
    checkpoint, with a log line, when the run kept no best one.
    """
    path = Path(path)
    if (path / SAVED_MODEL_DIR / "saved_model.pb").is_file():
        return ExportedPredictor(path)
    if (path / "saved_model.pb").is_file() and (path.parent / JSON_FILE).is_file():
        return ExportedPredictor(path.parent)
    if (path / METADATA_FILE).is_file():
        return TrainedPredictor(path, checkpoint)
    raise ModelArtifactError(
        f"{path} is neither a trained Model (model.json, params.yaml, checkpoints) nor an "
        f"exported model ({SAVED_MODEL_DIR}/saved_model.pb): pass the `model` output of "
        "train-tfod / train-maskrcnn or the `exported_model` output of export-model"
    )


def check_image(image) -> np.ndarray:
    """`image` as the uint8 RGB [H, W, 3] array predict takes, or a clear ValueError."""
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"predict takes a numpy uint8 RGB image [height, width, 3]; got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"predict takes a uint8 RGB image [height, width, 3]; got dtype {image.dtype} "
            "(scale float images to 0..255 and cast with .astype(np.uint8))"
        )
    if image.ndim != 3:
        hint = " (one image, not a batch: call predict per image)" if image.ndim == 4 else ""
        raise ValueError(
            f"predict takes one RGB image [height, width, 3]; got shape {image.shape}{hint}"
        )
    if image.shape[2] != 3:
        raise ValueError(
            f"predict takes an RGB image with 3 channels [height, width, 3]; got shape "
            f"{image.shape} (convert grayscale or RGBA to RGB first)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"predict got an empty image of shape {image.shape}")
    return image


def detections_from_outputs(outputs: Mapping[str, np.ndarray], label_map: LabelMap) -> Detections:
    """Our signature's outputs (batch of one, valid detections only) as Detections."""
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    classes = np.asarray(outputs["detection_classes"])[0, :count].astype(np.int32)
    masks = outputs.get("detection_masks")
    return Detections(
        boxes=np.asarray(outputs["detection_boxes"], np.float32)[0, :count].reshape(-1, 4),
        classes=classes,
        scores=np.asarray(outputs["detection_scores"], np.float32)[0, :count],
        class_names=[label_map.name_of(int(c)) for c in classes],
        masks=None if masks is None else np.asarray(masks, np.uint8)[0, :count],
    )


class TrainedPredictor:
    """A trained Model's checkpoint in the serving module export-model saves, in memory."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        checkpoint: str = "best",
        detection_overrides: dict | None = None,
    ):
        """`detection_overrides` changes the detection generator's settings (see
        trained.load_serving_module), e.g. to see an undertrained model's low-score boxes."""
        from .trained import load_serving_module

        self.module, trained, self.description = load_serving_module(
            model_dir, checkpoint, detection_overrides=detection_overrides
        )
        self.label_map = trained.label_map
        self.has_masks = self.module.has_masks
        self.metadata = trained.metadata

    def predict(self, image: np.ndarray) -> Detections:
        """Detections on one uint8 RGB image [H, W, 3]."""
        image = check_image(image)
        outputs = self.module.detect(image[np.newaxis])
        return detections_from_outputs({k: v.numpy() for k, v in outputs.items()}, self.label_map)


class ExportedPredictor:
    """An export-model directory: its SavedModel's serving_default signature."""

    def __init__(self, export_dir: str | os.PathLike):
        import tensorflow as tf

        from .serving import SERVING_DEFAULT

        export_dir = Path(export_dir)
        try:
            self.label_map = LabelMap.load(export_dir / JSON_FILE)
        except (LabelMapError, FileNotFoundError) as e:
            raise ModelArtifactError(f"{export_dir}: no usable {JSON_FILE} ({e})") from None
        info_path = export_dir / EXPORT_METADATA_FILE
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        self.saved_model = tf.saved_model.load(str(export_dir / SAVED_MODEL_DIR))
        if SERVING_DEFAULT not in self.saved_model.signatures:
            raise ModelArtifactError(
                f"{export_dir / SAVED_MODEL_DIR} has no {SERVING_DEFAULT} signature"
            )
        self._serve = self.saved_model.signatures[SERVING_DEFAULT]
        self.has_masks = "detection_masks" in self._serve.structured_outputs
        self.metadata = info
        self.description = {
            "source": "exported",
            "preset": info.get("preset"),
            "global_step": info.get("global_step"),
            "checkpoint": info.get("checkpoint"),
            "export_dir": str(export_dir),
        }

    def predict(self, image: np.ndarray) -> Detections:
        """Detections on one uint8 RGB image [H, W, 3]."""
        import tensorflow as tf

        image = check_image(image)
        outputs = self._serve(images=tf.constant(image[np.newaxis]))
        return detections_from_outputs({k: v.numpy() for k, v in outputs.items()}, self.label_map)
