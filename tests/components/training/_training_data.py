"""Small TFRecords and a small CPU experiment config for the training-engine tests.

Run as a module, it is the training process that the resumption tests start and kill:
`python -m tests.components.training._training_data '<json arguments>'`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.common.synthetic import SHAPES, make_shapes_dataset
from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord

REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGE_SIZE = 256
BATCH_SIZE = 2


@dataclass(frozen=True)
class TFRecordSplits:
    train_dir: Path
    val_dir: Path
    label_map: LabelMap

    @property
    def train_pattern(self) -> str:
        return str(self.train_dir / "train-*.tfrecord")

    @property
    def val_pattern(self) -> str:
        return str(self.val_dir / "val-*.tfrecord")


def make_tfrecords(root: Path, num_train: int = 8, num_val: int = 4, seed: int = 0):
    """Shapes images converted to train and val TFRecords under `root`."""
    root = Path(root)
    splits = {"train": num_train, "val": num_val}
    for offset, (split, count) in enumerate(splits.items()):
        dataset = make_shapes_dataset(
            root / f"{split}_dataset", num_images=count, image_size=(160, 128), seed=seed + offset
        )
        run_convert_to_tfrecord(dataset, root / split, split_name=split, num_workers=1)
    return TFRecordSplits(root / "train", root / "val", LabelMap(SHAPES))


def small_config(
    data: TFRecordSplits,
    *,
    num_steps: int,
    learning_rate: float = 0.01,
    warmup_steps: int = 2,
    steps_per_loop: int = 1,
):
    """The light RetinaNet-MobileNetV2 (FPNLite) preset at 256 px, batch 2, float32 (CPU)."""
    config = _preset_config(data, num_steps, learning_rate, warmup_steps)
    config.trainer.steps_per_loop = config.trainer.summary_interval = steps_per_loop
    config.task.train_data.shuffle_buffer_size = 16
    return config


def _preset_config(data, num_steps, learning_rate, warmup_steps):
    from cvat_kfp.components.training.experiment import build_experiment_config
    from cvat_kfp.components.training.hyperparameters import parse_hyperparameters

    preset = "retinanet-mobilenetv2-light"
    hp = parse_hyperparameters(
        {
            "num_steps": num_steps,
            "batch_size": BATCH_SIZE,
            "initial_learning_rate": learning_rate,
            "warmup_steps": warmup_steps,
            "image_size": IMAGE_SIZE,
        },
        preset,
    )
    return build_experiment_config(
        preset,
        hp,
        train_pattern=data.train_pattern,
        val_pattern=data.val_pattern,
        num_classes=len(data.label_map),
        include_masks=False,
    )


def run_training_from_arguments(arguments: dict) -> None:
    """The killable training process: builds the data config, trains, prints one JSON line."""
    from cvat_kfp.components.training.engine import train

    data = TFRecordSplits(
        Path(arguments["train_dir"]), Path(arguments["val_dir"]), LabelMap(SHAPES)
    )
    config = small_config(data, num_steps=arguments["num_steps"])
    result = train(
        config,
        model_dir=arguments["model_dir"],
        durable_uri=arguments.get("durable_uri"),
        checkpoint_interval=arguments["checkpoint_interval"],
        eval_interval=arguments["eval_interval"],
        label_map=data.label_map,
        log=lambda line: print(line, flush=True),
    )
    print("RESULT " + json.dumps(result.summary()), flush=True)


if __name__ == "__main__":
    run_training_from_arguments(json.loads(sys.argv[1]))
