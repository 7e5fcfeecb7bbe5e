"""run_training, the body of train-tfod and train-maskrcnn: light RetinaNet at 256 px on CPU."""

import contextlib
import dataclasses
import json
import logging
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest
import tensorflow as tf
from official.core import task_factory

from cvat_kfp.components.common import storage
from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord
from cvat_kfp.components.training import engine
from cvat_kfp.components.training.engine import TrainingInputError
from cvat_kfp.components.training.experiment import experiment_config_from_yaml
from cvat_kfp.components.training.presets import PRESETS
from cvat_kfp.components.training.run import plan_run, pretrained_weights, run_training
from tests.gcs_emulator import create_bucket, gcs_emulator, gcs_server  # noqa: F401

from ._training_data import make_tfrecords

PRESET = "retinanet-mobilenetv2-light"
HYPERPARAMETERS = "num_steps: {steps}\nbatch_size: 2\nwarmup_steps: 1"
METRIC_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "final_loss"}


@contextlib.contextmanager
def logged_lines(name: str = "cvat_kfp.components.training"):
    """The messages `name`'s loggers log at INFO and above while the block runs (module fixtures
    cannot use caplog)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def hyperparameters(steps: int) -> str:
    return HYPERPARAMETERS.format(steps=steps)


def make_split(root: Path, split: str, *, classes=None, include_masks=True, seed=0) -> Path:
    """One split's TFRecords of a few shapes images."""
    options = {"classes": classes} if classes else {}
    dataset = make_shapes_dataset(
        root / f"{split}_dataset", num_images=4, image_size=(160, 128), seed=seed, **options
    )
    run_convert_to_tfrecord(
        dataset, root / split, split_name=split, include_masks=include_masks, num_workers=1
    )
    return root / split


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_tfrecords(tmp_path_factory.mktemp("tfrecords"), num_train=4, num_val=2)


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """Train and val TFRecords of circles and squares only (no triangles)."""
    root = tmp_path_factory.mktemp("two_classes")
    classes = ("circle", "square")
    return SimpleNamespace(
        train_dir=make_split(root, "train", classes=classes),
        val_dir=make_split(root, "val", classes=classes, seed=1),
    )


@pytest.fixture(scope="module")
def parent(tfrecords, tmp_path_factory):
    """A 4-step run, evaluated at the end: the Model later tests fine-tune from."""
    model_dir = tmp_path_factory.mktemp("parent") / "model"
    with logged_lines() as lines:
        result = run_training(
            tfrecords.train_dir,
            tfrecords.val_dir,
            model_dir,
            component="train_tfod",
            preset=PRESET,
            hyperparameters=hyperparameters(4),
        )
    return SimpleNamespace(result=result, model_dir=model_dir, lines=lines)


@pytest.fixture()
def no_model_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(engine.task_factory, "get_task", refuse)


def plan(tfrecords_dirs, scratch: Path, **options):
    """plan_run as run_training calls it, for the light preset."""
    return plan_run(
        component="train_tfod",
        preset=PRESET,
        hyperparameters=hyperparameters(2),
        train_dir=tfrecords_dirs.train_dir,
        val_dir=tfrecords_dirs.val_dir,
        init_model_dir=options.get("init_model_dir"),
        pretrained_checkpoint_uri=options.get("pretrained_checkpoint_uri", ""),
        scratch=scratch,
        log=options.get("log", print),
    )


def initialized_model(config):
    """The model Model Garden builds for `config`, initialized as on a fresh start."""
    task = task_factory.get_task(config.task)
    model = task.build_model()
    task.initialize(model)
    return model


def parent_model(config, checkpoint: str):
    """A model of `config` with all the weights of a trainer checkpoint."""
    model = task_factory.get_task(config.task).build_model()
    tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
    return model


def same_weights(a, b) -> bool:
    a, b = a.variables, b.variables
    return len(a) == len(b) and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))


