"""Model presets: Onepanel's model names mapped onto TF Model Garden architectures.

Each preset names the registered Model Garden experiment it starts from (`exp_factory` name), the
architecture overrides that make it the model it stands for, its default hyperparameters, and the
public Model Garden checkpoint it would start from on a cluster. Nothing here imports TensorFlow.

train_tfod takes the detection presets (RetinaNet and Faster R-CNN), train_maskrcnn the instance
segmentation ones (Mask R-CNN). The `light` presets (MobileNetV2 at 256 px) are the ones that train
at a usable speed on CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

DETECTION = "detection"
INSTANCE_SEGMENTATION = "instance_segmentation"
COMPONENT_FOR_TASK = {DETECTION: "train_tfod", INSTANCE_SEGMENTATION: "train_maskrcnn"}

# Model Garden's published ImageNet classifiers (official/vision/MODEL_GARDEN.md), over https so
# that clusters without Google credentials (on-prem, MinIO, S3) fetch them too
RESNET_IMAGENET = (
    "https://storage.googleapis.com/tf_model_garden/vision/resnet/resnet-{}-i224.tar.gz"
)
RESNET50_IMAGENET = RESNET_IMAGENET.format(50)
MOBILENETV2_RETINANET_COCO = (
    "https://storage.googleapis.com/tf_model_garden/vision/qat/mobilenetv2_ssd_coco/"
    "mobilenetv2_ssd_i256_ckpt.tar.gz"
)
SPINENET143_RETINANET_COCO = (
    "https://storage.googleapis.com/tf_model_garden/vision/spinenet/spinenet-143-i1280.tar.gz"
)


class PresetError(ValueError):
    """An unknown preset, or a preset the component does not train."""


@dataclass(frozen=True)
class Preset:
    """One model choice: a Model Garden experiment plus the overrides that define the model.

    `model` holds overrides for the experiment's `task.model` (architecture only: sizes, classes,
    data and schedule come from the hyperparameters). `defaults` are the hyperparameter defaults,
    under the user-facing keys of hyperparameters.py. `max_level` is the coarsest feature level:
    the input size must be a multiple of 2**max_level.
    """

    name: str
    task: str
    experiment: str
    family: str
    architecture: str
    backbone: str
    image_size: int
    max_level: int
    defaults: dict[str, Any]
    pretrained: str
    pretrained_checkpoint: str
    pretrained_modules: tuple[str, ...]
    light: bool
    notes: str
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def component(self) -> str:
        """The component that trains this preset: train_tfod or train_maskrcnn."""
        return COMPONENT_FOR_TASK[self.task]

    @property
    def include_mask(self) -> bool:
        return self.task == INSTANCE_SEGMENTATION

    @property
    def size_multiple(self) -> int:
        return 2**self.max_level

    def model_overrides(self) -> dict[str, Any]:
        """A fresh copy of `model`, safe to hand to Model Garden's `override`."""
        return copy.deepcopy(self.model)


# --- architectures --------------------------------------------------------------------------

# Model Garden's own MobileNetV2 RetinaNet (its experiments/retinanet/coco_mobilenetv2_tpu.yaml):
# the TF2 counterpart of TFOD's SSD MobileNetV2 FPNLite (separable 128-channel FPN and head).
MOBILENETV2_RETINANET = {
    "min_level": 3,
    "max_level": 7,
    "anchor": {"anchor_size": 3, "aspect_ratios": [0.5, 1.0, 2.0], "num_scales": 3},
    "backbone": {"type": "mobilenet", "mobilenet": {"model_id": "MobileNetV2"}},
    "decoder": {
        "type": "fpn",
        "fpn": {"num_filters": 128, "use_separable_conv": True, "use_keras_layer": True},
    },
    "head": {"num_convs": 4, "num_filters": 128, "use_separable_conv": True},
    "norm_activation": {"activation": "relu6", "norm_epsilon": 0.001, "norm_momentum": 0.99},
}

NO_MASK_HEAD = {
    "include_mask": False,
    "mask_head": None,
    "mask_sampler": None,
    "mask_roi_aligner": None,
}


def resnet_fpn(depth: int) -> dict[str, Any]:
    """Faster/Mask R-CNN on a ResNet-FPN, FPN levels 2-6 as in Model Garden's R-CNN configs."""
    return {
        "min_level": 2,
        "max_level": 6,
        "backbone": {"type": "resnet", "resnet": {"model_id": depth}},
        "decoder": {"type": "fpn", "fpn": {"num_filters": 256}},
    }


# --- hyperparameter defaults ----------------------------------------------------------------


def detection_defaults(
    *, num_steps, batch_size, learning_rate, warmup_steps, checkpoint_interval, eval_interval
) -> dict[str, Any]:
    return {
        "num_steps": num_steps,
        "batch_size": batch_size,
        "initial_learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "checkpoint_interval": checkpoint_interval,
        "eval_interval": eval_interval,
    }


