"""One training run as train-tfod and train-maskrcnn do it: artifacts in, Model and metrics out.

The plain-Python body of both components (no KFP here): it reads the train and val TFRecords
artifacts, builds the experiment from a preset and the user's hyperparameters, picks the initial
weights (an earlier Model to fine-tune, or a pretrained Model Garden checkpoint), trains with the
engine and describes the result in `model.json`, in the artifact metadata and in flat metrics.

The Model artifact (a directory):

    ckpt-<step>.index/.data-*, checkpoint   the newest checkpoints (trainer state, resumable)
    best/best_ckpt-<n>.*, best/info.json    the checkpoint with the best val AP (mask AP)
    params.yaml                             the effective Model Garden ExperimentConfig
    label_map.pbtxt/.csv/.json              the classes, ids 1..N
    train/, validation/                     TensorBoard event files
    metrics.json                            the engine's summary of the final step
    model.json                              preset, step, classes, lineage, metrics: the
                                            artifact's metadata

Initial weights, on a fresh start only (a run that resumes from its own checkpoints keeps them:
the engine's checkpoint manager calls Model Garden's initialization only when it finds none):

- `init_model_dir`, an earlier run's Model: all weights when its label map is this dataset's,
  else the backbone and decoder only. The run starts at global step 0 with its own num_steps.
- `pretrained_checkpoint_uri`, a Model Garden checkpoint (a prefix, a directory holding one or a
  .tar.gz/.zip of one; local, gs:// or https://; "preset" for the preset's published one): the
  preset's `pretrained_modules`. Ignored when `init_model_dir` is given.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf
import yaml

from ..common import storage, tfrecords
from ..common.archives import extract_archive, has_archive_suffix
from ..common.label_map import JSON_FILE, LabelMap, LabelMapError
from . import engine
from .checkpoints import MODEL_METADATA_FILE, checkpoint_step
from .engine import BEST_INFO_FILE, CONFIG_FILE, TrainingInputError, TrainResult
from .experiment import draft_experiment_config, finish_experiment_config
from .hyperparameters import Hyperparameters, parse_hyperparameters
from .presets import Preset, get_preset
from .strategy import DevicePlan, plan_devices

METADATA_FILE = MODEL_METADATA_FILE
PRESET_CHECKPOINT = "preset"  # pretrained_checkpoint_uri naming the preset's published checkpoint
ALL_WEIGHTS = "all"
BACKBONE_AND_DECODER = ["backbone", "decoder"]
# task.model sections that shape the weights each kind of initialization restores
BACKBONE_SECTIONS = ("backbone", "decoder", "min_level", "max_level")
HEAD_SECTIONS = ("head", "rpn_head", "detection_head", "mask_head", "include_mask", "anchor")
LINEAGE_KEYS = ("split", "num_examples", "num_instances", "num_shards", "has_masks", "source")

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TFRecordsInput:
    """A convert-to-tfrecord artifact: its manifest, label map and shard pattern."""

    directory: Path
    manifest: dict[str, Any]
    label_map: LabelMap

    @property
    def pattern(self) -> str:
        return str(self.directory / self.manifest["file_pattern"])

    @property
    def has_masks(self) -> bool:
        return bool(self.manifest.get("has_masks"))

    def lineage(self) -> dict[str, Any]:
        found = {key: self.manifest[key] for key in LINEAGE_KEYS if key in self.manifest}
        return {"path": str(self.directory), **found}


@dataclass(frozen=True)
class ParentModel:
    """An earlier run's Model artifact, to fine-tune from."""

    directory: Path
    label_map: LabelMap
    checkpoint: str  # its best checkpoint if it kept one, else its latest
    checkpoint_step: int | None
    model_config: dict[str, Any]  # task.model of its params.yaml
    info: dict[str, Any]  # its model.json ({} if absent)

    @property
    def is_best(self) -> bool:
        return not Path(self.checkpoint).name.startswith("ckpt-")

    def describe(self) -> str:
        preset = self.info.get("preset", "unknown preset")
        which = "best" if self.is_best else "latest"
        return f"{self.directory} ({preset}; its {which} checkpoint, step {self.checkpoint_step})"