# --- a run ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_writes_the_model_artifact_and_flat_metrics(parent, tfrecords):
    result, model_dir = parent.result, parent.model_dir
    assert result.train.global_step == 4
    assert (model_dir / "ckpt-4.index").is_file() and (model_dir / "params.yaml").is_file()
    assert list((model_dir / "best").glob("best_ckpt-*.index"))
    for name in ("label_map.pbtxt", "label_map.csv", "label_map.json", "model.json"):
        assert (model_dir / name).is_file(), name
    assert list((model_dir / "train").glob("events.out.tfevents.*"))
    assert list((model_dir / "validation").glob("events.out.tfevents.*"))

    assert set(result.metrics) == METRIC_KEYS
    assert all(isinstance(value, float) for value in result.metrics.values())

    metadata = result.metadata["model"]
    assert json.loads((model_dir / "model.json").read_text()) == metadata
    assert metadata["component"] == "train_tfod" and metadata["preset"] == PRESET
    assert metadata["global_step"] == 4 and metadata["num_classes"] == 3
    assert metadata["class_names"] == ["circle", "square", "triangle"]
    assert metadata["checkpoint"] == "ckpt-4" and metadata["best_checkpoint_step"] == 4
    assert metadata["best_checkpoint"].startswith("best/best_ckpt-")
    assert metadata["checkpoint_uri"] is None and metadata["initial_weights"] is None
    train = metadata["dataset"]["train"]
    assert (train["path"], train["split"], train["num_examples"]) == (
        str(tfrecords.train_dir),
        "train",
        4,
    )
    assert metadata["dataset"]["val"]["num_examples"] == 2
    assert metadata["metrics"] == result.metrics
    assert any("no checkpoint_uri" in line and "starts over" in line for line in parent.lines)


# --- fine-tuning ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_fine_tuning_with_the_same_label_map_restores_all_weights(parent, tfrecords, tmp_path):
    with logged_lines() as lines:
        result = run_training(
            tfrecords.train_dir,
            tfrecords.val_dir,
            tmp_path / "model",
            component="train_tfod",
            preset=PRESET,
            hyperparameters=hyperparameters(2),
            init_model_dir=parent.model_dir,
        )
    log = "\n".join(lines)
    assert "the label maps are identical (3 classes): restoring all weights" in log
    assert "the global step starts at 0 and ends at 2 (the parent stopped at step 4)" in log
    assert (result.train.global_step, result.train.resumed_from_step) == (2, None)
    lineage = result.metadata["model"]["initial_weights"]
    assert lineage["modules"] == "all" and lineage["checkpoint"].startswith("best/best_ckpt-")
    assert lineage["checkpoint_step"] == 4
    assert (lineage["preset"], lineage["global_step"]) == (PRESET, 4)

    # the weights the run started from: Model Garden's initialization with the run's config
    config = plan(tfrecords, tmp_path / "scratch", init_model_dir=parent.model_dir).config
    model = initialized_model(config)
    assert same_weights(model, parent_model(config, config.task.init_checkpoint))


@pytest.mark.slow
def test_fine_tuning_with_other_classes_restores_backbone_and_decoder(
    parent, two_classes, tmp_path
):
    lines = []
    config = plan(two_classes, tmp_path, init_model_dir=parent.model_dir, log=lines.append).config
    assert config.task.init_checkpoint_modules == ["backbone", "decoder"]
    log = "\n".join(lines)
    assert "classes of init_model not in this dataset: ['triangle']" in log
    assert "restoring the backbone and decoder only" in log

    model = initialized_model(config)
    three_classes = yaml_config_of(parent.model_dir)
    reference = parent_model(three_classes, config.task.init_checkpoint)
    assert same_weights(model.backbone, reference.backbone)
    assert same_weights(model.decoder, reference.decoder)
    assert not same_weights(model.head, reference.head)  # 2 classes now: a fresh head


def yaml_config_of(model_dir: Path):
    return experiment_config_from_yaml((model_dir / "params.yaml").read_text(), PRESET)


# --- refused before any model is built ------------------------------------------------------------


def test_train_and_val_with_different_label_maps_are_refused(
    tfrecords, two_classes, tmp_path, no_model_built
):
    with pytest.raises(TrainingInputError, match="different label maps") as error:
        run_training(
            tfrecords.train_dir,
            two_classes.val_dir,
            tmp_path / "model",
            component="train_tfod",
            preset=PRESET,
            hyperparameters="",
        )
    assert "'triangle'" in str(error.value)


def test_train_maskrcnn_refuses_boxes_without_masks_at_once(tmp_path, no_model_built):
    boxes = SimpleNamespace(
        train_dir=make_split(tmp_path, "train", include_masks=False),
        val_dir=make_split(tmp_path, "val", include_masks=False, seed=1),
    )
    started = time.monotonic()
    with pytest.raises(ValueError, match="masks") as error:
        run_training(
            boxes.train_dir,
            boxes.val_dir,
            tmp_path / "model",
            component="train_maskrcnn",
            preset="maskrcnn-mobilenetv2-light",
            hyperparameters="",
        )
    assert time.monotonic() - started < 5
    assert "train_tfod" in str(error.value)
    assert not (tmp_path / "model").exists()