def staged_defaults(
    *, steps_per_epoch, epochs, batch_size, learning_rate, warmup_steps, checkpoint_interval
) -> dict[str, Any]:
    """Mask R-CNN defaults: `num_steps` is steps per epoch (evaluation defaults to each epoch)."""
    stage_1, stage_2, stage_3 = epochs
    return {
        "num_steps": steps_per_epoch,
        "stage_1_epochs": stage_1,
        "stage_2_epochs": stage_2,
        "stage_3_epochs": stage_3,
        "batch_size": batch_size,
        "initial_learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "checkpoint_interval": checkpoint_interval,
    }


GPU_DETECTION = {"num_steps": 10000, "warmup_steps": 500}
GPU_INTERVALS = {"checkpoint_interval": 500, "eval_interval": 1000}
CPU_INTERVALS = {"checkpoint_interval": 100, "eval_interval": 500}


def _faster_rcnn(name, depth, *, batch_size, learning_rate, notes, **model) -> Preset:
    checkpoint = RESNET_IMAGENET.format(depth)
    return Preset(
        name=name,
        task=DETECTION,
        experiment="fasterrcnn_resnetfpn_coco",
        family="maskrcnn",
        architecture="Faster R-CNN",
        backbone=f"ResNet-{depth} + FPN (levels 2-6)",
        image_size=1024,
        max_level=6,
        defaults=detection_defaults(
            batch_size=batch_size, learning_rate=learning_rate, **GPU_DETECTION, **GPU_INTERVALS
        ),
        pretrained=f"ImageNet ResNet-{depth} classification checkpoint (Model Garden), backbone",
        pretrained_checkpoint=checkpoint,
        pretrained_modules=("backbone",),
        light=False,
        notes=notes,
        model={**resnet_fpn(depth), **NO_MASK_HEAD, **model},
    )


