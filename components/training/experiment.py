"""The Model Garden ExperimentConfig for a run, built in code from a preset and hyperparameters.

The tf-models-official wheel ships no experiment YAML files, so the config starts from the
registered experiment (`exp_factory.get_exp_config(preset.experiment)`) and is overridden, in
order: the preset's architecture, the run (data, classes, sizes, schedule, runtime for the
planned devices), then the user's `model_garden_overrides`, strictly, then what the devices
impose (float32 without XLA on CPU) and the initial weights. Then it is validated once and locked:
this module is the config's one writer, and the engine trains it as built. Traps of the
registered COCO configs that this undoes: gs:// input paths, annotation files and init
checkpoints; bfloat16 and XLA (TPU settings); 91 classes; a 100-instance cap per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import official.vision.registry_imports  # noqa: F401  (registers the vision experiments)
import yaml
from official.core import config_definitions, exp_factory

from .checkpoints import BEST_DIR
from .hyperparameters import HyperparameterError, Hyperparameters
from .presets import Preset, get_preset
from .strategy import DevicePlan, configure_runtime, input_dtype, runtime_settings

ExperimentConfig = config_definitions.ExperimentConfig
CPU = DevicePlan()
Log = Callable[[str], None]

CHECKPOINT_MODULES = ("all", "backbone", "decoder")
DEFAULT_CHECKPOINT_MODULES = "backbone"
MAX_STEPS_PER_LOOP = 100  # metrics (and Model Garden's NaN check) at least this often
MAX_CHECKPOINTS_KEPT = 3
MAX_INSTANCES_PER_IMAGE = 200  # Model Garden's 100 silently drops boxes of crowded CVAT frames
SHUFFLE_BUFFER_EXAMPLES = 1000  # encoded images held for shuffling: memory, not quality, bound
SCALE_JITTER = (0.8, 1.25)
MOMENTUM = 0.9


class ExperimentConfigError(ValueError):
    """Arguments that cannot make a config: no masks for Mask R-CNN, a batch that won't split."""


def build_experiment_config(
    preset: Preset | str,
    hp: Hyperparameters,
    *,
    train_pattern: str,
    val_pattern: str | None,
    num_classes: int,
    model_dir: str = "",
    include_masks: bool,
    init_checkpoint: str | None = None,
    init_checkpoint_modules: str | list[str] | None = None,
    devices: DevicePlan = CPU,
    log: Log = print,
) -> ExperimentConfig:
    """The validated, locked ExperimentConfig for training `preset` with `hp` on `devices`.

    Args:
      train_pattern, val_pattern: TFRecord file patterns (`.../train-*-of-*.tfrecord`); no val
        pattern means no evaluation during training.
      num_classes: the dataset's class count N (label ids 1..N). The model gets N + 1 outputs:
        Model Garden counts background as class 0, for RetinaNet and R-CNN alike.
      model_dir: the run's directory. Model Garden takes it at run time, not in the config (Mask
        R-CNN writes its val annotation.json there); accepted here for callers' convenience.
      include_masks: whether the TFRecords hold instance masks (manifest `has_masks`). Mask
        R-CNN presets need them; detection presets ignore them.
      init_checkpoint, init_checkpoint_modules: weights to start from ("all", or "backbone"
        and/or "decoder"; default "backbone"). They win over model_garden_overrides.
      devices: strategy.plan_devices' plan. float16 mixed precision on GPU (float32 on CPU,
        whatever model_garden_overrides say, with a `log` line), XLA off; one device, or
        MirroredStrategy over its GPUs. `batch_size` is split among them.

    The same as draft_experiment_config, then finish_experiment_config. Raises
    ExperimentConfigError for unusable arguments, HyperparameterError for model_garden_overrides
    Model Garden rejects.
    """
    draft = draft_experiment_config(
        preset,
        hp,
        train_pattern=train_pattern,
        val_pattern=val_pattern,
        num_classes=num_classes,
        model_dir=model_dir,
        include_masks=include_masks,
        devices=devices,
        log=log,
    )
    return finish_experiment_config(draft, init_checkpoint, init_checkpoint_modules)