# --- pretrained checkpoints -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tfrecords, tmp_path_factory):
    """A backbone + decoder checkpoint as Model Garden's public ones hold them."""
    root = tmp_path_factory.mktemp("pretrained")
    config = plan(tfrecords, root / "scratch").config
    model = task_factory.get_task(config.task).build_model()
    prefix = tf.train.Checkpoint(backbone=model.backbone, decoder=model.decoder).write(
        str(root / "checkpoint" / "ckpt-100")
    )
    return SimpleNamespace(prefix=prefix, model=model, root=root)


def check_initialized_from(pretrained, config):
    model = initialized_model(config)
    assert config.task.init_checkpoint_modules == ["backbone", "decoder"]
    assert same_weights(model.backbone, pretrained.model.backbone)
    assert same_weights(model.decoder, pretrained.model.decoder)
    assert not same_weights(model.head, pretrained.model.head)  # the head was not in it


@pytest.mark.slow
def test_a_pretrained_checkpoint_from_a_local_prefix_or_archive(pretrained, tfrecords, tmp_path):
    lines = []
    config = plan(
        tfrecords, tmp_path, pretrained_checkpoint_uri=pretrained.prefix, log=lines.append
    ).config
    assert config.task.init_checkpoint == pretrained.prefix
    assert f"initial weights: backbone and decoder from {pretrained.prefix}" in lines
    check_initialized_from(pretrained, config)

    archive = tmp_path / "pretrained.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(Path(pretrained.prefix).parent, arcname="mobilenetv2_ckpt")
    config = plan(tfrecords, tmp_path / "scratch", pretrained_checkpoint_uri=str(archive)).config
    assert config.task.init_checkpoint.endswith("mobilenetv2_ckpt/ckpt-100")
    check_initialized_from(pretrained, config)


@pytest.mark.slow
@pytest.mark.usefixtures("gcs_emulator")
def test_a_pretrained_checkpoint_from_gcs(pretrained, tfrecords, tmp_path):
    create_bucket("weights")
    for file in Path(pretrained.prefix).parent.glob("ckpt-100.*"):
        storage.upload_file(file, f"gs://weights/mobilenetv2/{file.name}")
    uri = "gs://weights/mobilenetv2/ckpt-100"
    config = plan(tfrecords, tmp_path, pretrained_checkpoint_uri=uri).config
    assert config.task.init_checkpoint == str(tmp_path / "checkpoint" / "ckpt-100")
    check_initialized_from(pretrained, config)


@pytest.mark.slow
def test_a_pretrained_checkpoint_without_the_modules_is_refused(pretrained, tfrecords, tmp_path):
    prefix = tf.train.Checkpoint(net=pretrained.model.backbone).write(str(tmp_path / "ckpt-1"))
    with pytest.raises(TrainingInputError, match="has no backbone or decoder at its top level"):
        plan(tfrecords, tmp_path / "scratch", pretrained_checkpoint_uri=prefix)
    with pytest.raises(TrainingInputError, match="no TensorFlow checkpoint"):
        plan(tfrecords, tmp_path / "scratch", pretrained_checkpoint_uri=str(tmp_path / "none"))


@pytest.mark.parametrize("preset", PRESETS.values(), ids=lambda p: p.name)
def test_each_presets_checkpoint_is_fetched_without_google_credentials(
    preset, http_files, monkeypatch, tmp_path
):
    """Model Garden's published archives over https, here served at their path by a stand-in."""
    import google.auth

    def no_credentials(*args, **kwargs):
        raise AssertionError("Google credentials were looked for")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    published = urlparse(preset.pretrained_checkpoint)
    assert (published.scheme, published.netloc) == ("https", "storage.googleapis.com")
    assert published.path.startswith("/tf_model_garden/vision/")

    modules = {name: tf.Module() for name in preset.pretrained_modules}
    for module in modules.values():
        module.kernel = tf.Variable(tf.ones([3, 3]))
    folder = tmp_path / "ckpt"
    tf.train.Checkpoint(**modules).write(str(folder / "ckpt-28080"))
    archive = http_files.root / published.path.lstrip("/")
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=Path(published.path).name.split(".")[0])
    served = dataclasses.replace(preset, pretrained_checkpoint=http_files.url(published.path[1:]))

    lines = []
    weights = pretrained_weights("preset", served, tmp_path / "scratch", lines.append)
    assert weights.checkpoint.endswith("/ckpt-28080")
    assert weights.modules == list(preset.pretrained_modules)
    assert http_files.paths == [f"GET {published.path}"]
