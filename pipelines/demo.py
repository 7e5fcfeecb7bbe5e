"""`make demo`: a training pipeline end to end on this machine (kfp.local, CPU), on a synthetic
CVAT "COCO 1.0" export of coloured shapes: export-annotations → split → TFRecords → train →
evaluate → export. Prints a line per stage, the test mAP and where the exported model is.

The light presets with a short schedule that learns from scratch on shapes (no checkpoint can be
downloaded here): a RetinaNet MobileNetV2 at 256 px (default; about 3 minutes on 2 cores) or,
with `maskrcnn=True`, a Mask R-CNN MobileNetV2 (about 1 s/step: about 10 minutes). The
evaluation calibrates each class's score threshold on the val split, and the demo prints them
with the test F1 they give beside the F1 at 0.5.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

IMAGE_SIZE = (256, 192)  # width, height


@dataclass(frozen=True)
class DemoSetup:
    pipeline: str
    preset: str
    hyperparameters: str
    num_images: int


DEMOS = {
    "tfod_training": DemoSetup(
        pipeline="tfod_training",
        preset="retinanet-mobilenetv2-light",
        hyperparameters=(
            "num_steps: 300\nbatch_size: 4\ninitial_learning_rate: 0.08\nwarmup_steps: 20\n"
            "checkpoint_interval: 100\neval_interval: 300\nseed: 1\n"
            "model_garden_overrides: {task.model.norm_activation.norm_momentum: 0.9}\n"
        ),
        num_images=100,
    ),
    # From random weights a frozen backbone learns nothing: stage 3 only (all layers), which
    # runs at a tenth of initial_learning_rate. 300 steps left the classifier's scores under 0.5
    # (test mAP 0.22-0.45, no detection at 0.5). 450 steps (about 10 minutes on 2 cores) and
    # the thresholds calibrated on val (evaluate-model, 0.20-0.39) found 11/15, 15/15 and 10/14
    # test shapes (seeds 0-2; mAP 0.33-0.55, mask mAP 0.35-0.63).
    "maskrcnn_training": DemoSetup(
        pipeline="maskrcnn_training",
        preset="maskrcnn-mobilenetv2-light",
        hyperparameters=(
            "num_steps: 450\nstage_1_epochs: 0\nstage_2_epochs: 0\nstage_3_epochs: 1\n"
            "batch_size: 2\ninitial_learning_rate: 0.3\nwarmup_steps: 30\n"
            "checkpoint_interval: 150\neval_interval: 450\nseed: 1\n"
            "model_garden_overrides: {task.model.norm_activation.norm_momentum: 0.9}\n"
        ),
        num_images=100,
    ),
}


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    exported_model: Path
    test_metrics: dict
    elapsed_s: float


def thresholds_summary(thresholds_path: Path, metrics: dict) -> str:
    """The calibrated score thresholds and the test F1 they give, against 0.5 for every class."""
    from cvat_kfp.components.inference.thresholds import read_thresholds

    rows = read_thresholds(thresholds_path)["classes"]
    parts = [
        f"{row['name']} {row['threshold']:.2f}" + ("" if row["calibrated"] else " (default)")
        for row in rows
    ]
    text = "score thresholds (calibrated on the val split): " + ", ".join(parts) + "\n"
    if "mean_F1_calibrated" in metrics:
        text += (
            f"test mean F1 (box IoU .5): {metrics['mean_F1_calibrated']:.3f} at those "
            f"thresholds, {metrics['mean_F1_at_0.5']:.3f} at 0.5 for every class\n"
        )
    return text


def make_demo_export(work_dir: Path, num_images: int, seed: int) -> Path:
    """A synthetic CVAT COCO 1.0 export (zip) of shapes with polygon masks, made once."""
    from cvat_kfp.components.common.synthetic import make_shapes_dataset
    from cvat_kfp.pipelines.cvat_export import write_cvat_coco_export

    archive = work_dir / f"shapes_{num_images}_seed{seed}_cvat_coco_1.0.zip"
    if not archive.is_file():
        dataset = make_shapes_dataset(
            work_dir / "shapes_dataset", num_images=num_images, image_size=IMAGE_SIZE,
            max_shapes=2, seed=seed,
        )  # fmt: skip
        write_cvat_coco_export(dataset, archive)
    return archive


def demo_arguments(setup: DemoSetup, source: Path, seed: int) -> dict:
    """Pipeline arguments of the demo: a light preset, random initial weights, CPU."""
    return {
        "source": str(source),
        "seed": seed,
        "preset": setup.preset,
        "hyperparameters": setup.hyperparameters,
        "pretrained_checkpoint_uri": "",  # nothing is downloaded: learn from scratch
        "gpu_count": 0,
        "tflite": "no",
    }


def run_demo(
    work_dir: str | Path = "demo",
    num_images: int | None = None,
    seed: int = 0,
    maskrcnn: bool = False,
    verbose: bool = False,
    console: TextIO | None = None,
) -> DemoResult:
    """Generate the export, run the pipeline locally, print the test mAP and the model's path."""
    from cvat_kfp.pipelines.local_run import run_locally

    console = console or sys.stdout
    setup = DEMOS["maskrcnn_training" if maskrcnn else "tfod_training"]
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = make_demo_export(work_dir, num_images or setup.num_images, seed)
    console.write(f"CVAT COCO 1.0 export (synthetic shapes): {source}\n")
    console.write(f"preset {setup.preset}, CPU, training from scratch:\n")
    run = run_locally(
        setup.pipeline,
        demo_arguments(setup, source, seed),
        work_dir / "runs",
        verbose=verbose,
        console=console,
    )
    metrics = run.find_metadata("metrics", "evaluate-model")
    exported = run.find("exported_model", "export-model")
    elapsed = time.monotonic() - started
    summary = f"test mAP (COCO AP@[.50:.95]): {metrics.get('AP', float('nan')):.3f}"
    summary += f", AP50: {metrics.get('AP50', float('nan')):.3f}"
    if "mask_AP" in metrics:
        summary += f", mask mAP: {metrics['mask_AP']:.3f}"
    console.write(f"\n{summary}\n")
    thresholds = run.find("evaluation", "evaluate-model") / "thresholds.json"
    console.write(thresholds_summary(thresholds, metrics))
    console.write(f"exported model: {exported}\n")
    console.write(f"evaluation report: {run.find('report', 'evaluate-model')}\n")
    console.write(f"demo finished in {elapsed / 60:.1f} min\n")
    return DemoResult(run.run_dir, exported, dict(metrics), elapsed)
