"""Mask R-CNN's staged schedule: what trains in each stage, at what learning rate, resumed."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.core import task_factory
from official.modeling.optimization import optimizer_factory
from official.vision.configs import backbones, common
from official.vision.modeling.backbones import factory

from cvat_kfp.components.training.engine import STAGE_4_STRIDE, set_stage_layers, train
from cvat_kfp.components.training.experiment import build_experiment_config
from cvat_kfp.components.training.hyperparameters import parse_hyperparameters

from ._training_data import make_tfrecords

MASKRCNN = "maskrcnn-mobilenetv2-light"


def learning_rate_schedule(config):
    return optimizer_factory.OptimizerFactory(config.trainer.optimizer_config).build_learning_rate()


def staged_config(hyperparameters, train_pattern="/data/train-*.tfrecord", val_pattern=None):
    hp = parse_hyperparameters(hyperparameters, MASKRCNN)
    config = build_experiment_config(
        MASKRCNN,
        hp,
        train_pattern=train_pattern,
        val_pattern=val_pattern,
        num_classes=3,
        include_masks=True,
    )
    return hp, config


# --- learning rates -------------------------------------------------------------------------------


def test_each_stage_has_its_learning_rate_as_a_function_of_the_global_step():
    hp, config = staged_config(
        "num_steps: 10\nstage_1_epochs: 1\nstage_2_epochs: 2\nstage_3_epochs: 1\n"
        "initial_learning_rate: 0.02\nwarmup_steps: 0"
    )
    schedule = learning_rate_schedule(config)
    steps = range(hp.total_steps)
    rates = [float(schedule(step)) for step in steps]
    assert rates == pytest.approx([hp.stage_at(step).learning_rate for step in steps])
    assert rates[29] == pytest.approx(0.02) and rates[30] == pytest.approx(0.002)

    _, only_stage_3 = staged_config(
        "num_steps: 10\nstage_1_epochs: 0\nstage_2_epochs: 0\nwarmup_steps: 0"
    )
    schedule = learning_rate_schedule(only_stage_3)  # a schedule too, never a constant
    assert [float(schedule(step)) for step in (0, 5, 9)] == pytest.approx([0.0005] * 3)


@pytest.mark.slow
def test_a_restart_with_another_learning_rate_uses_it(tmp_path):
    """The rate is not saved in the checkpoint: a restart follows its own hyperparameters."""

    def optimizer_at(learning_rate):
        _, config = staged_config(  # stage 3 alone: its rate is a tenth of learning_rate
            "num_steps: 10\nstage_1_epochs: 0\nstage_2_epochs: 0\nstage_3_epochs: 1\n"
            f"initial_learning_rate: {learning_rate}\nwarmup_steps: 0"
        )
        optimizers = optimizer_factory.OptimizerFactory(config.trainer.optimizer_config)
        return optimizers.build_optimizer(optimizers.build_learning_rate())

    weight = tf.Variable([1.0])
    first = optimizer_at(0.02)
    for _ in range(5):
        first.apply_gradients([(tf.constant([1.0]), weight)])
    saved = tf.train.Checkpoint(optimizer=first).write(str(tmp_path / "ckpt"))
    second = optimizer_at(0.04)
    tf.train.Checkpoint(optimizer=second).read(saved).assert_existing_objects_matched()
    assert int(second.iterations) == 5
    assert float(second.learning_rate(second.iterations)) == pytest.approx(0.004)


# --- which layers train ---------------------------------------------------------------------------


def build_backbone(backbone_config):
    specs = tf_keras.layers.InputSpec(shape=[None, 256, 256, 3])
    return factory.build_backbone(specs, backbone_config, common.NormActivation())


def trained_block_channels(backbone):
    """Output channels of the backbone's weighted layers that train, and of those that don't."""
    layers = [layer for layer in backbone.layers if layer.weights]
    channels = [layer.output.shape[-1] for layer in layers]
    return (
        [c for c, layer in zip(channels, layers) if layer.trainable],
        [c for c, layer in zip(channels, layers) if not layer.trainable],
    )


def test_stage_4_up_is_resnets_conv4_and_conv5():
    resnet = build_backbone(backbones.Backbone(type="resnet", resnet=backbones.ResNet(model_id=50)))
    set_stage_layers(SimpleNamespace(backbone=resnet), "4+")
    trained, frozen = trained_block_channels(resnet)
    assert trained == [1024] * 6 + [2048] * 3  # conv4_x (6 blocks) and conv5_x (3)
    assert frozen == [64, 64] + [256] * 3 + [512] * 4  # stem conv and BN, conv2_x, conv3_x


def test_stages_of_mobilenetv2_and_frozen_batchnorm():
    mobilenet = build_backbone(
        backbones.Backbone(type="mobilenet", mobilenet=backbones.MobileNet(model_id="MobileNetV2"))
    )
    model = SimpleNamespace(backbone=mobilenet)
    all_trainable = len(mobilenet.trainable_variables)

    assert "backbone frozen" in set_stage_layers(model, "heads")
    assert mobilenet.trainable_variables == []

    set_stage_layers(model, "4+")
    trained, frozen = trained_block_channels(mobilenet)
    assert trained == [64] * 4 + [96] * 3 + [160] * 3 + [320, 1280]  # output stride 16 and 32
    assert frozen == [32, 16, 24, 24, 32, 32, 32]
    weighted = [layer for layer in mobilenet.layers if layer.weights]
    early, late = weighted[0], weighted[7]  # the stem; the first block at output stride 16
    assert 256 // late.output.shape[1] == STAGE_4_STRIDE and not early.trainable
    before = [layer.get_weights() for layer in (early, late)]
    mobilenet(tf.random.uniform([1, 256, 256, 3]), training=True)
    after = [layer.get_weights() for layer in (early, late)]
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0]))  # BN in inference mode
    assert not all(np.array_equal(a, b) for a, b in zip(before[1], after[1]))  # moving stats

    assert set_stage_layers(model, "all") == "all layers"
    assert len(mobilenet.trainable_variables) == all_trainable


# --- a staged run, resumed mid-stage --------------------------------------------------------------


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_tfrecords(tmp_path_factory.mktemp("tfrecords"), num_train=4, num_val=2)


def checkpoint_weights(config, prefixes):
    """For each checkpoint: the backbone's frozen-in-stage-2 weights, its other weights and the
    rest of the model's (BatchNorm statistics included)."""
    model = task_factory.get_task(config.task).build_model()
    checkpoint = tf.train.Checkpoint(model=model)
    set_stage_layers(model, "4+")
    early = [w for layer in model.backbone.layers if not layer.trainable for w in layer.weights]
    late = [w for layer in model.backbone.layers if layer.trainable for w in layer.weights]
    backbone = {id(w) for w in model.backbone.weights}
    rest = [w for w in model.weights if id(w) not in backbone]
    groups = {"early": early, "late": late, "rest": rest}
    weights = []
    for prefix in prefixes:
        checkpoint.read(str(prefix)).expect_partial()
        weights.append({name: [w.numpy() for w in group] for name, group in groups.items()})
    return weights