@dataclass(frozen=True)
class InitialWeights:
    checkpoint: str  # a local checkpoint prefix
    modules: str | list[str]
    lineage: dict[str, Any]


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, checked: what run_training hands to the engine."""

    component: str
    preset: Preset
    hp: Hyperparameters
    devices: DevicePlan
    config: Any  # Model Garden ExperimentConfig, built for `devices`, locked
    train: TFRecordsInput
    val: TFRecordsInput | None
    initial_weights: InitialWeights | None

    @property
    def label_map(self) -> LabelMap:
        return self.train.label_map


@dataclass(frozen=True)
class TrainingResult:
    train: TrainResult
    metrics: dict[str, float]  # flat, for the KFP Metrics output
    metadata: dict[str, dict]  # keyed by the face's output: model (also model.json)


def run_training(
    train_tfrecords_dir: str | os.PathLike,
    val_tfrecords_dir: str | os.PathLike | None,
    model_dir: str | os.PathLike,
    *,
    component: str,
    preset: str,
    hyperparameters: str,
    checkpoint_uri: str = "",
    init_model_dir: str | os.PathLike | None = None,
    pretrained_checkpoint_uri: str = "",
) -> TrainingResult:
    """Train `preset` (a preset of `component`: "train_tfod" or "train_maskrcnn") on the TFRecords
    artifacts `train_tfrecords_dir` and `val_tfrecords_dir` into the Model artifact directory
    `model_dir`. Progress goes to this module's logger.

    `checkpoint_uri` is the durable checkpoint location (a local or mounted path, or gs://): the run
    mirrors its checkpoints there and resumes from the newest one. Empty: checkpoints stay in
    `model_dir`, and a restarted pod starts over. See the module docstring for `init_model_dir`
    and `pretrained_checkpoint_uri`. Raises before any model is built when the inputs cannot train.
    """
    model_dir = Path(model_dir)
    with tempfile.TemporaryDirectory(prefix="initial-weights-") as scratch:
        plan = plan_run(
            component=component,
            preset=preset,
            hyperparameters=hyperparameters,
            train_dir=train_tfrecords_dir,
            val_dir=val_tfrecords_dir,
            init_model_dir=init_model_dir,
            pretrained_checkpoint_uri=pretrained_checkpoint_uri,
            scratch=Path(scratch),
            log=logger.info,
        )
        if not checkpoint_uri:
            logger.info(
                "no checkpoint_uri: checkpoints stay in the Model artifact only, so a restarted "
                "pod starts over from step 0. Give a mounted path or gs:// URI to resume instead."
            )
        result = engine.train(
            plan.config,
            model_dir=model_dir,
            label_map=plan.label_map,
            durable_uri=checkpoint_uri or None,
            devices=plan.devices,
            stages=plan.hp.stages,
            log=logger.info,
        )
    metrics = flat_metrics(result)
    metadata = model_metadata(plan, result, checkpoint_uri)
    (model_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
    return TrainingResult(train=result, metrics=metrics, metadata={"model": metadata})


def plan_run(
    *,
    component: str,
    preset: str,
    hyperparameters: str,
    train_dir: str | os.PathLike,
    val_dir: str | os.PathLike | None,
    init_model_dir: str | os.PathLike | None,
    pretrained_checkpoint_uri: str,
    scratch: Path,
    log: Log = print,
) -> RunPlan:
    """Check the inputs and build the run's config; `scratch` receives downloaded weights."""
    chosen = get_preset(preset, component)
    hp = parse_hyperparameters(hyperparameters, chosen)
    train = read_tfrecords(train_dir, "train")
    val = read_tfrecords(val_dir, "val") if val_dir else None
    if val:
        check_same_classes(train, val)
    devices = plan_devices(hp.num_clones)
    draft = draft_experiment_config(
        chosen,
        hp,
        train_pattern=train.pattern,
        val_pattern=val.pattern if val else None,
        num_classes=len(train.label_map),
        include_masks=train.has_masks,
        devices=devices,
        log=log,
    )
    weights = initial_weights(
        draft,
        chosen,
        hp,
        train.label_map,
        init_model_dir=init_model_dir,
        pretrained_uri=pretrained_checkpoint_uri,
        scratch=scratch,
        log=log,
    )
    checkpoint, modules = (weights.checkpoint, weights.modules) if weights else (None, None)
    config = finish_experiment_config(draft, checkpoint, modules)
    return RunPlan(component, chosen, hp, devices, config, train, val, weights)


# --- the TFRecords artifacts ----------------------------------------------------------------


def read_tfrecords(directory: str | os.PathLike, split: str) -> TFRecordsInput:
    try:
        found = tfrecords.read_tfrecords(directory)
    except tfrecords.TFRecordsError as e:
        raise TrainingInputError(f"the {split} TFRecords: {e}") from None
    return TFRecordsInput(found.directory, found.manifest, found.label_map)


def check_same_classes(train: TFRecordsInput, val: TFRecordsInput) -> None:
    if train.label_map != val.label_map:
        raise TrainingInputError(
            f"the train and val TFRecords have different label maps: train "
            f"{_ids(train.label_map)}, val {_ids(val.label_map)}. Both splits must come from the "
            "same dataset (split-dataset, then convert-to-tfrecord for each split)."
        )


def _ids(label_map: LabelMap) -> str:
    return "{" + ", ".join(f"{i}: {name!r}" for i, name in label_map.items()) + "}"


# --- initial weights ------------------------------------------------------------------------


def initial_weights(
    config,
    preset: Preset,
    hp: Hyperparameters,
    label_map: LabelMap,
    *,
    init_model_dir: str | os.PathLike | None,
    pretrained_uri: str,
    scratch: Path,
    log: Log,
) -> InitialWeights | None:
    """What the run starts from on a fresh start: a parent Model, a pretrained checkpoint, or
    nothing (random weights)."""
    if init_model_dir:
        if pretrained_uri:
            log(
                f"pretrained_checkpoint_uri {storage.redacted(pretrained_uri)} ignored: init_model "
                "is given, and its weights already hold a trained backbone"
            )
        return fine_tuning_weights(read_parent_model(init_model_dir), config, hp, label_map, log)
    if pretrained_uri:
        return pretrained_weights(pretrained_uri, preset, scratch, log)
    log("initial weights: random (no init_model, no pretrained_checkpoint_uri)")
    return None


def read_parent_model(directory: str | os.PathLike) -> ParentModel:
    directory = Path(directory)
    what = f"init_model at {directory}"
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise TrainingInputError(
            f"{what} is not a Model of train_tfod or train_maskrcnn: no {CONFIG_FILE}"
        )
    try:
        label_map = LabelMap.load(directory / JSON_FILE)
    except (OSError, LabelMapError) as e:
        raise TrainingInputError(f"{what}: no usable label map: {e}") from None
    params = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    best_dir = params["trainer"].get("best_checkpoint_export_subdir") or ""
    best = tf.train.latest_checkpoint(str(directory / best_dir)) if best_dir else None
    latest = tf.train.latest_checkpoint(str(directory))
    if not (best or latest):
        raise TrainingInputError(f"{what} holds no checkpoint (neither a best nor a latest one)")
    step = best_checkpoint_step(best) if best else checkpoint_step(latest)
    info_path = directory / METADATA_FILE
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    return ParentModel(directory, label_map, best or latest, step, params["task"]["model"], info)


def best_checkpoint_step(prefix: str | None) -> int | None:
    """The global step of a best checkpoint, from the info.json Model Garden writes beside it."""
    info_path = Path(prefix).parent / BEST_INFO_FILE if prefix else None
    if info_path is None or not info_path.is_file():
        return None
    step = json.loads(info_path.read_text(encoding="utf-8")).get("best_ckpt_global_step")
    return None if step is None else int(step)


def fine_tuning_weights(
    parent: ParentModel, config, hp: Hyperparameters, label_map: LabelMap, log: Log
) -> InitialWeights:
    """All weights when the label maps and heads match, else the backbone and decoder."""
    model_config = _plain(config.task.model.as_dict())
    differing = _differing(parent.model_config, model_config, BACKBONE_SECTIONS)
    if differing:
        raise TrainingInputError(
            f"init_model {parent.describe()} has another backbone or decoder than this run's "
            f"preset (task.model {', '.join(differing)} differ): fine-tune with a preset of the "
            "same architecture"
        )
    heads = _differing(parent.model_config, model_config, HEAD_SECTIONS)
    if parent.label_map == label_map and not heads:
        modules = ALL_WEIGHTS
        why = f"the label maps are identical ({len(label_map)} classes): restoring all weights"
    else:
        modules = BACKBONE_AND_DECODER
        reason = (
            label_map_differences(parent.label_map, label_map)
            if parent.label_map != label_map
            else f"the heads differ (task.model {', '.join(heads)})"
        )
        why = f"{reason}: restoring the backbone and decoder only; the heads start from scratch"
    log(f"fine-tuning from {parent.describe()}: {why}")
    log(
        f"fine-tuning is a new run: the global step starts at 0 and ends at {hp.total_steps} "
        f"(the parent stopped at step {parent.info.get('global_step', '?')}); the optimizer "
        "state and learning-rate schedule start afresh"
    )
    lineage = {
        "path": str(parent.directory),
        "checkpoint": os.path.relpath(parent.checkpoint, parent.directory),
        "checkpoint_step": parent.checkpoint_step,
        "modules": modules,
        **{k: parent.info[k] for k in ("preset", "global_step", "class_names") if k in parent.info},
    }
    return InitialWeights(parent.checkpoint, modules, lineage)


def label_map_differences(parent: LabelMap, ours: LabelMap) -> str:
    """The class differences, in words: new classes, classes gone, or another order."""
    new = [name for name in ours.names if name not in parent.names]
    gone = [name for name in parent.names if name not in ours.names]
    parts = []
    if new:
        parts.append(f"classes new in this dataset: {new}")
    if gone:
        parts.append(f"classes of init_model not in this dataset: {gone}")
    if not parts:
        parts.append(f"the same classes with other ids: {_ids(parent)} -> {_ids(ours)}")
    return "the label maps differ (" + "; ".join(parts) + ")"


def _plain(section: dict) -> dict:
    """As params.yaml holds it (lists, not tuples), to compare with a parent's."""
    return yaml.safe_load(yaml.safe_dump(section))


def _differing(parent: dict, ours: dict, sections: tuple[str, ...]) -> list[str]:
    return [name for name in sections if parent.get(name) != ours.get(name)]


def pretrained_weights(uri: str, preset: Preset, scratch: Path, log: Log) -> InitialWeights:
    if uri.strip() == PRESET_CHECKPOINT:
        uri = preset.pretrained_checkpoint
    modules = list(preset.pretrained_modules)
    checkpoint = fetch_checkpoint(uri, scratch)
    check_checkpoint_holds(checkpoint, modules, uri)
    log(f"initial weights: {' and '.join(modules)} from {storage.redacted(uri)}")
    return InitialWeights(checkpoint, modules, {"uri": storage.redacted(uri), "modules": modules})


def fetch_checkpoint(uri: str, scratch: Path) -> str:
    """A local checkpoint prefix for `uri`: a checkpoint prefix (…/ckpt-28080), a directory that
    holds a checkpoint, or a .tar.gz/.zip archive of one, at a local path, gs:// or https://."""
    uri = uri.strip()
    name = uri.rstrip("/").rpartition("/")[2]
    if has_archive_suffix(name):
        archive = (
            storage.local_path(uri)
            if storage.is_local(uri)
            else storage.download_file(uri, scratch / name)
        )
        extracted = extract_archive(archive, scratch / "extracted", label=storage.redacted(uri))
        return find_checkpoint(extracted, uri)
    if storage.is_local(uri):
        return find_checkpoint(storage.local_path(uri), uri)
    if storage.is_directory(uri):
        return find_checkpoint(storage.download_directory(uri, scratch / "checkpoint"), uri)
    return download_checkpoint_prefix(uri, scratch / "checkpoint")


def download_checkpoint_prefix(uri: str, local_dir: Path) -> str:
    """The files of the checkpoint prefix `uri` (<prefix>.index, <prefix>.data-*) downloaded."""
    folder, _, name = uri.rstrip("/").rpartition("/")
    try:
        names = [f for f in storage.list_files(folder) if "/" not in f and f.startswith(f"{name}.")]
    except storage.ObjectNotFoundError:
        names = []
    if f"{name}.index" not in names:
        raise TrainingInputError(_no_checkpoint(uri))
    for file in names:
        storage.download_file(storage.join_uri(folder, file), local_dir / file)
    return str(local_dir / name)


def find_checkpoint(path: Path, uri: str) -> str:
    """The checkpoint prefix `path` is, or the one checkpoint (or newest) a directory holds."""
    if Path(f"{path}.index").is_file():
        return str(path)
    indexes = sorted(path.rglob("*.index")) if path.is_dir() else []
    folders = {index.parent for index in indexes}
    if len(folders) == 1:
        latest = tf.train.latest_checkpoint(str(folders.pop()))
        if latest:
            return latest
    if len(indexes) == 1:
        return str(indexes[0].with_suffix(""))
    if indexes:
        found = ", ".join(str(index.relative_to(path).with_suffix("")) for index in indexes)
        raise TrainingInputError(
            f"{storage.redacted(uri)} holds several checkpoints ({found}); give the prefix of one"
        )
    raise TrainingInputError(_no_checkpoint(uri))


def _no_checkpoint(uri: str) -> str:
    return (
        f"no TensorFlow checkpoint at {storage.redacted(uri)}: give a checkpoint prefix (the path "
        "of its .index file without .index, e.g. gs://bucket/ckpt-28080), a directory holding "
        "one, or a .tar.gz/.zip of one"
    )


def check_checkpoint_holds(checkpoint: str, modules: list[str], uri: str) -> None:
    """Model Garden reads `backbone/...` and `decoder/...` at the checkpoint's top level."""
    tops = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(checkpoint)}
    missing = [module for module in modules if module not in tops]
    if missing:
        shown = ", ".join(sorted(t for t in tops if not t.startswith("_"))) or "none"
        raise TrainingInputError(
            f"the pretrained checkpoint {storage.redacted(uri)} has no {' or '.join(missing)} at "
            f"its top level (it has: {shown}); Model Garden initializes {' and '.join(modules)} "
            "from checkpoints written as tf.train.Checkpoint(backbone=..., decoder=...), as its "
            "trainers write them"
        )


