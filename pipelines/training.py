"""The wiring the two training pipelines share: CVAT annotations → TFRecords → train → evaluate →
export (→ pre-annotate, → select the frames to label next).

The pipelines themselves are plain `@dsl.pipeline` functions a reader can find, each with its own
signature and docstring (hence the Kubeflow UI's parameter descriptions, the CLI's checks and
`cvat-kfp describe`): `tfod_training` in tfod_training.py (boxes, train-tfod) and
`maskrcnn_training` in maskrcnn_training.py (boxes and masks, train-maskrcnn). Each hands its
parameters to `wire_training_pipeline`, so the graph below is written once. Their data
parameters repeat dataset-preparation's; tests/pipelines/test_parameters.py checks that the three
declare them alike.

Graph, as the Kubeflow UI draws it:

    dataset-preparation (export-annotations → split-dataset → convert-{train,val,test}-to-tfrecord)
    checkpoint-location
    fine-tune-from-init-model   (init_model_uri set: importer → train → evaluate → export)
    train-from-preset           (otherwise:                    train → evaluate → export)
        ├ preannotate-cvat-task (preannotate_task_id set: preannotate)
        └ select-frames-cvat-task (select_task_id set: select-frames)

Why two branches instead of one training task with an optional input: an importer needs a URI,
so "no parent model" cannot flow through one; and kfp.local (2.17) cannot merge artifacts of
two branches with dsl.OneOf, so everything downstream of training sits inside each branch.
"""

import inspect
from collections.abc import Callable

from kfp import dsl, kubernetes
from kfp.dsl import Model

from cvat_kfp.components.common.component_image import cpu_image
from cvat_kfp.components.evaluate_model.component import evaluate_model
from cvat_kfp.components.export_model.component import export_model
from cvat_kfp.components.preannotate.component import preannotate
from cvat_kfp.components.select_frames.component import select_frames
from cvat_kfp.pipelines.dataset_preparation import dataset_preparation, use_cvat_secret

# A preempted or crashed training pod is restarted this many times; with a checkpoint location it
# resumes from its newest checkpoint. KFP takes a fixed number here, not a pipeline parameter.
TRAINING_RETRIES = 3
TRAINING_RETRY_BACKOFF = "60s"
GPU_TOLERATION_KEY = "nvidia.com/gpu"  # the taint GKE, EKS and the NVIDIA operator put on GPU nodes
SHARED_MEMORY_VOLUME = "dshm"


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def checkpoint_location(checkpoint_uri: str, checkpoint_root: str, run_id: str) -> str:
    """Where training keeps durable checkpoints: checkpoint_uri as given, else
    <checkpoint_root>/<run id> (one location per run, shared by the retries of its training pod),
    else "" (no resumption across pod restarts).

    Args:
        checkpoint_uri: A full checkpoint location; reuse one to resume an earlier run.
        checkpoint_root: A prefix (gs://bucket/path or a mounted path) for one folder per run.
        run_id: The run's unique id (the pipeline job id placeholder).
    """
    if checkpoint_uri:
        location = checkpoint_uri
    elif checkpoint_root:
        if "{{" in run_id or not run_id.strip():
            # A backend that passes the placeholder verbatim would give every run one location,
            # and a new run would resume (or return) an earlier run's model.
            raise ValueError(
                f"this Kubeflow Pipelines backend did not substitute the run id ({run_id!r}); "
                "set checkpoint_uri to a location of this run's own instead of checkpoint_root"
            )
        location = f"{checkpoint_root.rstrip('/')}/{run_id}"
    else:
        location = ""
        print("No checkpoint_root or checkpoint_uri: a restarted training pod starts from step 0.")
    print(f"Checkpoint location: {location or '(none)'}")
    return location


def data_parameter_names() -> list[str]:
    """dataset-preparation's parameters that a training pipeline passes on: all but
    include_masks, which the pipeline's kind decides (masks only for Mask R-CNN)."""
    names = inspect.signature(dataset_preparation.pipeline_func).parameters
    return [name for name in names if name != "include_masks"]


