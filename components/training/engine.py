"""The training run shared by train-tfod and train-maskrcnn.

Model Garden provides the task (model, inputs, losses, COCO evaluation), its Trainer and the orbit
Controller; this module adds what a pipeline step needs around them:

- checks of the data against the config before any model is built;
- resumption from the newest checkpoint locally or at the durable location (checkpoints.py):
  global step, weights and optimizer state (slots, iterations, hence the learning-rate schedule);
- training in chunks that end at each checkpoint and evaluation step, so that every checkpoint is
  mirrored as soon as it is written;
- a guard that stops a diverging run (NaN/Inf or exploding loss) before it saves a checkpoint;
- evaluation on the val split at an interval, keeping the best checkpoint by AP beside the latest
  (where and by which metric: the config's trainer.best_checkpoint_* fields, set by experiment.py);
- Mask R-CNN's staged schedule: chunks also end at stage starts, where the backbone layers the
  stage freezes are set non-trainable and the train function is traced again. The stage follows
  from the global step, so a resumed run freezes what its stage freezes before its first step;
  the learning rate is the config's schedule of the global step (experiment.py), not set here;
- a finished run started again returns its outputs without building the model.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orbit
import tensorflow as tf
from official.core import base_trainer, task_factory, train_utils

from ..common import storage, tfrecords
from ..common.label_map import LabelMap
from ..common.tfrecords import MANIFEST_FILE
from .checkpoints import (
    BEST_DIR,
    CONFIG_FILE,
    EVENTS_DIR,
    METRICS_FILE,
    DurableCheckpoints,
    latest_local_checkpoint,
    latest_local_step,
)
from .experiment import effective_config_yaml
from .hyperparameters import TrainingStage, stage_at
from .strategy import (
    CPU_DTYPE,
    DeviceError,
    DevicePlan,
    create_strategy,
    plan_devices,
    runtime_settings,
    set_precision_policy,
)

TRAIN_SUMMARY_DIR = "train"
BEST_INFO_FILE = "info.json"  # Model Garden's BestCheckpointExporter writes it into best/
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Matterport's "4+" trains ResNet's conv4_x and conv5_x: the backbone layers at output stride 16
# and coarser. The same rule picks MobileNetV2's blocks from its first 64-channel one.
STAGE_4_STRIDE = 16

Log = Callable[[str], None]


class _DropOrbitsLoggedCopies(logging.Filter):
    """orbit's Controller both prints each progress line and logs it through absl at INFO, so a
    component log showed each twice (bare, and again through the KFP executor's root handler):
    keep the print, which is also the one copy seen where no handler is configured. absl records
    the line under the Controller method that called orbit's `_log`, hence the match by file."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_controller = record.pathname == orbit.controller.__file__
        return not (from_controller and record.levelno == logging.INFO)


logging.getLogger("absl").addFilter(_DropOrbitsLoggedCopies())


class TrainingInputError(ValueError):
    """The data, label map or config cannot train; found before any model is built."""


class DivergedLossError(RuntimeError):
    """The loss became NaN/Inf or exploded; training stopped before saving a checkpoint."""


@dataclass
class TrainResult:
    global_step: int
    final_loss: float | None
    metrics: dict[str, float]
    model_dir: Path
    config_path: Path
    latest_checkpoint: str | None
    best_checkpoint: str | None
    durable_uri: str | None
    resumed_from_step: int | None  # None: started from scratch (or from init_checkpoint)
    steps_trained: int  # in this call
    train_seconds: float  # wall time in training steps in this call (evaluation excluded)

    def summary(self) -> dict:
        """JSON-able, for logs and KFP metadata."""
        return {
            name: str(value) if isinstance(value, Path) else value
            for name, value in self.__dict__.items()
        }


@dataclass(frozen=True)
class Intervals:
    """Where training stops to checkpoint and to evaluate; the last step does both."""

    num_steps: int
    checkpoint: int
    evaluation: int
    evaluates: bool = True  # False: no val split
    stage_starts: tuple[int, ...] = ()  # training also stops there, to change what trains

    def next_stop(self, step: int) -> int:
        following = [(step // every + 1) * every for every in (self.checkpoint, self.evaluation)]
        stages = [start for start in self.stage_starts if start > step]
        return min([self.num_steps, *following, *stages])

    def is_checkpoint_step(self, step: int) -> bool:
        return step % self.checkpoint == 0 or step >= self.num_steps

    def is_evaluation_step(self, step: int) -> bool:
        return self.evaluates and (step % self.evaluation == 0 or step >= self.num_steps)


@dataclass
class LossGuard:
    """Stops training when the loss is NaN/Inf, above `max_loss`, or `max_growth` times the
    median of its last `window` values (once `min_history` are known).

    Checked once per orbit loop, on the loop's mean loss; a NaN step is named exactly (the
    trainer notes the first step whose loss was not finite).
    """

    max_loss: float = 1e4
    max_growth: float = 100.0
    window: int = 20
    min_history: int = 3
    history: deque = field(default_factory=deque, init=False, repr=False)

    def check(
        self,
        step: int,
        loss: float,
        first_nonfinite_step: int | None = None,
        learning_rate: float | None = None,
    ) -> None:
        problem = self._problem(step, loss, first_nonfinite_step)
        if problem:
            raise DivergedLossError(f"Training stopped: {problem}. {_advice(learning_rate)}")
        self.history.append(loss)
        while len(self.history) > self.window:
            self.history.popleft()

    def _problem(self, step: int, loss: float, first_nonfinite_step: int | None) -> str | None:
        if not math.isfinite(loss):
            if first_nonfinite_step is not None and first_nonfinite_step >= 0:
                return f"the training loss became {loss} at step {first_nonfinite_step}"
            return f"the training loss became {loss} by step {step}"
        if loss > self.max_loss:
            return f"the training loss reached {loss:.4g} by step {step} (limit {self.max_loss:g})"
        if len(self.history) >= self.min_history:
            median = statistics.median(self.history)
            if median > 0 and loss > self.max_growth * median:
                return (
                    f"the training loss jumped to {loss:.4g} by step {step}, "
                    f"{loss / median:.0f}x its recent median {median:.4g}"
                )
        return None


def _advice(learning_rate: float | None) -> str:
    at = f" (it was {learning_rate:.3g} when training stopped)" if learning_rate is not None else ""
    return (
        f"Try a lower initial_learning_rate{at}, a longer warmup (warmup_steps), or check the "
        "data: boxes, labels and images of the train TFRecords."
    )


def train(
    config,
    *,
    model_dir: str | Path,
    label_map: LabelMap | Sequence[str],
    durable_uri: str | None = None,
    checkpoint_interval: int | None = None,
    eval_interval: int | None = None,
    keep_checkpoints: int = 3,
    devices: DevicePlan | None = None,
    loss_guard: LossGuard | None = None,
    stages: Sequence[TrainingStage] = (),
    log: Log = print,
) -> TrainResult:
    """Train the Model Garden experiment `config` to `config.trainer.train_steps`, resuming.

    Checkpoints go to `model_dir` every `checkpoint_interval` steps and are mirrored to
    `durable_uri` (a path or gs:// URI) when given; evaluation on the val split runs every
    `eval_interval` steps and at the end (both default to the config's trainer intervals).
    `stages` is Mask R-CNN's staged schedule (`Hyperparameters.stages`): what trains when.
    `devices` is the plan the config was built for (experiment.build_experiment_config sets its
    runtime; default: the config's runtime.num_gpus of the visible GPUs). Raises
    TrainingInputError before building anything when the data cannot train, DeviceError when the
    config's runtime does not fit the devices, DivergedLossError when the loss diverges.
    """
    model_dir = Path(model_dir)
    label_map = label_map if isinstance(label_map, LabelMap) else LabelMap(tuple(label_map))
    plan = devices or plan_devices(config.runtime.num_gpus)
    intervals = _intervals(config, checkpoint_interval, eval_interval, has_validation(config))
    intervals = replace(intervals, stage_starts=tuple(stage.first_step for stage in stages))
    config = effective_config(config, intervals, keep_checkpoints)
    check_training_inputs(config, label_map, log)
    check_runtime(config, plan)
    durable = DurableCheckpoints(durable_uri, keep_checkpoints, log) if durable_uri else None
    if durable:
        _check_same_model(durable, config)

    model_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_effective_config(config, model_dir)
    label_map.save(model_dir)
    best = best_dir(config, model_dir)
    start_step = _restore(durable, model_dir, best) if durable else latest_local_step(model_dir)
    finished = _finished_result(model_dir, best, config_path, intervals, durable, start_step)
    if finished:
        log(f"step {start_step} of {intervals.num_steps}: already trained and evaluated")
        return finished

    log(f"training on {plan.describe()}")
    run = _TrainingRun(
        config,
        plan,
        intervals,
        model_dir,
        durable,
        loss_guard or LossGuard(),
        keep_checkpoints,
        tuple(stages),
        log,
    )
    run.train()
    return run.finish(config_path, start_step)


def effective_config(config, intervals: Intervals, keep_checkpoints: int):
    """A locked copy of `config` with what this call does: intervals, checkpoints kept."""
    trainer = {
        "checkpoint_interval": intervals.checkpoint,
        "validation_interval": intervals.evaluation,
        "max_to_keep": keep_checkpoints,
    }
    config = config.replace(trainer=trainer)
    config.lock()
    return config


def check_runtime(config, plan: DevicePlan) -> None:
    """The config's runtime must be the one build_experiment_config sets for `plan`."""
    runtime = config.runtime
    expected = runtime_settings(plan)
    mismatched = [
        f"{name} {getattr(runtime, name)!r} (expected {expected[name]!r})"
        for name in ("num_gpus", "distribution_strategy")
        if getattr(runtime, name) != expected[name]
    ]
    if not plan.on_gpu and (runtime.mixed_precision_dtype or CPU_DTYPE) != CPU_DTYPE:
        mismatched.append(f"mixed_precision_dtype {runtime.mixed_precision_dtype!r} on CPU")
    if not plan.on_gpu and runtime.enable_xla:
        mismatched.append("enable_xla on CPU")
    if mismatched:
        raise DeviceError(
            f"the config's runtime does not fit {plan.describe()}: {', '.join(mismatched)}. "
            "Build it with experiment.build_experiment_config(devices=...) for these devices."
        )


def best_dir(config, model_dir: Path) -> Path | None:
    """Where the config keeps the best checkpoint (durably: best/); None: it keeps none."""
    trainer = config.trainer
    keeps = has_validation(config) and trainer.best_checkpoint_eval_metric
    subdir = trainer.best_checkpoint_export_subdir
    return model_dir / subdir if keeps and subdir else None


def write_effective_config(config, model_dir: Path) -> Path:
    path = model_dir / CONFIG_FILE
    path.write_text(effective_config_yaml(config), encoding="utf-8")
    return path


def has_validation(config) -> bool:
    """A config without a val pattern trains without evaluation (and without a best checkpoint)."""
    return bool(config.task.validation_data.input_path)


def _intervals(config, checkpoint_interval, eval_interval, evaluates: bool) -> Intervals:
    intervals = Intervals(
        num_steps=int(config.trainer.train_steps),
        checkpoint=int(checkpoint_interval or config.trainer.checkpoint_interval),
        evaluation=int(eval_interval or config.trainer.validation_interval),
        evaluates=evaluates,
    )
    for name in ("num_steps", "checkpoint", "evaluation"):
        if getattr(intervals, name) < 1:
            raise TrainingInputError(f"{name} must be at least 1 step, got {intervals}")
    return intervals


# --- checks before any model is built -------------------------------------------------------------


def check_training_inputs(config, label_map: LabelMap, log: Log = print) -> None:
    """Refuse, with a message saying what to change, data and config that cannot train."""
    num_classes = config.task.model.num_classes
    if num_classes != len(label_map) + 1:
        raise TrainingInputError(
            f"the model config has num_classes {num_classes}, but the label map has "
            f"{len(label_map)} classes {list(label_map.names)}: num_classes must be "
            f"{len(label_map) + 1} (the classes plus background)"
        )
    splits = [("train", config.task.train_data)]
    if has_validation(config):
        splits.append(("val", config.task.validation_data))
    manifests = {split: _read_manifest(split, data.input_path, log) for split, data in splits}
    for split, data in splits:
        if manifests[split] is not None:
            _check_split(split, manifests[split], data, label_map)
    train = manifests["train"]
    if getattr(config.task.model, "include_mask", False) and train and not train["has_masks"]:
        raise TrainingInputError(
            f"Mask R-CNN needs instance masks, but the train TFRecords at {train['dir']} hold "
            "boxes only (no annotation has a segmentation). Annotate polygons or masks in CVAT, "
            "or train a box detector (train-tfod)."
        )


def _read_manifest(split: str, input_path, log: Log) -> dict | None:
    """The convert-to-tfrecord manifest beside a local `input_path` pattern (None if absent)."""
    patterns = input_path if isinstance(input_path, list | tuple) else str(input_path).split(",")
    pattern = str(patterns[0]).strip() if patterns else ""
    if not pattern or not storage.is_local(pattern):
        return None
    pattern = str(storage.local_path(pattern))
    manifest_path = Path(pattern).parent / MANIFEST_FILE
    if not manifest_path.is_file():
        if not any(glob.glob(p.strip()) for p in patterns):
            raise TrainingInputError(
                f"no {split} TFRecord files match {pattern}; pass the {split} TFRecords artifact "
                "of convert-to-tfrecord"
            )
        log(f"no {MANIFEST_FILE} beside {pattern}: {split} size and class checks skipped")
        return None
    try:
        manifest = tfrecords.read_manifest(manifest_path.parent)
    except tfrecords.TFRecordsError as e:
        raise TrainingInputError(f"the {split} TFRecords: {e}") from None
    return {**manifest, "dir": str(manifest_path.parent)}


def _check_split(split: str, manifest: dict, data_config, label_map: LabelMap) -> None:
    where = f"the {split} TFRecords at {manifest['dir']}"
    examples = int(manifest["num_examples"])
    if examples == 0:
        raise TrainingInputError(
            f"{where} hold no examples ({MANIFEST_FILE}: num_examples 0): the {split} split is "
            "empty. Give it images (the split fractions) or annotate more."
        )
    batch = int(data_config.global_batch_size)
    if batch > examples and (split == "train" or data_config.drop_remainder):
        raise TrainingInputError(
            f"batch_size {batch} is larger than the {examples} example(s) of {where}; lower "
            f"batch_size to at most {examples}, or add images"
        )
    names = list(manifest.get("class_names") or [])
    if names and names != list(label_map.names):
        raise TrainingInputError(
            f"{where} have the classes {names}, but the label map has {list(label_map.names)}; "
            "convert every split from the same dataset"
        )


def _model_fingerprint(config) -> dict:
    model = config.task.model
    return {
        "task": type(config.task).__name__,
        "num_classes": int(model.num_classes),
        "backbone": model.backbone.type,
        "input_size": [int(x) for x in model.input_size],
    }


def _check_same_model(durable: DurableCheckpoints, config) -> None:
    latest = durable.latest() or {}
    saved, ours = latest.get("model"), _model_fingerprint(config)
    if saved and saved != ours:
        raise TrainingInputError(
            f"the checkpoint location {durable.uri} holds checkpoints of another model "
            f"({saved}, this run: {ours}). Give this run its own checkpoint location, or empty "
            "that one to start over."
        )


# --- resumption -----------------------------------------------------------------------------------


def _restore(durable: DurableCheckpoints, model_dir: Path, best: Path | None) -> int | None:
    """Bring the newest durable checkpoint, best checkpoint and events into `model_dir`."""
    step = durable.restore_latest(model_dir)
    if best and not (best / BEST_INFO_FILE).is_file():
        durable.restore_directory(BEST_DIR, best)
    for name in _summary_dirs():
        if not (model_dir / name).is_dir():
            durable.restore_directory(f"{EVENTS_DIR}/{name}", model_dir / name)
    return step


def _summary_dirs(config=None) -> tuple[str, str]:
    validation = config.trainer.validation_summary_subdir if config else "validation"
    return TRAIN_SUMMARY_DIR, validation


def _finished_result(model_dir, best, config_path, intervals, durable, step) -> TrainResult | None:
    """The outputs of a run that already reached num_steps and was evaluated there."""
    if step is None or step < intervals.num_steps:
        return None
    summary = _read_json(model_dir / METRICS_FILE)
    if summary is None and durable is not None:
        summary = durable.read_json(METRICS_FILE)
        if summary is not None:
            _write_json(model_dir / METRICS_FILE, summary)
    if not summary or summary.get("global_step") != step:
        return None
    return TrainResult(
        global_step=step,
        final_loss=summary.get("final_loss"),
        metrics=summary["metrics"],
        model_dir=model_dir,
        config_path=config_path,
        latest_checkpoint=latest_local_checkpoint(model_dir),
        best_checkpoint=latest_best_checkpoint(best),
        durable_uri=durable.uri if durable else None,
        resumed_from_step=step,
        steps_trained=0,
        train_seconds=0.0,
    )


# --- the run --------------------------------------------------------------------------------------


class NonFiniteWatchingTrainer(base_trainer.Trainer):
    """Model Garden's Trainer that also notes the first step whose loss was not finite."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_nonfinite_step = tf.Variable(
            -1,
            dtype=tf.int64,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    def train_step(self, iterator):
        super().train_step(iterator)
        # The loop's running mean loss turns non-finite at the first non-finite step.
        unseen = self.first_nonfinite_step < 0
        now_bad = tf.logical_not(tf.math.is_finite(self.train_loss.result()))
        self.first_nonfinite_step.assign(
            tf.where(unseen & now_bad, self.global_step, self.first_nonfinite_step)
        )

    def retrace_train_loop(self) -> None:
        """Trace the train loop again on its next run, e.g. after layers were (un)frozen.

        orbit keeps the traced loop, and with it the trainable variables and the BatchNorm
        modes it was traced with; optimizer state lives in variables and is kept.
        """
        self._train_loop_fn = None


def set_stage_layers(model, layers: str) -> str:
    """Make the backbone of a Model Garden `model` trainable as stage `layers` says; returns what
    trains, for the log. The decoder (FPN) and the heads always train.

    Keras' `trainable = False` leaves a layer's variables out of `model.trainable_variables` and
    runs its BatchNorm in inference mode (moving statistics kept).
    """
    backbone = model.backbone
    backbone.trainable = layers != "heads"
    if layers == "heads":
        return "heads and FPN; backbone frozen"
    if layers == "all":
        return "all layers"
    input_height = backbone.inputs[0].shape[1]
    for layer in backbone.layers:
        output_height = tf.nest.flatten(layer.output)[0].shape[1]
        if input_height // output_height < STAGE_4_STRIDE:
            layer.trainable = False
    trained = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    return f"heads, FPN and the {len(trained)} backbone layers at output stride 16 and coarser"


def build_trainer(config, task, model_dir: str | Path) -> NonFiniteWatchingTrainer:
    """Model Garden's create_trainer with the best-checkpoint exporter; call in strategy scope."""
    exporter = train_utils.maybe_create_best_ckpt_exporter(config, str(model_dir))
    return train_utils.create_trainer(
        config,
        task,
        train=True,
        evaluate=has_validation(config),
        checkpoint_exporter=exporter,
        trainer_cls=NonFiniteWatchingTrainer,
    )


def build_checkpoint_manager(trainer, model_dir: str | Path, keep: int):
    """Local checkpoints; no interval of its own: the run saves at its chunk ends."""
    return tf.train.CheckpointManager(
        trainer.checkpoint,
        str(model_dir),
        max_to_keep=keep,
        step_counter=trainer.global_step,
        init_fn=trainer.initialize,
    )


class _TrainingRun:
    """One call's training: Model Garden's task and trainer driven by an orbit Controller."""

    def __init__(self, config, plan, intervals, model_dir, durable, guard, keep, stages, log):
        self.config, self.intervals, self.model_dir = config, intervals, model_dir
        self.durable, self.guard, self.stages, self.log = durable, guard, stages, log
        self.stage: TrainingStage | None = None  # the stage whose layers are set trainable
        self.best_dir = best_dir(config, model_dir)
        set_precision_policy(config)
        self.strategy = create_strategy(plan)
        with self.strategy.scope():
            task = task_factory.get_task(config.task, logging_dir=str(model_dir))
            self.trainer = build_trainer(config, task, model_dir)
            self.manager = build_checkpoint_manager(self.trainer, model_dir, keep)
            train_dir, validation_dir = _summary_dirs(config)
            self.controller = orbit.Controller(  # restores the newest local checkpoint
                strategy=self.strategy,
                trainer=self.trainer,
                evaluator=self.trainer if has_validation(config) else None,
                global_step=self.trainer.global_step,
                steps_per_loop=min(
                    config.trainer.steps_per_loop, intervals.checkpoint, intervals.evaluation
                ),
                checkpoint_manager=self.manager,
                summary_dir=str(model_dir / train_dir),
                eval_summary_dir=str(model_dir / validation_dir),
                train_actions=[self._watch_loss],
            )
        latest = durable.latest() if durable else None
        self.last_loss = latest.get("loss") if latest and latest["step"] == self.step else None
        self.last_saved_step = self.step
        self.metrics: dict[str, float] = {}
        self.metrics_step: int | None = None
        self.train_seconds = 0.0

    @property
    def step(self) -> int:
        return int(self.trainer.global_step.numpy())

    def train(self) -> None:
        self.log(f"training from step {self.step} to {self.intervals.num_steps}")
        while self.step < self.intervals.num_steps:
            self._enter_stage()
            stop = self.intervals.next_stop(self.step)
            started = time.monotonic()
            try:
                with self.strategy.scope():
                    self.controller.train(steps=stop, checkpoint_at_completion=False)
            except DivergedLossError as error:
                raise DivergedLossError(f"{error} {self._restart_hint()}") from None
            self.train_seconds += time.monotonic() - started
            if self.intervals.is_checkpoint_step(self.step):
                self.save_checkpoint()
            if self.intervals.is_evaluation_step(self.step):
                self.evaluate()

    def _enter_stage(self) -> None:
        """Set what trains for the stage of the current step (on start too: a resumed run)."""
        stage = stage_at(self.stages, self.step)
        if stage is None or stage == self.stage:
            return
        trains = set_stage_layers(self.trainer.model, stage.layers)
        self.trainer.retrace_train_loop()
        self.stage = stage
        number = self.stages.index(stage) + 1
        self.log(
            f"step {self.step}: stage {number} of {len(self.stages)} ({stage.layers!r}, to step "
            f"{stage.end_step}): training {trains}; learning rate {self.learning_rate():.4g}"
        )

    def learning_rate(self) -> float:
        """The rate of the next update (the schedule's value at the optimizer's step)."""
        rate = self.trainer.optimizer.learning_rate
        return float(rate(self.trainer.optimizer.iterations) if callable(rate) else rate)

    def _restart_hint(self) -> str:
        if self.manager.latest_checkpoint is None:
            return "No checkpoint was saved."
        return (
            f"No checkpoint was saved after step {self.last_saved_step}; a restart with new "
            "hyperparameters resumes from there."
        )

    def _watch_loss(self, train_output: dict) -> None:
        """orbit train action, after every loop of steps."""
        self.last_loss = float(train_output[self.trainer.train_loss.name])
        learning_rate = train_output.get("learning_rate")
        self.guard.check(
            self.step,
            self.last_loss,
            first_nonfinite_step=int(self.trainer.first_nonfinite_step.numpy()),
            learning_rate=None if learning_rate is None else float(learning_rate),
        )

    def save_checkpoint(self) -> None:
        prefix = self.manager.save(checkpoint_number=self.step)
        self.last_saved_step = self.step
        self.log(f"step {self.step}: saved {prefix}")
        if self.durable:
            state = {
                "loss": self.last_loss,
                "num_steps": self.intervals.num_steps,
                "model": _model_fingerprint(self.config),
            }
            uri = self.durable.publish(prefix, state)
            self._publish_events()
            self.log(f"step {self.step}: mirrored to {uri}")

    def evaluate(self) -> None:
        best_before = self.best_checkpoint()
        with self.strategy.scope():
            logs = self.controller.evaluate(steps=self.config.trainer.validation_steps)
        self.metrics, self.metrics_step = scalar_metrics(logs), self.step
        shown = ", ".join(f"{k} {self.metrics[k]:.4f}" for k in COCO_METRICS if k in self.metrics)
        self.log(f"step {self.step}: evaluated on the val split: {shown}")
        if self.durable:
            if self.best_dir and self.best_checkpoint() != best_before:
                self.durable.publish_directory(self.best_dir, BEST_DIR)
            self._publish_events()

    def best_checkpoint(self) -> str | None:
        return latest_best_checkpoint(self.best_dir)

    def _publish_events(self) -> None:
        for name in _summary_dirs(self.config):
            self.durable.publish_directory(self.model_dir / name, f"{EVENTS_DIR}/{name}")

    def finish(self, config_path: Path, start_step: int | None) -> TrainResult:
        """Evaluate if the last step was not (a finished run restarted without metrics)."""
        if self.intervals.evaluates and self.metrics_step != self.step:
            self.evaluate()
        summary = {"global_step": self.step, "final_loss": self.last_loss, "metrics": self.metrics}
        _write_json(self.model_dir / METRICS_FILE, summary)
        if self.durable:
            self.durable.write_json(METRICS_FILE, summary)
        return TrainResult(
            global_step=self.step,
            final_loss=self.last_loss,
            metrics=self.metrics,
            model_dir=self.model_dir,
            config_path=config_path,
            latest_checkpoint=self.manager.latest_checkpoint,
            best_checkpoint=self.best_checkpoint(),
            durable_uri=self.durable.uri if self.durable else None,
            resumed_from_step=start_step,
            steps_trained=self.step - (start_step or 0),
            train_seconds=round(self.train_seconds, 3),
        )


def latest_best_checkpoint(best: Path | None) -> str | None:
    return tf.train.latest_checkpoint(str(best)) if best else None


def scalar_metrics(logs: dict) -> dict[str, float]:
    """The numeric scalars of an evaluation's logs (COCO AP..., losses), as floats."""
    return {
        name: float(value)
        for name, value in (logs or {}).items()
        if np.ndim(value) == 0
        and np.issubdtype(np.asarray(value).dtype, np.number)
        and name != "steps_per_second"
    }


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
