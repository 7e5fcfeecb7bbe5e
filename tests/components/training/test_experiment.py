"""ExperimentConfigs built from presets: data, classes, schedule, runtime, overrides."""

import pytest
from official.core import exp_factory, task_factory

from cvat_kfp.components.training.experiment import (
    ExperimentConfigError,
    build_experiment_config,
    effective_config_yaml,
    experiment_config_from_yaml,
)
from cvat_kfp.components.training.hyperparameters import (
    HyperparameterError,
    parse_hyperparameters,
)
from cvat_kfp.components.training.presets import PRESETS, get_preset
from cvat_kfp.components.training.strategy import DevicePlan

TRAIN = "/data/train/train-*-of-00002.tfrecord"
VAL = "/data/val/val-*-of-00001.tfrecord"
NUM_CLASSES = 3
ONE_GPU = DevicePlan(("/gpu:0",))
TWO_GPUS = DevicePlan(("/gpu:0", "/gpu:1"))


def build(preset_name, hyperparameters=None, **arguments):
    preset = get_preset(preset_name)
    hp = parse_hyperparameters(hyperparameters, preset)
    options = {
        "train_pattern": TRAIN,
        "val_pattern": VAL,
        "num_classes": NUM_CLASSES,
        "model_dir": "/runs/1",
        "include_masks": True,
        **arguments,
    }
    return build_experiment_config(preset, hp, **options)


@pytest.mark.parametrize("preset", PRESETS.values(), ids=lambda p: p.name)
def test_every_preset_builds_a_valid_config(preset):
    assert preset.experiment in exp_factory._REGISTERED_CONFIGS
    config = build(preset.name)
    task, model = config.task, config.task.model
    assert model.num_classes == NUM_CLASSES + 1  # background is class 0 for Model Garden
    assert model.input_size == [preset.image_size] * 2 + [3]
    assert model.max_level == preset.max_level
    assert getattr(model, "include_mask", False) == preset.include_mask
    assert task.train_data.input_path == TRAIN and task.validation_data.input_path == VAL
    assert task.train_data.is_training and not task.validation_data.is_training
    assert not task.validation_data.drop_remainder
    assert task.annotation_file is None and task.init_checkpoint is None
    assert not task.train_data.decoder.simple_decoder.regenerate_source_id
    assert task.train_data.parser.max_num_instances == 200
    assert "gs://" not in effective_config_yaml(config)  # the COCO configs' paths are gone


def test_architectures_are_the_presets():
    ssd = build("ssd-mobilenet-v2-coco").task.model
    assert ssd.backbone.type == "mobilenet" and ssd.backbone.mobilenet.model_id == "MobileNetV2"
    assert ssd.decoder.fpn.use_separable_conv and ssd.head.use_separable_conv
    assert build("frcnn-res101-coco").task.model.backbone.resnet.model_id == 101
    assert build("frcnn-inc-resv2-atr-coco").task.model.backbone.resnet.model_id == 152
    nas = build("frcnn-nas-coco").task.model
    assert nas.backbone.spinenet.model_id == "143" and not nas.include_mask
    assert build("frcnn-res101-coco").task.model.roi_generator.test_num_proposals == 1000
    assert build("frcnn-res101-lowp").task.model.roi_generator.test_num_proposals == 100


def test_cpu_runtime_is_float32_without_xla():
    config = build("maskrcnn")  # Model Garden's maskrcnn_resnetfpn_coco enables XLA and bfloat16
    assert config.runtime.mixed_precision_dtype == "float32" and not config.runtime.enable_xla
    assert config.runtime.distribution_strategy == "off" and config.runtime.num_gpus == 0
    assert config.task.train_data.dtype == config.task.validation_data.dtype == "float32"
    assert not config.task.model.norm_activation.use_sync_bn


def test_gpu_runtime_is_float16_and_mirrored_over_replicas():
    one = build("frcnn-res50-coco", devices=ONE_GPU)
    assert one.runtime.mixed_precision_dtype == "float16" and one.runtime.loss_scale == "dynamic"
    assert one.runtime.distribution_strategy == "one_device" and not one.runtime.enable_xla
    assert one.task.train_data.dtype == "float16"
    two = build("frcnn-res50-coco", devices=TWO_GPUS)
    assert two.runtime.distribution_strategy == "mirrored" and two.runtime.num_gpus == 2
    assert two.task.model.norm_activation.use_sync_bn
    assert two.task.train_data.global_batch_size == 4  # batch_size is the global batch


