"""KFP face of train-tfod; the work is in cvat_kfp.components.training.run."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cvat_kfp.components.common.component_image import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def train_tfod(
    train_tfrecords: Input[Dataset],
    val_tfrecords: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    init_model: Input[Model] = None,
    preset: str = "ssd-mobilenet-v2-coco",
    hyperparameters: str = "",
    checkpoint_uri: str = "",
    pretrained_checkpoint_uri: str = "",
):
    """Trains a TF Model Garden object detector on CVAT boxes (the TF Object Detection API's role).

    Evaluates on the val split at an interval (COCO AP) and keeps the best checkpoint beside the
    latest. With checkpoint_uri, a restarted pod resumes where the last one stopped.

    Args:
        train_tfrecords: The train split's TFRecords (convert-to-tfrecord).
        val_tfrecords: The val split's TFRecords, with the same label map.
        model: The trained model: checkpoints (latest and best/), params.yaml (the effective
            Model Garden config), label_map.pbtxt/.csv/.json, TensorBoard events, model.json.
        metrics: COCO AP, AP50, AP75, APs, APm, APl on the val split, and final_loss.
        init_model: Optional Model of an earlier run to fine-tune: all weights when its label
            map is this dataset's, else backbone and decoder only. Training starts at step 0.
        preset: The model, by Onepanel's names: ssd-mobilenet-v2-coco (RetinaNet MobileNetV2
            FPNLite, 384 px), frcnn-res50-coco, frcnn-res101-coco, frcnn-res101-lowp,
            frcnn-inc-resv2-atr-coco (ResNet-152), frcnn-nas-coco (SpineNet-143), or
            retinanet-mobilenetv2-light (256 px, for CPU).
        hyperparameters: YAML, `key: value` per line; every key optional (preset defaults):
            num_steps, batch_size, initial_learning_rate, num_clones (GPUs), warmup_steps,
            warmup_learning_rate, schedule_step_1, schedule_lr_1, schedule_step_2,
            schedule_lr_2, image_size, checkpoint_interval, eval_interval, seed, and
            model_garden_overrides (a mapping applied to the Model Garden config).
        checkpoint_uri: Durable checkpoint location (a mounted path or gs://...) to resume from
            after a crash or preemption. Empty: no resumption across pod restarts.
        pretrained_checkpoint_uri: A Model Garden checkpoint to start the backbone (and decoder)
            from: a prefix, a directory or a .tar.gz of one (gs://, https://, a path), or
            "preset" for the preset's published one. Ignored with init_model.
    """
    from cvat_kfp.components.training.run import run_training

    result = run_training(
        train_tfrecords.path,
        val_tfrecords.path,
        model.path,
        component="train_tfod",
        preset=preset,
        hyperparameters=hyperparameters,
        checkpoint_uri=checkpoint_uri,
        init_model_dir=init_model.path if init_model is not None else None,
        pretrained_checkpoint_uri=pretrained_checkpoint_uri,
    )
    model.metadata.update(result.metadata["model"])
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