def draft_experiment_config(
    preset: Preset | str,
    hp: Hyperparameters,
    *,
    train_pattern: str,
    val_pattern: str | None,
    num_classes: int,
    model_dir: str = "",
    include_masks: bool,
    devices: DevicePlan = CPU,
    log: Log = print,
) -> ExperimentConfig:
    """build_experiment_config's config before its initial weights: everything else set, not yet
    validated. A run reads its task.model to choose the weights (a parent model's fit), then
    hands it to finish_experiment_config; nothing else writes to it."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    _check_arguments(preset, hp, train_pattern, num_classes, include_masks, devices)
    config = exp_factory.get_exp_config(preset.experiment)
    config.override({"task": {"model": preset.model_overrides()}}, is_strict=True)
    config.override(
        {
            "task": task_overrides(preset, hp, train_pattern, val_pattern, num_classes, devices),
            "trainer": trainer_overrides(preset, hp, has_validation=bool(val_pattern)),
            "runtime": runtime_settings(devices),
        },
        is_strict=True,
    )
    apply_model_garden_overrides(config, hp.model_garden_overrides)
    configure_runtime(config, devices, log)
    return config


def finish_experiment_config(
    draft: ExperimentConfig,
    init_checkpoint: str | None = None,
    init_checkpoint_modules: str | list[str] | None = None,
) -> ExperimentConfig:
    """`draft` with its initial weights (given ones win over model_garden_overrides of
    task.init_checkpoint*), checked and locked: Model Garden then refuses override() on it."""
    if init_checkpoint:
        draft.task.init_checkpoint = init_checkpoint
        modules = init_checkpoint_modules or DEFAULT_CHECKPOINT_MODULES
        draft.task.init_checkpoint_modules = checkpoint_modules(modules)
    elif init_checkpoint_modules is not None:
        draft.task.init_checkpoint_modules = checkpoint_modules(init_checkpoint_modules)
    check_input_size(draft)
    _validate(draft)
    draft.lock()
    return draft


def _check_arguments(preset, hp, train_pattern, num_classes, include_masks, devices):
    if preset.include_mask and not include_masks:
        raise ExperimentConfigError(
            f"preset {preset.name!r} learns instance masks, but the training TFRecords have none "
            "(the dataset has boxes only): annotate polygons or masks in CVAT, or train a "
            "detection preset with train_tfod"
        )
    if preset.include_mask != hp.staged:
        raise ExperimentConfigError(
            f"hyperparameters were parsed for a {'staged' if hp.staged else 'one-stage'} "
            f"schedule, but preset {preset.name!r} is not: parse them with this preset"
        )
    if not train_pattern:
        raise ExperimentConfigError("train_pattern is empty: give the training TFRecords pattern")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ExperimentConfigError(f"num_classes must be at least 1, got {num_classes!r}")
    replicas = max(1, devices.num_gpus)
    if hp.batch_size % replicas:
        raise HyperparameterError(
            f"batch_size {hp.batch_size} does not split evenly over {replicas} GPUs (num_clones):"
            f" use a multiple of {replicas}"
        )


def checkpoint_modules(modules: str | list[str]) -> str | list[str]:
    """`modules` checked: "all", or any of "backbone" and "decoder" (a str for one)."""
    names = [modules] if isinstance(modules, str) else list(modules)
    unknown = [name for name in names if name not in CHECKPOINT_MODULES]
    if not names or unknown or ("all" in names and len(names) > 1):
        raise ExperimentConfigError(
            f"init_checkpoint_modules must be 'all', or 'backbone' and/or 'decoder', "
            f"got {modules!r}"
        )
    return names[0] if len(names) == 1 else names


# --- task -----------------------------------------------------------------------------------


def task_overrides(preset, hp, train_pattern, val_pattern, num_classes, devices) -> dict:
    size = hp.image_size
    return {
        "annotation_file": None,  # the COCO evaluator then reads groundtruth from the val data
        "init_checkpoint": None,  # the COCO configs' gs:// ImageNet backbone
        "init_checkpoint_modules": DEFAULT_CHECKPOINT_MODULES,
        "model": {
            "num_classes": num_classes + 1,
            "input_size": [size, size, 3],
            "norm_activation": {"use_sync_bn": devices.num_gpus > 1},
        },
        "train_data": data_overrides(train_pattern, hp, devices, is_training=True),
        "validation_data": data_overrides(val_pattern or "", hp, devices, is_training=False),
    }


def data_overrides(pattern: str, hp: Hyperparameters, devices: DevicePlan, *, is_training: bool):
    scale_min, scale_max = SCALE_JITTER if is_training else (1.0, 1.0)
    return {
        "input_path": pattern,
        "is_training": is_training,
        "global_batch_size": hp.batch_size,
        "drop_remainder": is_training,  # evaluate every val image, the last batch short
        "dtype": input_dtype(devices),
        "shuffle_buffer_size": SHUFFLE_BUFFER_EXAMPLES,
        "seed": hp.seed,
        "decoder": {"type": "simple_decoder", "simple_decoder": {"regenerate_source_id": False}},
        "parser": {
            "aug_rand_hflip": is_training,
            "aug_scale_min": scale_min,
            "aug_scale_max": scale_max,
            "max_num_instances": MAX_INSTANCES_PER_IMAGE,
        },
    }


# --- trainer --------------------------------------------------------------------------------


def steps_per_loop(checkpoint_interval: int, eval_interval: int) -> int:
    """Steps per Orbit loop: a divisor of both intervals (checkpoints land on loop ends)."""
    return math.gcd(checkpoint_interval, eval_interval, MAX_STEPS_PER_LOOP)


def best_checkpoint_metric(preset: Preset) -> str:
    """The metric the best checkpoint is kept by: mask AP for Mask R-CNN, box AP otherwise.

    With the subdirectory (best/, as at the durable location) it goes into the config's trainer
    best_checkpoint_* fields, which the engine follows.
    """
    return "mask_AP" if preset.include_mask else "AP"


def trainer_overrides(preset: Preset, hp: Hyperparameters, *, has_validation: bool) -> dict:
    loop = steps_per_loop(hp.checkpoint_interval, hp.eval_interval)
    return {
        "train_steps": hp.total_steps,
        "steps_per_loop": loop,
        "summary_interval": loop,
        "checkpoint_interval": hp.checkpoint_interval,
        "max_to_keep": MAX_CHECKPOINTS_KEPT,
        "validation_interval": hp.eval_interval,
        "validation_steps": -1,  # the whole val split
        "best_checkpoint_export_subdir": BEST_DIR if has_validation else "",
        "best_checkpoint_eval_metric": best_checkpoint_metric(preset) if has_validation else "",
        "best_checkpoint_metric_comp": "higher",
        "optimizer_config": {
            "optimizer": {"type": "sgd", "sgd": {"momentum": MOMENTUM}},
            "learning_rate": learning_rate_config(hp),
            "warmup": warmup_config(hp),
        },
    }


def learning_rate_config(hp: Hyperparameters) -> dict:
    """Stepwise at the schedule steps (or the Mask R-CNN stages), else cosine to 0 over the run.

    Always a schedule of the global step, never a constant: Keras saves a constant rate in the
    checkpoint, so a run resumed with another initial_learning_rate would keep the old one.
    A change "at step s" applies from the update that global step s makes: Keras'
    PiecewiseConstantDecay keeps a value up to and including its boundary, hence s - 1.
    """
    if hp.staged:
        boundaries = [stage.first_step - 1 for stage in hp.stages[1:]]
        values = [stage.learning_rate for stage in hp.stages]
        if not boundaries:  # one stage: PiecewiseConstantDecay needs a boundary, past the end
            boundaries, values = [hp.total_steps], values * 2
        return {"type": "stepwise", "stepwise": {"boundaries": boundaries, "values": values}}
    drops = hp.learning_rate_drops()
    if drops:
        boundaries = [step - 1 for step, _ in drops]
        values = [hp.start_learning_rate] + [rate for _, rate in drops]
        return {"type": "stepwise", "stepwise": {"boundaries": boundaries, "values": values}}
    cosine = {"initial_learning_rate": hp.initial_learning_rate, "decay_steps": hp.total_steps}
    return {"type": "cosine", "cosine": cosine}


def warmup_config(hp: Hyperparameters) -> dict:
    if not hp.warmup_steps:
        return {"type": None}
    linear = {"warmup_steps": hp.warmup_steps, "warmup_learning_rate": hp.warmup_learning_rate}
    return {"type": "linear", "linear": linear}


# --- the user's overrides and the final checks ----------------------------------------------


def apply_model_garden_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> None:
    """Apply `overrides` strictly; an unknown key is an error naming its full path."""
    if not overrides:
        return
    unknown = _unknown_key(config.as_dict(), overrides, "")
    if unknown:
        raise HyperparameterError(f"model_garden_overrides: {unknown}")
    try:
        config.override(overrides, is_strict=True)
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise HyperparameterError(f"model_garden_overrides rejected by Model Garden: {e}") from e


def _unknown_key(tree: Any, overrides: dict[str, Any], prefix: str) -> str | None:
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if not isinstance(tree, dict) or key not in tree:
            known = ", ".join(sorted(tree)) if isinstance(tree, dict) else "none (not a section)"
            where = prefix.rstrip(".") or "the top level"
            return f"{path!r} is not a Model Garden config key; keys under {where}: {known}"
        if isinstance(value, dict) and isinstance(tree[key], dict):
            found = _unknown_key(tree[key], value, f"{path}.")
            if found:
                return found
    return None


def check_input_size(config: ExperimentConfig) -> None:
    """The input must halve evenly down to the coarsest feature level, even after overrides."""
    model = config.task.model
    multiple = 2**model.max_level
    height, width = model.input_size[:2]
    if height % multiple or width % multiple:
        raise HyperparameterError(
            f"task.model.input_size {list(model.input_size)} must be a multiple of {multiple} "
            f"(2**max_level, max_level {model.max_level})"
        )


def _validate(config: ExperimentConfig) -> None:
    try:
        config.validate()
    except (KeyError, ValueError, AssertionError) as e:
        raise HyperparameterError(f"the Model Garden config is inconsistent: {e}") from e


# --- the config as text ---------------------------------------------------------------------


def effective_config_yaml(config: ExperimentConfig) -> str:
    """The whole config as YAML, for the Model artifact; experiment_config_from_yaml reads it."""
    return yaml.safe_dump(config.as_dict(), default_flow_style=False, sort_keys=False)


def experiment_config_from_yaml(text: str, preset: Preset | str) -> ExperimentConfig:
    """The config effective_config_yaml wrote for a run of `preset` (e.g. to export its model)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    config = exp_factory.get_exp_config(preset.experiment)
    config.override(yaml.safe_load(text), is_strict=True)
    config.validate()
    return config