def changed(before, after, group) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before[group], after[group]))


@pytest.mark.slow
def test_staged_training_freezes_each_stage_and_again_after_a_resume(tfrecords, tmp_path):
    hp, config = staged_config(
        "num_steps: 1\nstage_1_epochs: 3\nstage_2_epochs: 1\nstage_3_epochs: 1\nbatch_size: 2\n"
        "initial_learning_rate: 0.01\nwarmup_steps: 0\ncheckpoint_interval: 1",
        train_pattern=tfrecords.train_pattern,
    )
    assert [(s.layers, s.first_step) for s in hp.stages] == [("heads", 0), ("4+", 3), ("all", 4)]
    first_run = copy.deepcopy(config)
    first_run.trainer.train_steps = 2  # stops mid-stage 1, as a killed run would
    runs = []
    for run_config in (first_run, config):
        lines = []
        train(
            run_config,
            model_dir=tmp_path,
            label_map=tfrecords.label_map,
            stages=hp.stages,
            keep_checkpoints=5,
            log=lines.append,
        )
        runs.append([line for line in lines if ": stage " in line])

    assert len(runs[0]) == 1 and runs[0][0].startswith("step 0: stage 1 of 3 ('heads'")
    resumed, stage_2, stage_3 = runs[1]
    assert resumed.startswith("step 2: stage 1 of 3 ('heads', to step 3)")
    assert "backbone frozen; learning rate 0.01" in resumed
    assert stage_2.startswith("step 3: stage 2 of 3 ('4+'") and "learning rate 0.01" in stage_2
    assert stage_3.startswith("step 4: stage 3 of 3 ('all'") and "learning rate 0.001" in stage_3

    w1, w2, w3, w4, w5 = checkpoint_weights(config, [tmp_path / f"ckpt-{n}" for n in range(1, 6)])
    for before, after in ((w1, w2), (w2, w3)):  # stage 1, then stage 1 after the resume
        assert not changed(before, after, "early") and not changed(before, after, "late")
        assert changed(before, after, "rest")
    assert not changed(w3, w4, "early") and changed(w3, w4, "late")  # stage 2
    assert changed(w4, w5, "early") and changed(w4, w5, "late")  # stage 3
