"""The training engine on CPU: RetinaNet-MobileNetV2 at 256 px, batch 2, a handful of steps."""

import json
import math
import shutil
import time
from types import SimpleNamespace

import pytest
import tensorflow as tf
from official.core import exp_factory
from official.vision.tasks.retinanet import RetinaNetTask

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord
from cvat_kfp.components.training import engine
from cvat_kfp.components.training.engine import (
    DivergedLossError,
    Intervals,
    LossGuard,
    TrainingInputError,
    train,
)
from cvat_kfp.components.training.strategy import DeviceError, DevicePlan

from ._training_data import make_tfrecords, small_config

COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_tfrecords(tmp_path_factory.mktemp("tfrecords"))


@pytest.fixture(scope="module")
def trained(tfrecords, tmp_path_factory):
    """6 steps, a checkpoint every 2 steps mirrored to a local durable path, evaluation every 4."""
    root = tmp_path_factory.mktemp("run")
    lines = []
    result = train(
        small_config(tfrecords, num_steps=6),
        model_dir=root / "model",
        durable_uri=str(root / "durable"),
        checkpoint_interval=2,
        eval_interval=4,
        label_map=tfrecords.label_map,
        log=lines.append,
    )
    return SimpleNamespace(result=result, root=root, durable=root / "durable", lines=lines)


@pytest.fixture()
def no_model_built(monkeypatch):
    """Fail the test if anything builds a Model Garden task (and so a model)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(engine.task_factory, "get_task", refuse)


def again(trained, tfrecords, model_dir, durable=None, **overrides):
    """The trained run's call, repeated."""
    return train(
        small_config(tfrecords, num_steps=6),
        model_dir=model_dir,
        durable_uri=str(durable or trained.durable),
        checkpoint_interval=2,
        eval_interval=4,
        label_map=tfrecords.label_map,
        log=print,
        **overrides,
    )


# --- a run ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trains_checkpoints_evaluates_and_mirrors(trained):
    result, model_dir = trained.result, trained.root / "model"
    assert (result.global_step, result.steps_trained, result.resumed_from_step) == (6, 6, None)
    assert math.isfinite(result.final_loss)
    assert COCO_KEYS <= set(result.metrics)
    assert all(isinstance(value, float) for value in result.metrics.values())

    assert sorted(p.name for p in model_dir.glob("ckpt-*.index")) == [
        "ckpt-2.index",
        "ckpt-4.index",
        "ckpt-6.index",
    ]
    assert result.latest_checkpoint == str(model_dir / "ckpt-6")
    for step in (2, 4, 6):
        assert (trained.durable / f"ckpt-{step}" / "_SUCCESS").is_file()
    latest = json.loads((trained.durable / "latest.json").read_text())
    assert (latest["step"], latest["checkpoint"]) == (6, "ckpt-6")
    assert latest["loss"] == pytest.approx(result.final_loss)

    assert result.best_checkpoint.startswith(str(model_dir / "best" / "best_ckpt-"))
    assert (trained.durable / "best" / "_SUCCESS").is_file()
    assert list((model_dir / "train").glob("events.out.tfevents.*"))
    assert list((model_dir / "validation").glob("events.out.tfevents.*"))
    assert (trained.durable / "events" / "train" / "_SUCCESS").is_file()

    config = result.config_path.read_text()
    assert "train_steps: 6" in config and "best_checkpoint_export_subdir: best" in config
    assert (model_dir / "label_map.pbtxt").is_file()
    saved = json.loads((model_dir / "metrics.json").read_text())
    assert saved == json.loads((trained.durable / "metrics.json").read_text())
    assert saved["global_step"] == 6 and saved["metrics"]["AP"] == result.metrics["AP"]
    assert any("step 4: evaluated on the val split: AP" in line for line in trained.lines)


@pytest.mark.slow
def test_a_finished_run_started_again_returns_at_once(trained, tfrecords, no_model_built):
    started = time.monotonic()
    result = again(trained, tfrecords, trained.root / "model")
    assert time.monotonic() - started < 5
    assert (result.global_step, result.steps_trained) == (6, 0)
    assert result.metrics == trained.result.metrics
    assert result.final_loss == trained.result.final_loss