def test_batch_must_split_over_the_gpus():
    with pytest.raises(HyperparameterError, match="batch_size 3 does not split evenly over 2"):
        build("frcnn-res50-coco", "batch_size: 3", devices=TWO_GPUS)
    assert build("frcnn-res50-coco", "batch_size: 3").task.train_data.global_batch_size == 3


def test_mask_rcnn_needs_masks_and_matching_hyperparameters():
    with pytest.raises(ExperimentConfigError, match="have none .*boxes only.*train_tfod"):
        build("maskrcnn", include_masks=False)
    assert not build("frcnn-res50-coco", include_masks=False).task.model.include_mask
    detection_hp = parse_hyperparameters(None, "frcnn-res50-coco")
    with pytest.raises(ExperimentConfigError, match="parse them with this preset"):
        build_experiment_config(
            "maskrcnn", detection_hp, train_pattern=TRAIN, val_pattern=VAL, num_classes=2,
            include_masks=True,
        )  # fmt: skip


@pytest.mark.parametrize("num_classes", [0, -1, True, 2.0])
def test_num_classes_is_checked(num_classes):
    with pytest.raises(ExperimentConfigError, match="num_classes must be at least 1"):
        build("ssd-mobilenet-v2-coco", num_classes=num_classes)


def test_batch_steps_intervals_and_best_checkpoint():
    config = build(
        "retinanet-mobilenetv2-light",
        "num_steps: 300\nbatch_size: 2\ncheckpoint_interval: 50\neval_interval: 75",
    )
    trainer = config.trainer
    assert config.task.train_data.global_batch_size == 2
    assert config.task.validation_data.global_batch_size == 2
    assert trainer.train_steps == 300 and trainer.validation_steps == -1
    assert (trainer.checkpoint_interval, trainer.validation_interval) == (50, 75)
    assert trainer.steps_per_loop == trainer.summary_interval == 25  # divides both intervals
    assert trainer.best_checkpoint_eval_metric == "AP"
    assert trainer.best_checkpoint_export_subdir == "best"  # as at the durable location
    assert build("maskrcnn").trainer.best_checkpoint_eval_metric == "mask_AP"
    no_val = build("retinanet-mobilenetv2-light", val_pattern=None).trainer
    assert no_val.best_checkpoint_eval_metric == "" and no_val.best_checkpoint_export_subdir == ""


def test_learning_rate_is_cosine_without_schedule_steps():
    optimizer = build("ssd-mobilenet-v2-coco", "num_steps: 400\nwarmup_steps: 0").trainer
    learning_rate = optimizer.optimizer_config.learning_rate
    assert learning_rate.type == "cosine"
    assert learning_rate.cosine.decay_steps == 400
    assert learning_rate.cosine.initial_learning_rate == 0.03
    assert optimizer.optimizer_config.warmup.type is None
    assert optimizer.optimizer_config.optimizer.sgd.momentum == 0.9


def test_schedule_steps_make_a_stepwise_rate_with_warmup():
    config = build(
        "frcnn-res50-coco",
        "num_steps: 1000\ninitial_learning_rate: 0.01\nschedule_step_1: 600\n"
        "schedule_lr_1: 0.002\nschedule_step_2: 900\nwarmup_steps: 50\nwarmup_learning_rate: 0.001",
    )
    optimizer = config.trainer.optimizer_config
    assert optimizer.learning_rate.type == "stepwise"
    assert optimizer.learning_rate.stepwise.boundaries == [599, 899]
    assert optimizer.learning_rate.stepwise.values == pytest.approx([0.01, 0.002, 0.0002])
    assert optimizer.warmup.linear.warmup_steps == 50
    assert optimizer.warmup.linear.warmup_learning_rate == 0.001


def test_mask_rcnn_stages_set_steps_and_the_stage_3_drop():
    config = build("maskrcnn", "num_steps: 10\nstage_2_epochs: 2\ninitial_learning_rate: 0.02")
    assert config.trainer.train_steps == 40
    learning_rate = config.trainer.optimizer_config.learning_rate
    assert learning_rate.type == "stepwise"  # a boundary at each stage's start
    assert learning_rate.stepwise.boundaries == [9, 29]
    assert learning_rate.stepwise.values == pytest.approx([0.02, 0.02, 0.002])
    only_stage_3 = build(
        "maskrcnn", "num_steps: 10\nstage_1_epochs: 0\nstage_2_epochs: 0\nstage_3_epochs: 2"
    ).trainer.optimizer_config.learning_rate
    assert only_stage_3.type == "stepwise"  # never a constant: Keras would checkpoint it
    assert only_stage_3.stepwise.boundaries == [20]
    assert only_stage_3.stepwise.values == pytest.approx([0.0005, 0.0005])


