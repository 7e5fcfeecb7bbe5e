"""Small trained Model artifacts (the train components' output) for the stages after training.

`train_tiny_model` runs the real training entry point on generated shapes: a light RetinaNet
(boxes) or a light Mask R-CNN (boxes and masks). The RetinaNet learns enough in 160 steps that
its predictions are meaningful (val AP about 0.5, see tests/components/training/test_learning.py);
the Mask R-CNN trains a few steps only (0.6 s/step on CPU): its outputs have the right form,
not good values. Session fixtures in tests/conftest.py train each once per pytest process.
"""

from __future__ import annotations

from pathlib import Path

from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord

CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = (256, 192)  # width, height: not square, so box and mask scaling is exercised

HYPERPARAMETERS = {
    "retinanet-mobilenetv2-light": (
        "num_steps: 160\nbatch_size: 4\ninitial_learning_rate: 0.08\nwarmup_steps: 16\n"
        "eval_interval: 160\ncheckpoint_interval: 80\nseed: 1\n"
        "model_garden_overrides: {task.model.norm_activation.norm_momentum: 0.9}\n"
    ),
    "maskrcnn-mobilenetv2-light": (
        "num_steps: 4\nstage_1_epochs: 1\nstage_2_epochs: 0\nstage_3_epochs: 1\nbatch_size: 2\n"
        "initial_learning_rate: 0.01\nwarmup_steps: 2\neval_interval: 8\ncheckpoint_interval: 8\n"
        "seed: 1\n"
    ),
}
COMPONENTS = {
    "retinanet-mobilenetv2-light": "train_tfod",
    "maskrcnn-mobilenetv2-light": "train_maskrcnn",
}


def make_split_tfrecords(root: Path, split: str, num_images: int, seed: int) -> Path:
    """Shapes images (with masks) converted to one split's TFRecords artifact directory."""
    dataset = make_shapes_dataset(
        root / f"{split}_dataset",
        num_images=num_images,
        image_size=IMAGE_SIZE,
        classes=CLASSES,
        max_shapes=2,
        seed=seed,
    )
    run_convert_to_tfrecord(dataset, root / split, split_name=split, num_workers=1)
    return root / split


def train_tiny_model(root: Path, preset: str = "retinanet-mobilenetv2-light") -> Path:
    """Train `preset` on generated shapes under `root`; returns the Model artifact directory.

    `root/test` holds a test split's TFRecords of the same classes (the evaluate stage's input).
    """
    from cvat_kfp.components.training.run import run_training

    root = Path(root)
    splits = {
        split: make_split_tfrecords(root, split, count, seed)
        for split, count, seed in (("train", 48, 0), ("val", 8, 1), ("test", 8, 2))
    }
    model_dir = root / "model"
    run_training(
        splits["train"],
        splits["val"],
        model_dir,
        component=COMPONENTS[preset],
        preset=preset,
        hyperparameters=HYPERPARAMETERS[preset],
    )
    return model_dir
