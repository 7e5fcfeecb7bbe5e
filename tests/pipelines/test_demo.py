"""The demo's settings stay valid as the pipelines and presets change (its full run: `make demo`;
the same pipeline runs end to end in test_training_local.py)."""

from pathlib import Path

import pytest

from cvat_kfp.components.training.hyperparameters import parse_hyperparameters
from cvat_kfp.pipelines import parameters
from cvat_kfp.pipelines.cli import build_parser
from cvat_kfp.pipelines.demo import DEMOS, demo_arguments


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_arguments_are_valid_for_its_pipeline_and_preset(name):
    setup = DEMOS[name]
    arguments = demo_arguments(setup, Path("/data/export.zip"), seed=0)

    assert parameters.check_arguments(setup.pipeline, arguments) == arguments
    hyperparameters = parse_hyperparameters(setup.hyperparameters, setup.preset)
    assert hyperparameters.batch_size <= setup.num_images * 0.8
    assert arguments["gpu_count"] == 0 and arguments["pretrained_checkpoint_uri"] == ""


def test_the_maskrcnn_flag_picks_the_maskrcnn_pipeline():
    args = build_parser().parse_args(["demo", "--maskrcnn", "--work-dir", "d"])
    assert args.maskrcnn and args.work_dir == "d"
    assert DEMOS["maskrcnn_training"].preset == "maskrcnn-mobilenetv2-light"
    assert DEMOS["tfod_training"].preset == "retinanet-mobilenetv2-light"


def test_the_demo_tells_the_calibrated_thresholds_and_their_test_f1(tmp_path):
    from cvat_kfp.pipelines.demo import thresholds_summary

    path = tmp_path / "thresholds.json"
    path.write_text(
        '{"classes": [{"name": "circle", "threshold": 0.312, "calibrated": true},'
        ' {"name": "square", "threshold": 0.5, "calibrated": false,'
        ' "reason": "default: no validation objects"}]}'
    )
    text = thresholds_summary(path, {"mean_F1_calibrated": 0.81, "mean_F1_at_0.5": 0.4})
    assert text == (
        "score thresholds (calibrated on the val split): circle 0.31, square 0.50 (default)\n"
        "test mean F1 (box IoU .5): 0.810 at those thresholds, 0.400 at 0.5 for every class\n"
    )