def test_init_checkpoint_and_modules():
    config = build(
        "ssd-mobilenet-v2-coco",
        init_checkpoint="/models/parent/ckpt-100",
        init_checkpoint_modules=["backbone", "decoder"],
    )
    assert config.task.init_checkpoint == "/models/parent/ckpt-100"
    assert config.task.init_checkpoint_modules == ["backbone", "decoder"]
    assert build("maskrcnn", init_checkpoint_modules="all").task.init_checkpoint_modules == "all"
    for bad in (["all", "backbone"], "head", []):
        with pytest.raises(ExperimentConfigError, match="init_checkpoint_modules"):
            build("maskrcnn", init_checkpoint_modules=bad)


def test_model_garden_overrides_apply_last():
    overrides = (
        "model_garden_overrides:\n"
        "  task.model.anchor.num_scales: 2\n"
        "  runtime.enable_xla: true\n"
        "  trainer.optimizer_config.optimizer.sgd.momentum: 0.8\n"
    )
    config = build("ssd-mobilenet-v2-coco", overrides, devices=ONE_GPU)
    assert config.task.model.anchor.num_scales == 2
    assert config.runtime.enable_xla
    assert config.trainer.optimizer_config.optimizer.sgd.momentum == 0.8


def test_on_cpu_the_devices_win_over_the_overrides_with_a_log_line():
    lines = []
    config = build(
        "ssd-mobilenet-v2-coco",
        "model_garden_overrides:\n"
        "  runtime.enable_xla: true\n"
        "  runtime.mixed_precision_dtype: float16\n"
        "  task.train_data.dtype: float16\n",
        log=lines.append,
    )
    runtime = config.runtime
    assert (runtime.enable_xla, runtime.mixed_precision_dtype) == (False, "float32")
    assert config.task.train_data.dtype == "float32"
    assert any("mixed precision float16 turned off" in line for line in lines)
    assert any("XLA (jit_compile) turned off" in line for line in lines)


def test_the_built_config_is_locked_and_its_initial_weights_win_over_overrides():
    overrides = "model_garden_overrides: {task.init_checkpoint: /elsewhere/ckpt-1}"
    config = build("ssd-mobilenet-v2-coco", overrides, init_checkpoint="/models/parent/ckpt-100")
    assert config.task.init_checkpoint == "/models/parent/ckpt-100"
    assert build("ssd-mobilenet-v2-coco", overrides).task.init_checkpoint == "/elsewhere/ckpt-1"
    with pytest.raises(ValueError, match="locked"):
        config.override({"task": {"init_checkpoint": "/other/ckpt-2"}})


def test_unknown_override_names_its_path_and_the_keys_there():
    with pytest.raises(HyperparameterError) as error:
        build("ssd-mobilenet-v2-coco", "model_garden_overrides: {task.model.anchr.num_scales: 2}")
    message = str(error.value)
    assert "'task.model.anchr'" in message and "task.model" in message and "anchor" in message


def test_overrides_that_break_the_pyramid_are_refused():
    with pytest.raises(HyperparameterError, match=r"input_size \[320, 320, 3\].*multiple of 128"):
        build(
            "ssd-mobilenet-v2-coco",
            "model_garden_overrides: {task.model.input_size: [320, 320, 3]}",
        )


def test_effective_config_yaml_reads_back_as_the_same_config():
    config = build("maskrcnn-mobilenetv2-light", "num_steps: 7")
    text = effective_config_yaml(config)
    assert "num_classes: 4" in text and "train_steps: 35" in text
    again = experiment_config_from_yaml(text, "maskrcnn-mobilenetv2-light")
    assert again.as_dict() == config.as_dict()


@pytest.mark.parametrize("name", ["retinanet-mobilenetv2-light", "maskrcnn-mobilenetv2-light"])
def test_light_presets_build_their_model_at_256_px(name, tmp_path):
    config = build(name)
    task = task_factory.get_task(config.task, logging_dir=str(tmp_path))
    model = task.build_model()
    assert tuple(model.backbone.inputs[0].shape[1:3]) == (256, 256)