def _request_training_resources(task: dsl.PipelineTask, params: dict) -> None:
    """GPUs, CPU and memory limits, GPU-node toleration, node selector and /dev/shm."""
    task.set_accelerator_type(params["accelerator_type"])
    task.set_accelerator_limit(params["gpu_count"])
    task.set_cpu_limit(params["cpu_limit"])
    task.set_memory_limit(params["memory_limit"])
    # kfp 2.17 does not route parameters used only as resources into a dsl.If branch's inputs;
    # registering them as channels the task consumes does.
    task.register_pipeline_channels(
        [params[name] for name in ("accelerator_type", "gpu_count", "cpu_limit", "memory_limit")]
    )
    kubernetes.add_toleration(task, key=GPU_TOLERATION_KEY, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector_json(task, params["node_selector"])
    # TensorFlow's input pipeline and NCCL want more shared memory than a pod's default 64 MiB.
    kubernetes.empty_dir_mount(
        task, volume_name=SHARED_MEMORY_VOLUME, mount_path="/dev/shm", medium="Memory"
    )


def _train_evaluate_export(
    params: dict, trainer: Callable, include_masks: bool, data, checkpoint_uri, init_model
) -> None:
    optional_inputs = {"init_model": init_model} if init_model is not None else {}
    train = trainer(
        train_tfrecords=data.outputs["train"],
        val_tfrecords=data.outputs["val"],
        preset=params["preset"],
        hyperparameters=params["hyperparameters"],
        checkpoint_uri=checkpoint_uri,
        pretrained_checkpoint_uri=params["pretrained_checkpoint_uri"],
        **optional_inputs,
    )
    train.set_display_name(trainer.name)  # the same name in both branches
    _request_training_resources(train, params)
    train.set_retry(TRAINING_RETRIES, backoff_duration=TRAINING_RETRY_BACKOFF)
    # Not cached: a re-run asks for a new model, and training writes to the checkpoint location.
    train.set_caching_options(False)

    evaluate = evaluate_model(
        model=train.outputs["model"],
        test_tfrecords=data.outputs["test"],
        val_tfrecords=data.outputs["val"],  # calibrates the per-class score thresholds
        score_threshold=params["score_threshold"],
        iou_threshold=params["iou_threshold"],
    )
    evaluate.set_display_name("evaluate-model")
    export = export_model(
        model=train.outputs["model"],
        test_metrics=evaluate.outputs["metrics"],
        evaluation=evaluate.outputs["evaluation"],  # the thresholds, into export.json
        tflite=params["tflite"],
        destination_uri=params["export_destination_uri"],
    )
    export.set_display_name("export-model")
    export.set_caching_options(False)  # copies to export_destination_uri: a side effect

    with dsl.If(params["preannotate_task_id"] != "", name="preannotate-cvat-task"):
        mask_options = {}
        if include_masks:
            mask_options["mask_format"] = params["preannotate_mask_format"]
        upload = preannotate(
            exported_model=export.outputs["exported_model"],
            cvat_url=params["cvat_url"],
            task_id=params["preannotate_task_id"],
            score_threshold=params["preannotate_score_threshold"],
            existing_annotations=params["preannotate_existing_annotations"],
            **mask_options,
        )
        upload.set_display_name("preannotate")
        upload.set_caching_options(False)  # uploads to CVAT
        use_cvat_secret(upload, params["cvat_secret_name"])
    _select_frames(params, export)


def _select_frames(params: dict, export: dsl.PipelineTask) -> None:
    """The new model ranks a CVAT task's unannotated frames for the next round of annotation."""
    with dsl.If(params["select_task_id"] != "", name="select-frames-cvat-task"):
        select = select_frames(
            model=export.outputs["exported_model"],
            cvat_url=params["cvat_url"],
            task_id=params["select_task_id"],
            top_n=params["select_top_n"],
            # the threshold pre-annotations are kept at: frames near it are where they go wrong
            score_threshold=params["preannotate_score_threshold"],
            create_task=params["select_create_task"],
        )
        select.set_display_name("select-frames")
        select.set_caching_options(False)  # reads the task's annotations now; may create a task
        use_cvat_secret(select, params["cvat_secret_name"])


def wire_training_pipeline(params: dict, trainer: Callable, *, include_masks: bool) -> None:
    """The tasks of a training pipeline, from its parameters (name → pipeline channel: the
    pipeline function's `locals()`), training with the `trainer` component."""
    data = dataset_preparation(
        **{name: params[name] for name in data_parameter_names()}, include_masks=include_masks
    )
    location = checkpoint_location(
        checkpoint_uri=params["checkpoint_uri"],
        checkpoint_root=params["checkpoint_root"],
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    location.set_caching_options(False)  # one location per run, never another run's
    with dsl.If(params["init_model_uri"] != "", name="fine-tune-from-init-model"):
        parent = dsl.importer(
            artifact_uri=params["init_model_uri"], artifact_class=Model, reimport=False
        )
        parent.set_display_name("import-init-model")
        _train_evaluate_export(
            params, trainer, include_masks, data, location.output, init_model=parent.output
        )
    with dsl.Else(name="train-from-preset"):
        _train_evaluate_export(params, trainer, include_masks, data, location.output, None)