@pytest.mark.slow
def test_a_finished_run_on_a_fresh_pod_gets_its_outputs_back(
    trained, tfrecords, tmp_path, no_model_built
):
    result = again(trained, tfrecords, tmp_path / "model")
    assert (result.global_step, result.steps_trained) == (6, 0)
    assert result.metrics == trained.result.metrics
    assert result.latest_checkpoint == str(tmp_path / "model" / "ckpt-6")
    assert result.best_checkpoint and (tmp_path / "model" / "best" / "info.json").is_file()
    assert list((tmp_path / "model" / "train").glob("events.out.tfevents.*"))
    assert (tmp_path / "model" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_finished_run_without_metrics_is_evaluated_not_trained(trained, tfrecords, tmp_path):
    durable = tmp_path / "durable"
    shutil.copytree(trained.durable, durable)
    (durable / "metrics.json").unlink()  # killed between the last checkpoint and the metrics
    result = again(trained, tfrecords, tmp_path / "model", durable=durable)
    assert (result.global_step, result.steps_trained, result.resumed_from_step) == (6, 0, 6)
    assert COCO_KEYS <= set(result.metrics)
    assert result.final_loss == pytest.approx(trained.result.final_loss)
    assert json.loads((durable / "metrics.json").read_text())["global_step"] == 6


@pytest.mark.slow
def test_another_models_checkpoint_location_is_refused(trained, tfrecords, no_model_built):
    config = small_config(tfrecords, num_steps=6)
    config.task.model.input_size = [384, 384, 3]
    with pytest.raises(TrainingInputError, match="holds checkpoints of another model"):
        train(
            config,
            model_dir=trained.root / "other",
            durable_uri=str(trained.durable),
            label_map=tfrecords.label_map,
            log=print,
        )


# --- the loss guard ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_nan_loss_stops_training_naming_its_step(tfrecords, tmp_path, monkeypatch):
    original = RetinaNetTask.train_step

    def nan_from_step_3(self, inputs, model, optimizer, metrics=None):
        logs = original(self, inputs, model, optimizer, metrics)
        nan = tf.constant(float("nan"), logs[self.loss].dtype)
        logs[self.loss] = tf.where(optimizer.iterations >= 3, nan, logs[self.loss])
        return logs

    monkeypatch.setattr(RetinaNetTask, "train_step", nan_from_step_3)
    config = small_config(tfrecords, num_steps=8, steps_per_loop=4)
    with pytest.raises(DivergedLossError) as raised:
        train(
            config,
            model_dir=tmp_path,
            checkpoint_interval=4,
            eval_interval=8,
            label_map=tfrecords.label_map,
            log=print,
        )
    message = str(raised.value)
    assert "the training loss became nan at step 3" in message  # not 4, where the loop ended
    assert "initial_learning_rate" in message and "warmup_steps" in message
    assert "No checkpoint was saved" in message
    assert not list(tmp_path.glob("ckpt-*"))


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([2.0, float("nan")], "became nan by step 2"),
        ([2.0, float("inf")], "became inf by step 2"),
        ([2.0, 2e4], r"reached 2e\+04 by step 2 \(limit 10000\)"),
        ([2.0, 1.5, 1.8, 250.0], r"jumped to 250 by step 4, 139x its recent median 1.8"),
    ],
)
def test_loss_guard_rules(losses, expected):
    guard = LossGuard()
    for step, loss in enumerate(losses[:-1], start=1):
        guard.check(step, loss)
    with pytest.raises(DivergedLossError, match=expected):
        guard.check(len(losses), losses[-1], learning_rate=0.03)


def test_loss_guard_lets_a_noisy_loss_through():
    guard = LossGuard()
    for step, loss in enumerate([5.0, 0.5, 2.0, 40.0, 1.0, 0.2], start=1):
        guard.check(step, loss)  # 40 is 20x the median: noisy, not diverging


