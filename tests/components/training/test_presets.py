"""Presets: Onepanel's names, the component each belongs to, lookups and their errors."""

import dataclasses

import pytest

from cvat_kfp.components.training.presets import (
    DETECTION,
    INSTANCE_SEGMENTATION,
    PRESETS,
    PresetError,
    get_preset,
    presets_for,
)

ONEPANEL_DETECTION = [
    "ssd-mobilenet-v2-coco",
    "frcnn-res50-coco",
    "frcnn-res101-coco",
    "frcnn-res101-lowp",
    "frcnn-inc-resv2-atr-coco",
    "frcnn-nas-coco",
]
LIGHT = ["retinanet-mobilenetv2-light", "maskrcnn-mobilenetv2-light"]


def test_every_onepanel_name_and_the_light_presets_exist():
    assert set(PRESETS) == {*ONEPANEL_DETECTION, "maskrcnn", *LIGHT}
    assert sorted(p.name for p in PRESETS.values() if p.light) == sorted(LIGHT)


def test_each_component_gets_its_task():
    tfod = presets_for("train_tfod")
    maskrcnn = presets_for("train_maskrcnn")
    assert {p.name for p in tfod} == {*ONEPANEL_DETECTION, "retinanet-mobilenetv2-light"}
    assert {p.name for p in maskrcnn} == {"maskrcnn", "maskrcnn-mobilenetv2-light"}
    assert all(p.task == DETECTION and not p.include_mask for p in tfod)
    assert all(p.task == INSTANCE_SEGMENTATION and p.include_mask for p in maskrcnn)


@pytest.mark.parametrize("preset", PRESETS.values(), ids=lambda p: p.name)
def test_preset_is_complete_and_consistent(preset):
    assert preset.image_size % preset.size_multiple == 0
    assert preset.family in ("retinanet", "maskrcnn")
    assert preset.architecture and preset.backbone and preset.notes and preset.pretrained
    assert preset.pretrained_checkpoint.startswith(("gs://", "https://"))
    assert set(preset.pretrained_modules) <= {"backbone", "decoder"}
    assert {"num_steps", "batch_size", "initial_learning_rate"} <= set(preset.defaults)
    assert ("stage_1_epochs" in preset.defaults) == preset.include_mask
    if preset.light:
        assert preset.image_size == 256 and "MobileNetV2" in preset.backbone


def test_substituted_backbones_say_which_and_why():
    assert "ResNet-152" in get_preset("frcnn-inc-resv2-atr-coco").backbone
    assert "Inception-ResNet-v2" in get_preset("frcnn-inc-resv2-atr-coco").notes
    assert "SpineNet-143" in get_preset("frcnn-nas-coco").backbone
    assert "NASNet" in get_preset("frcnn-nas-coco").notes


def test_low_proposal_preset_differs_from_res101_only_in_test_proposals():
    low, full = get_preset("frcnn-res101-lowp").model, get_preset("frcnn-res101-coco").model
    assert low["roi_generator"] == {"test_num_proposals": 100}
    assert {k: v for k, v in low.items() if k != "roi_generator"} == full


def test_presets_are_frozen_and_hand_out_copies():
    preset = get_preset("ssd-mobilenet-v2-coco")
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.image_size = 512
    overrides = preset.model_overrides()
    overrides["backbone"]["mobilenet"]["model_id"] = "MobileNetV3Large"
    assert preset.model["backbone"]["mobilenet"]["model_id"] == "MobileNetV2"


def test_unknown_name_lists_the_presets():
    with pytest.raises(PresetError, match="unknown model preset 'ssd-mobilenet-v1'") as error:
        get_preset("ssd-mobilenet-v1")
    assert all(name in str(error.value) for name in PRESETS)


def test_component_refuses_the_other_task_and_names_the_right_component():
    assert get_preset("maskrcnn", "train_maskrcnn").name == "maskrcnn"
    with pytest.raises(PresetError, match="trained by train_maskrcnn") as error:
        get_preset("maskrcnn", "train_tfod")
    assert "frcnn-res50-coco" in str(error.value) and "maskrcnn-mobilenetv2-light" not in str(
        error.value
    )
    with pytest.raises(PresetError, match="unknown component"):
        presets_for("train_yolo")