# --- outputs --------------------------------------------------------------------------------


def flat_metrics(result: TrainResult) -> dict[str, float]:
    """COCO box AP (mask AP for Mask R-CNN) at the last evaluation, and the final loss."""
    names = [*engine.COCO_METRICS, *(f"mask_{name}" for name in engine.COCO_METRICS)]
    metrics = {name: float(result.metrics[name]) for name in names if name in result.metrics}
    if result.final_loss is not None:
        metrics["final_loss"] = float(result.final_loss)
    return metrics


def model_metadata(plan: RunPlan, result: TrainResult, checkpoint_uri: str) -> dict[str, Any]:
    """model.json, and the Model artifact's metadata."""
    model_dir = result.model_dir
    preset = plan.preset
    return {
        "component": plan.component,
        "preset": preset.name,
        "architecture": preset.architecture,
        "backbone": preset.backbone,
        "image_size": plan.hp.image_size,
        "global_step": result.global_step,
        "num_classes": len(plan.label_map),
        "class_names": list(plan.label_map.names),
        "checkpoint": _relative(result.latest_checkpoint, model_dir),
        "best_checkpoint": _relative(result.best_checkpoint, model_dir),
        "best_checkpoint_step": best_checkpoint_step(result.best_checkpoint),
        "checkpoint_uri": storage.redacted(checkpoint_uri) if checkpoint_uri else None,
        "dataset": {
            "train": plan.train.lineage(),
            "val": plan.val.lineage() if plan.val else None,
        },
        "initial_weights": plan.initial_weights.lineage if plan.initial_weights else None,
        "hyperparameters": plan.hp.to_dict(),
        "metrics": flat_metrics(result),
    }


def _relative(checkpoint: str | None, model_dir: Path) -> str | None:
    return os.path.relpath(checkpoint, model_dir) if checkpoint else None
