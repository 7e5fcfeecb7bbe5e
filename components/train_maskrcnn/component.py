"""KFP face of train-maskrcnn; the work is in cvat_kfp.components.training.run."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cvat_kfp.components.common.component_image import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def train_maskrcnn(
    train_tfrecords: Input[Dataset],
    val_tfrecords: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    init_model: Input[Model] = None,
    preset: str = "maskrcnn",
    hyperparameters: str = "",
    checkpoint_uri: str = "",
    pretrained_checkpoint_uri: str = "",
):
    """Trains a TF Model Garden Mask R-CNN on CVAT polygons and masks, in Onepanel's stages.

    The TFRecords must hold instance masks (a dataset of boxes only is refused before any model
    is built: train it with train-tfod). Evaluates on the val split at an interval (box and mask
    COCO AP) and keeps the best checkpoint by mask AP beside the latest. With checkpoint_uri, a
    restarted pod resumes where the last one stopped.

    Args:
        train_tfrecords: The train split's TFRecords with masks (convert-to-tfrecord).
        val_tfrecords: The val split's TFRecords, with the same label map.
        model: The trained model: checkpoints (latest and best/), params.yaml (the effective
            Model Garden config), label_map.pbtxt/.csv/.json, TensorBoard events, model.json.
        metrics: Box and mask COCO AP (AP, AP50, AP75, APs, APm, APl; mask_AP, mask_AP50, ...)
            on the val split, and final_loss.
        init_model: Optional Model of an earlier run to fine-tune: all weights when its label
            map is this dataset's, else backbone and decoder only. Training starts at step 0.
        preset: The model: maskrcnn (ResNet-50 FPN, 1024 px) or maskrcnn-mobilenetv2-light
            (MobileNetV2 FPNLite, 256 px, for CPU).
        hyperparameters: YAML, `key: value` per line; every key optional (preset defaults):
            num_steps (steps per epoch), stage_1_epochs (heads), stage_2_epochs (backbone
            stage 4 and up), stage_3_epochs (all layers, a tenth of the learning rate), per
            stage, not cumulative; batch_size, initial_learning_rate, num_clones (GPUs),
            warmup_steps, warmup_learning_rate, image_size, checkpoint_interval, eval_interval
            (default: each epoch), seed, and model_garden_overrides (a mapping applied to the
            Model Garden config).
        checkpoint_uri: Durable checkpoint location (a mounted path or gs://...) to resume from
            after a crash or preemption. Empty: no resumption across pod restarts.
        pretrained_checkpoint_uri: A Model Garden checkpoint to start the backbone from: a
            prefix, a directory or a .tar.gz of one (gs://, https://, a path), or "preset" for
            the preset's published one. Ignored with init_model.
    """
    from cvat_kfp.components.training.run import run_training

    result = run_training(
        train_tfrecords.path,
        val_tfrecords.path,
        model.path,
        component="train_maskrcnn",
        preset=preset,
        hyperparameters=hyperparameters,
        checkpoint_uri=checkpoint_uri,
        init_model_dir=init_model.path if init_model is not None else None,
        pretrained_checkpoint_uri=pretrained_checkpoint_uri,
    )
    model.metadata.update(result.metadata["model"])
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
