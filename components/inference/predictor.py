"""One way to run a model on images, for evaluate-model, export-model and preannotate.

A `Predictor` wraps either a trained Model artifact (train-tfod / train-maskrcnn: params.yaml
plus a checkpoint) or an exported model (export-model: saved_model/), and answers with the
exported signature's conventions whatever it wraps: boxes normalized to the original image
[ymin, xmin, ymax, xmax], class ids 1..N (the label map's), scores, and full-image masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..common.label_map import LabelMap


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
    raise NotImplementedError("implemented with issue 5 (export-model)")
