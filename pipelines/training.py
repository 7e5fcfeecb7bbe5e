"""The training pipelines: CVAT annotations → TFRecords → train → evaluate → export
(→ pre-annotate).

`tfod_training` (boxes, train-tfod) and `maskrcnn_training` (boxes and masks, train-maskrcnn) are
one wiring built twice by `build_training_pipeline`. Their parameters are one table
(`training_parameters`): the data parameters are dataset-preparation's own (signature and
docstring), the rest are listed here once. The table gives each pipeline its signature and its
docstring, hence the Kubeflow UI's parameter descriptions, the CLI's checks and the README tables.

Graph, as the Kubeflow UI draws it:

    dataset-preparation (export-annotations → split-dataset → convert-{train,val,test}-to-tfrecord)
    checkpoint-location
    fine-tune-from-init-model   (init_model_uri set: importer → train → evaluate → export)
    train-from-preset           (otherwise:                    train → evaluate → export)
        └ preannotate-cvat-task (preannotate_task_id set: preannotate)

Why two branches instead of one training task with an optional input: an importer needs a URI,
so "no parent model" cannot flow through one; and kfp.local (2.17) cannot merge artifacts of
two branches with dsl.OneOf, so everything downstream of training sits inside each branch.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docstring_parser
from kfp import dsl, kubernetes
from kfp.dsl import Model

from cvat_kfp.components.common.component_image import cpu_image
from cvat_kfp.components.evaluate_model.component import evaluate_model
from cvat_kfp.components.export_model.component import export_model
from cvat_kfp.components.preannotate.component import preannotate
from cvat_kfp.components.train_maskrcnn.component import train_maskrcnn
from cvat_kfp.components.train_tfod.component import train_tfod
from cvat_kfp.components.training.presets import presets_for
from cvat_kfp.pipelines.dataset_preparation import CVAT_SECRET_KEYS, dataset_preparation

# A preempted or crashed training pod is restarted this many times; with a checkpoint location it
# resumes from its newest checkpoint. KFP takes a fixed number here, not a pipeline parameter.
TRAINING_RETRIES = 3
TRAINING_RETRY_BACKOFF = "60s"
GPU_TOLERATION_KEY = "nvidia.com/gpu"  # the taint GKE, EKS and the NVIDIA operator put on GPU nodes
SHARED_MEMORY_VOLUME = "dshm"


@dataclass(frozen=True)
class Parameter:
    """One pipeline parameter: what the UI shows (name, default, description) and its type."""

    name: str
    type: type
    default: Any
    description: str


@dataclass(frozen=True)
class PipelineKind:
    """What tells the two training pipelines apart."""

    name: str
    trainer: Callable
    default_preset: str
    include_masks: bool
    summary: str


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


def _data_parameters() -> list[Parameter]:
    """dataset-preparation's parameters, with their defaults and UI descriptions."""
    function = dataset_preparation.pipeline_func
    descriptions = {
        param.arg_name: " ".join(param.description.split())
        for param in docstring_parser.parse(inspect.getdoc(function)).params
    }
    parameters = []
    for name, signature_parameter in inspect.signature(function).parameters.items():
        if name == "include_masks":  # the pipeline's kind decides: masks only for Mask R-CNN
            continue
        parameters.append(
            Parameter(
                name, signature_parameter.annotation, signature_parameter.default,
                descriptions[name],
            )
        )  # fmt: skip
    return parameters


def training_parameters(kind: PipelineKind) -> list[Parameter]:
    """Every parameter of the `kind` pipeline, in the order the UI lists them."""
    presets = ", ".join(preset.name for preset in presets_for(kind.trainer.name.replace("-", "_")))
    mask_parameters = []
    if kind.include_masks:
        mask_parameters = [
            Parameter(
                "preannotate_mask_format", str, "polygon",
                'Shape of the uploaded instances: "polygon" or "mask" (CVAT masks).',
            ),
        ]  # fmt: skip
    return [
        *_data_parameters(),
        Parameter(
            "preset", str, kind.default_preset,
            f"The model (see the README's preset table): {presets}.",
        ),
        Parameter(
            "hyperparameters", str, "",
            "YAML, one `key: value` per line, every key optional (the preset gives the rest): "
            "num_steps, batch_size, initial_learning_rate, num_clones, warmup_steps, "
            "image_size, checkpoint_interval, eval_interval, seed, model_garden_overrides, ...",
        ),
        Parameter(
            "pretrained_checkpoint_uri", str, "preset",
            '"preset" starts from the preset\'s published Model Garden checkpoint (downloaded), '
            'a URI (gs://, https://, path) from that checkpoint, "" from random weights. '
            "Ignored when init_model_uri is set.",
        ),
        Parameter(
            "init_model_uri", str, "",
            "URI of an earlier run's trained model (its `model` artifact) to fine-tune; the new "
            "model's lineage points at it. Empty: train from pretrained_checkpoint_uri.",
        ),
        Parameter(
            "checkpoint_root", str, "",
            "Durable checkpoint prefix (gs://bucket/path or a mounted path): each run keeps "
            "its checkpoints in <checkpoint_root>/<run id>, and a preempted training pod resumes "
            "from them. Empty: a restarted pod starts over.",
        ),
        Parameter(
            "checkpoint_uri", str, "",
            "An exact checkpoint location instead of checkpoint_root: give the one of a "
            "killed run to continue it where it stopped.",
        ),
        Parameter(
            "gpu_count", int, 1,
            "GPUs for training (0: train on CPU; with 2 or more, all are used).",
        ),
        Parameter(
            "accelerator_type", str, "nvidia.com/gpu",
            "The GPU resource name (nvidia.com/gpu on most clusters).",
        ),
        Parameter(
            "cpu_limit", str, "6",
            "CPU limit of the training pod, e.g. 6 or 7500m.",
        ),
        Parameter(
            "memory_limit", str, "24G",
            "Memory limit of the training pod (also bounds /dev/shm), e.g. 24G or 30Gi.",
        ),
        Parameter(
            "node_selector", dict, {},
            'Node labels the training pod must run on, as JSON, e.g. '
            '{"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}. Empty: any node.',
        ),
        Parameter(
            "score_threshold", float, 0.5,
            "Lowest score counted as a detection in the confusion matrix and drawn images "
            "of the evaluation report (COCO AP uses every detection).",
        ),
        Parameter(
            "iou_threshold", float, 0.5,
            "Overlap at which a detection matches an object in the confusion matrix.",
        ),
        Parameter(
            "tflite", str, "auto",
            'Also export model.tflite: "auto" (mobile presets), "yes" or "no".',
        ),
        Parameter(
            "export_destination_uri", str, "",
            "Also copy the exported model there (gs://... or a path), complete before visible.",
        ),
        Parameter(
            "preannotate_task_id", str, "",
            "A CVAT task id (on cvat_url) to pre-annotate with the new model. Empty: skipped.",
        ),
        Parameter(
            "preannotate_score_threshold", float, 0.5,
            "Lowest score of an uploaded prediction.",
        ),
        Parameter(
            "preannotate_existing_annotations", str, "append",
            'The task\'s own annotations: "append" to them or "replace" them.',
        ),
        *mask_parameters,
    ]  # fmt: skip


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