def test_intervals_stop_at_every_checkpoint_and_evaluation():
    intervals = Intervals(num_steps=10, checkpoint=3, evaluation=4)
    stops, step = [], 0
    while step < 10:
        step = intervals.next_stop(step)
        stops.append(step)
    assert stops == [3, 4, 6, 8, 9, 10]
    assert [s for s in stops if intervals.is_checkpoint_step(s)] == [3, 6, 9, 10]
    assert [s for s in stops if intervals.is_evaluation_step(s)] == [4, 8, 10]


# --- errors before any model is built -------------------------------------------------------------


def split_of(tmp_path, name, num_images, include_masks=True):
    dataset = make_shapes_dataset(tmp_path / f"{name}_dataset", num_images=num_images)
    run_convert_to_tfrecord(
        dataset, tmp_path / name, split_name=name, include_masks=include_masks, num_workers=1
    )
    return str(tmp_path / name / f"{name}-*.tfrecord")


def train_with(config, tmp_path, label_map):
    train(config, model_dir=tmp_path / "model", label_map=label_map, log=print)


def test_an_empty_train_split_is_refused(tfrecords, tmp_path, no_model_built):
    config = small_config(tfrecords, num_steps=4)
    config.task.train_data.input_path = split_of(tmp_path, "train", 0)
    with pytest.raises(TrainingInputError, match=r"hold no examples .*the train split is empty"):
        train_with(config, tmp_path, tfrecords.label_map)


def test_a_batch_larger_than_the_dataset_is_refused(tfrecords, tmp_path, no_model_built):
    config = small_config(tfrecords, num_steps=4)
    config.task.train_data.input_path = split_of(tmp_path, "train", 1)
    with pytest.raises(TrainingInputError, match="batch_size 2 is larger than the 1 example"):
        train_with(config, tmp_path, tfrecords.label_map)


def test_a_class_count_mismatch_is_refused(tfrecords, tmp_path, no_model_built):
    config = small_config(tfrecords, num_steps=4)
    with pytest.raises(TrainingInputError, match=r"num_classes 4, but the label map has 2 class"):
        train_with(config, tmp_path, ["circle", "square"])


def test_tfrecords_of_other_classes_are_refused(tfrecords, tmp_path, no_model_built):
    config = small_config(tfrecords, num_steps=4)
    with pytest.raises(TrainingInputError, match=r"have the classes \['circle'"):
        train_with(config, tmp_path, LabelMap(("cat", "dog", "bird")))


def test_missing_tfrecords_are_refused(tfrecords, tmp_path, no_model_built):
    config = small_config(tfrecords, num_steps=4)
    config.task.train_data.input_path = str(tmp_path / "nothing" / "train-*.tfrecord")
    with pytest.raises(TrainingInputError, match="no train TFRecord files match"):
        train_with(config, tmp_path, tfrecords.label_map)


def test_a_config_built_for_other_devices_is_refused(tfrecords, tmp_path, no_model_built):
    config = small_config(tfrecords, num_steps=4)  # built for CPU
    one_gpu = DevicePlan(("/gpu:0",))
    with pytest.raises(DeviceError, match=r"does not fit 1 GPU .*num_gpus 0 \(expected 1\)"):
        train(config, model_dir=tmp_path / "model", label_map=tfrecords.label_map, devices=one_gpu)
    xla = config.replace(runtime={"enable_xla": True, "mixed_precision_dtype": "float16"})
    with pytest.raises(DeviceError, match="mixed_precision_dtype 'float16' on CPU, enable_xla"):
        train_with(xla, tmp_path, tfrecords.label_map)


def test_mask_rcnn_without_masks_is_refused(tfrecords, tmp_path, no_model_built):
    config = exp_factory.get_exp_config("maskrcnn_mobilenet_coco")
    config.task.model.num_classes = len(tfrecords.label_map) + 1
    config.task.train_data.input_path = split_of(tmp_path, "train", 4, include_masks=False)
    config.task.train_data.global_batch_size = 2
    config.task.validation_data.input_path = ""
    with pytest.raises(TrainingInputError, match="Mask R-CNN needs instance masks"):
        train_with(config, tmp_path, tfrecords.label_map)