_PRESETS = [
    Preset(
        name="ssd-mobilenet-v2-coco",
        task=DETECTION,
        experiment="retinanet_mobile_coco",
        family="retinanet",
        architecture="RetinaNet",
        backbone="MobileNetV2 + FPNLite (128 ch, separable convs; levels 3-7)",
        image_size=384,
        max_level=7,
        defaults=detection_defaults(
            num_steps=15000, batch_size=24, learning_rate=0.03, warmup_steps=500, **GPU_INTERVALS
        ),
        pretrained="Model Garden's COCO MobileNetV2 RetinaNet (float checkpoint of its QAT "
        "project), backbone + decoder",
        pretrained_checkpoint=MOBILENETV2_RETINANET_COCO,
        pretrained_modules=("backbone", "decoder"),
        light=False,
        notes="TFOD's SSD MobileNetV2 has no TF2 Model Garden twin; Model Garden's MobileNetV2 "
        "RetinaNet with a separable FPN (coco_mobilenetv2_tpu) is SSD MobileNetV2 FPNLite in all "
        "but name. 384 px: the multiple of 128 nearest above Onepanel's 300. Onepanel's batch 24 "
        "and 15000 steps.",
        model=MOBILENETV2_RETINANET,
    ),
    Preset(
        name="retinanet-mobilenetv2-light",
        task=DETECTION,
        experiment="retinanet_mobile_coco",
        family="retinanet",
        architecture="RetinaNet",
        backbone="MobileNetV2 + FPNLite (128 ch, separable convs; levels 3-7)",
        image_size=256,
        max_level=7,
        defaults=detection_defaults(
            num_steps=2000, batch_size=4, learning_rate=0.01, warmup_steps=100, **CPU_INTERVALS
        ),
        pretrained="Model Garden's COCO MobileNetV2 RetinaNet (float checkpoint of its QAT "
        "project, trained at this very 256 px), backbone + decoder",
        pretrained_checkpoint=MOBILENETV2_RETINANET_COCO,
        pretrained_modules=("backbone", "decoder"),
        light=True,
        notes="The CPU preset for detection: ssd-mobilenet-v2-coco's architecture at 256 px.",
        model=MOBILENETV2_RETINANET,
    ),
    _faster_rcnn(
        "frcnn-res50-coco",
        50,
        batch_size=4,
        learning_rate=0.005,
        notes="Model Garden's fasterrcnn_resnetfpn_coco. 1024 px: Onepanel's max_dimension.",
    ),
    _faster_rcnn(
        "frcnn-res101-coco",
        101,
        batch_size=4,
        learning_rate=0.005,
        notes="fasterrcnn_resnetfpn_coco with a ResNet-101 backbone.",
    ),
    _faster_rcnn(
        "frcnn-res101-lowp",
        101,
        batch_size=4,
        learning_rate=0.005,
        notes="frcnn-res101-coco keeping 100 RPN proposals per image at inference instead of "
        "1000 (TFOD's 'low proposals' model): faster inference, slightly lower recall. Training "
        "is unchanged.",
        roi_generator={"test_num_proposals": 100},
    ),
    _faster_rcnn(
        "frcnn-inc-resv2-atr-coco",
        152,
        batch_size=2,
        learning_rate=0.0025,
        notes="Model Garden has no Inception-ResNet-v2 backbone. ResNet-152 is the nearest "
        "ImageNet-pretrained backbone it publishes (60M parameters and 78.7% top-1, against "
        "Inception-ResNet-v2's 56M and 80.4%). The atrous (output stride 8) trick has no "
        "counterpart: the FPN's stride-4 level gives the fine features instead.",
    ),
    Preset(
        name="frcnn-nas-coco",
        task=DETECTION,
        experiment="maskrcnn_spinenet_coco",
        family="maskrcnn",
        architecture="Faster R-CNN",
        backbone="SpineNet-143 (levels 3-7, no separate decoder)",
        image_size=1024,
        max_level=7,
        defaults=detection_defaults(
            batch_size=2, learning_rate=0.0025, **GPU_DETECTION, **GPU_INTERVALS
        ),
        pretrained="Model Garden's COCO RetinaNet SpineNet-143 checkpoint, backbone",
        pretrained_checkpoint=SPINENET143_RETINANET_COCO,
        pretrained_modules=("backbone",),
        light=False,
        notes="Model Garden has no NASNet. SpineNet is its architecture-searched backbone, as "
        "NASNet was TFOD's, and SpineNet-143 its heaviest with a public checkpoint. Like "
        "Onepanel's NAS model it wants two or more GPUs (batch 2 at 1024 px needs ~16 GB).",
        model={
            "min_level": 3,
            "max_level": 7,
            "backbone": {
                "type": "spinenet",
                "spinenet": {"model_id": "143", "min_level": 3, "max_level": 7},
            },
            "norm_activation": {"activation": "swish"},
            **NO_MASK_HEAD,
        },
    ),
    Preset(
        name="maskrcnn",
        task=INSTANCE_SEGMENTATION,
        experiment="maskrcnn_resnetfpn_coco",
        family="maskrcnn",
        architecture="Mask R-CNN",
        backbone="ResNet-50 + FPN (levels 2-6)",
        image_size=1024,
        max_level=6,
        defaults=staged_defaults(
            steps_per_epoch=1000,
            epochs=(1, 1, 1),
            batch_size=4,
            learning_rate=0.005,
            warmup_steps=500,
            checkpoint_interval=500,
        ),
        pretrained="ImageNet ResNet-50 classification checkpoint (Model Garden), backbone",
        pretrained_checkpoint=RESNET50_IMAGENET,
        pretrained_modules=("backbone",),
        light=False,
        notes="Model Garden's maskrcnn_resnetfpn_coco. Onepanel's Matterport Mask R-CNN was "
        "ResNet-101 at 1024 px; its 1000 steps per epoch and 1/1/1 stage epochs are kept.",
        model=resnet_fpn(50),
    ),
    Preset(
        name="maskrcnn-mobilenetv2-light",
        task=INSTANCE_SEGMENTATION,
        experiment="maskrcnn_mobilenet_coco",
        family="maskrcnn",
        architecture="Mask R-CNN",
        backbone="MobileNetV2 + FPNLite (128 ch, separable convs; levels 3-6)",
        image_size=256,
        max_level=6,
        defaults=staged_defaults(
            steps_per_epoch=200,
            epochs=(2, 2, 1),
            batch_size=2,
            learning_rate=0.005,
            warmup_steps=100,
            checkpoint_interval=100,
        ),
        pretrained="MobileNetV2 backbone of Model Garden's COCO MobileNetV2 RetinaNet (no "
        "MobileNetV2 ImageNet checkpoint is published in Model Garden's format)",
        pretrained_checkpoint=MOBILENETV2_RETINANET_COCO,
        pretrained_modules=("backbone",),
        light=True,
        notes="The CPU preset for instance segmentation: Model Garden's maskrcnn_mobilenet_coco "
        "at 256 px.",
    ),
]

PRESETS: dict[str, Preset] = {preset.name: preset for preset in _PRESETS}


def presets_for(component: str) -> list[Preset]:
    """The presets `component` ("train_tfod" or "train_maskrcnn") trains, in table order."""
    if component not in COMPONENT_FOR_TASK.values():
        known = ", ".join(COMPONENT_FOR_TASK.values())
        raise PresetError(f"unknown component {component!r}; presets belong to {known}")
    return [preset for preset in PRESETS.values() if preset.component == component]


def get_preset(name: str, component: str | None = None) -> Preset:
    """The preset called `name`; with `component`, it must be one that component trains."""
    candidates = presets_for(component) if component else list(PRESETS.values())
    names = ", ".join(preset.name for preset in candidates)
    preset = PRESETS.get(name.strip() if isinstance(name, str) else name)
    if preset is None:
        raise PresetError(f"unknown model preset {name!r}; choose one of: {names}")
    if component and preset.component != component:
        raise PresetError(
            f"preset {preset.name!r} is a {preset.task.replace('_', ' ')} model, trained by "
            f"{preset.component}; {component} takes: {names}"
        )
    return preset