def _train_evaluate_export(params: dict, kind: PipelineKind, data, checkpoint_uri, init_model):
    optional_inputs = {"init_model": init_model} if init_model is not None else {}
    train = kind.trainer(
        train_tfrecords=data.outputs["train"],
        val_tfrecords=data.outputs["val"],
        preset=params["preset"],
        hyperparameters=params["hyperparameters"],
        checkpoint_uri=checkpoint_uri,
        pretrained_checkpoint_uri=params["pretrained_checkpoint_uri"],
        **optional_inputs,
    )
    train.set_display_name(kind.trainer.name)  # the same name in both branches
    _request_training_resources(train, params)
    train.set_retry(TRAINING_RETRIES, backoff_duration=TRAINING_RETRY_BACKOFF)
    # Not cached: a re-run asks for a new model, and training writes to the checkpoint location.
    train.set_caching_options(False)

    evaluate = evaluate_model(
        model=train.outputs["model"],
        test_tfrecords=data.outputs["test"],
        score_threshold=params["score_threshold"],
        iou_threshold=params["iou_threshold"],
    )
    evaluate.set_display_name("evaluate-model")
    export = export_model(
        model=train.outputs["model"],
        test_metrics=evaluate.outputs["metrics"],
        tflite=params["tflite"],
        destination_uri=params["export_destination_uri"],
    )
    export.set_display_name("export-model")
    export.set_caching_options(False)  # copies to export_destination_uri: a side effect

    with dsl.If(params["preannotate_task_id"] != "", name="preannotate-cvat-task"):
        mask_options = {}
        if kind.include_masks:
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
        kubernetes.use_secret_as_env(
            upload,
            secret_name=params["cvat_secret_name"],
            secret_key_to_env=CVAT_SECRET_KEYS,
            optional=True,
        )


def _wire(params: dict, kind: PipelineKind) -> None:
    data_names = [p.name for p in _data_parameters()]
    data = dataset_preparation(
        **{name: params[name] for name in data_names}, include_masks=kind.include_masks
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
        _train_evaluate_export(params, kind, data, location.output, init_model=parent.output)
    with dsl.Else(name="train-from-preset"):
        _train_evaluate_export(params, kind, data, location.output, init_model=None)


def _docstring(kind: PipelineKind, parameters: list[Parameter]) -> str:
    lines = [kind.summary, "", "Args:"]
    lines += [f"    {p.name}: {p.description}" for p in parameters]
    return "\n".join(lines) + "\n"


def build_training_pipeline(kind: PipelineKind):
    """The KFP pipeline for `kind`, with one named, typed, documented argument per Parameter."""
    parameters = training_parameters(kind)
    signature = inspect.Signature(
        [
            inspect.Parameter(
                p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default,
                annotation=p.type,
            )
            for p in parameters
        ]
    )  # fmt: skip

    def pipeline_function(*args, **kwargs):
        _wire(dict(signature.bind(*args, **kwargs).arguments), kind)

    pipeline_function.__signature__ = signature
    pipeline_function.__doc__ = _docstring(kind, parameters)
    pipeline_function.__name__ = pipeline_function.__qualname__ = kind.name
    return dsl.pipeline(name=kind.name.replace("_", "-"))(pipeline_function)


TFOD = PipelineKind(
    name="tfod_training",
    trainer=train_tfod,
    default_preset="ssd-mobilenet-v2-coco",
    include_masks=False,
    summary=(
        "Trains, evaluates and exports an object detector (boxes) on CVAT annotations: "
        "export-annotations, split, TFRecords, train-tfod, evaluate, export (and optionally "
        "pre-annotates a CVAT task)."
    ),
)
MASKRCNN = PipelineKind(
    name="maskrcnn_training",
    trainer=train_maskrcnn,
    default_preset="maskrcnn",
    include_masks=True,
    summary=(
        "Trains, evaluates and exports a Mask R-CNN (boxes and masks) on CVAT polygons and "
        "masks: export-annotations, split, TFRecords with masks, train-maskrcnn in Onepanel's "
        "stages, evaluate, export (and optionally pre-annotates a CVAT task)."
    ),
)
