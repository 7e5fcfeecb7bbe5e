"""A trained Model artifact (train-tfod / train-maskrcnn) read back: config, classes, checkpoint.

`load_serving_module` builds the same ServingModule export-model saves, in memory, and restores
the chosen checkpoint's model weights into it (the trainer's checkpoints hold `model`,
`optimizer` and `global_step`; only `model` is read).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..common.label_map import JSON_FILE, LabelMap, LabelMapError
from ..training.checkpoints import BEST_DIR, CONFIG_FILE
from ..training.checkpoints import MODEL_METADATA_FILE as METADATA_FILE

CHECKPOINTS = ("best", "latest")
# Candidates per class kept before NMS when serving. Model Garden's COCO default, 5000, is sized
# for 1024 px inputs; on the light presets' 12k anchors it made NMS 80% of a RetinaNet's CPU time
# (140 ms of 180 per image in TF, 550 of 565 in TFLite). The final 100 detections come from far
# fewer candidates; R-CNN's second stage sees at most 1000 proposals, so it is unaffected.
SERVING_PRE_NMS_TOP_K = 1000

logger = logging.getLogger(__name__)
Log = Callable[[str], None]


class ModelArtifactError(ValueError):
    """A directory that is not a usable trained Model (or exported model), or a bad argument."""


@dataclass(frozen=True)
class TrainedModel:
    """What a trained Model directory says about itself."""

    directory: Path
    metadata: dict
    label_map: LabelMap
    config_yaml: str

    @property
    def preset(self) -> str:
        return self.metadata["preset"]

    @classmethod
    def read(cls, directory: str | os.PathLike) -> TrainedModel:
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelArtifactError(f"{directory}: no such Model directory")
        missing = [
            name
            for name in (METADATA_FILE, CONFIG_FILE, JSON_FILE)
            if not (directory / name).is_file()
        ]
        if missing:
            raise ModelArtifactError(
                f"{directory} is not a trained Model of train-tfod / train-maskrcnn: it lacks "
                f"{', '.join(missing)}. Pass the `model` output of a train component."
            )
        try:
            metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelArtifactError(f"{directory / METADATA_FILE}: not valid JSON ({e})") from None
        if not isinstance(metadata, dict) or not metadata.get("preset"):
            raise ModelArtifactError(f"{directory / METADATA_FILE}: names no preset")
        try:
            label_map = LabelMap.load(directory / JSON_FILE)
        except LabelMapError as e:
            raise ModelArtifactError(str(e)) from None
        config_yaml = (directory / CONFIG_FILE).read_text(encoding="utf-8")
        return cls(directory, metadata, label_map, config_yaml)

    def experiment_config(self):
        from ..training.experiment import experiment_config_from_yaml

        return experiment_config_from_yaml(self.config_yaml, self.preset)

    def checkpoint_path(self, checkpoint: str = "best", log: Log | None = None) -> tuple[str, str]:
        """The checkpoint prefix to restore and which one it is ("best" or "latest").

        "best" falls back to the latest checkpoint, with a log line, when the run kept none.
        """
        import tensorflow as tf

        log = log or logger.info
        if checkpoint not in CHECKPOINTS:
            raise ModelArtifactError(
                f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {checkpoint!r}"
            )
        if checkpoint == "best":
            best_dir = self.directory / BEST_DIR
            best = tf.train.latest_checkpoint(str(best_dir)) if best_dir.is_dir() else None
            if best:
                return best, "best"
            log(
                f"{self.directory} kept no best checkpoint (trained without evaluation?): "
                "using the latest checkpoint"
            )
        latest = tf.train.latest_checkpoint(str(self.directory))
        if not latest:
            raise ModelArtifactError(
                f"{self.directory} holds no checkpoint (no `checkpoint` index and ckpt-* files): "
                "was training interrupted before its first checkpoint?"
            )
        return latest, "latest"


def checkpoint_global_step(prefix: str) -> int | None:
    """The trainer's global step saved in a checkpoint (None if it holds none)."""
    import tensorflow as tf

    try:
        return int(tf.train.load_variable(prefix, "global_step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.NotFoundError, ValueError):
        return None


def load_serving_module(
    model_dir: str | os.PathLike,
    checkpoint: str = "best",
    input_size=None,
    log: Log | None = None,
    detection_overrides: dict | None = None,
):
    """(ServingModule with restored weights, TrainedModel, description dict).

    The detection generator keeps at most SERVING_PRE_NMS_TOP_K candidates per class before NMS;
    `detection_overrides` then override its config (e.g. `{"pre_nms_score_threshold": 0.0}` to
    see an undertrained model's detections, `{"pre_nms_top_k": 5000}` for the training value).
    """
    import tensorflow as tf

    from .serving import ServingModule

    trained = TrainedModel.read(model_dir)
    prefix, which = trained.checkpoint_path(checkpoint, log)
    config = trained.experiment_config()
    generator = config.task.model.detection_generator
    generator.pre_nms_top_k = min(generator.pre_nms_top_k, SERVING_PRE_NMS_TOP_K)
    if detection_overrides:
        config.override(
            {"task": {"model": {"detection_generator": dict(detection_overrides)}}},
            is_strict=True,
        )
    module = ServingModule(config, trained.label_map.names, input_size)
    status = tf.train.Checkpoint(model=module.model).read(prefix)
    # the model's own variables must all be there; optimizer slots and step are not ours
    status.expect_partial().assert_existing_objects_matched()
    description = {
        "source": "trained",
        "preset": trained.preset,
        "global_step": checkpoint_global_step(prefix),
        "checkpoint": which,
        "checkpoint_path": prefix,
        "model_dir": str(trained.directory),
    }
    return module, trained, description
