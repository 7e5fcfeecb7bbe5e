"""tfod-training: CVAT boxes → TFRecords → train-tfod → evaluate → export (→ pre-annotate,
→ select frames).

The graph is shared with maskrcnn-training and written once, in training.py; this module holds
the pipeline's signature and docstring, which are what the Kubeflow UI shows.
"""

from kfp import dsl

from cvat_kfp.components.train_tfod.component import train_tfod
from cvat_kfp.pipelines.training import wire_training_pipeline


@dsl.pipeline(name="tfod-training")
def tfod_training(
    source: str = "",
    annotation_format: str = "auto",
    cvat_url: str = "",
    task_ids: str = "",
    project_ids: str = "",
    job_ids: str = "",
    completed_jobs_only: bool = False,
    group_by_task: bool = False,
    cvat_secret_name: str = "cvat-credentials",
    skip_bad_images: bool = False,
    train_fraction: float = 0.8,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
    keep_cvat_subsets: bool = False,
    shard_size_mb: int = 128,
    exif_policy: str = "apply",
    preset: str = "ssd-mobilenet-v2-coco",
    hyperparameters: str = "",
    pretrained_checkpoint_uri: str = "preset",
    init_model_uri: str = "",
    checkpoint_root: str = "",
    checkpoint_uri: str = "",
    gpu_count: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    cpu_limit: str = "6",
    memory_limit: str = "24G",
    node_selector: dict = {},  # noqa: B006 (KFP reads the default; the function never mutates it)
    score_threshold: float = -1.0,
    iou_threshold: float = 0.5,
    tflite: str = "auto",
    export_destination_uri: str = "",
    preannotate_task_id: str = "",
    preannotate_score_threshold: float = -1.0,
    preannotate_existing_annotations: str = "append",
    select_task_id: str = "",
    select_top_n: int = 50,
    select_create_task: bool = False,
):
    """Trains, evaluates and exports an object detector (boxes) on CVAT annotations: export-annotations, split, TFRecords, train-tfod, evaluate, export (and optionally pre-annotates a CVAT task).

    Args:
        source: A CVAT export (folder, .zip, .tar.gz): gs://..., https://..., or a local path with kfp.local. Leave empty to pull from cvat_url.
        annotation_format: "auto" or a CVAT format name (COCO 1.0, CVAT for images 1.1, ...).
        cvat_url: CVAT server to export task_ids/project_ids/job_ids from (instead of source); the training pipelines also pre-annotate on it.
        task_ids: Comma-separated CVAT task ids.
        project_ids: Comma-separated CVAT project ids.
        job_ids: Comma-separated CVAT job ids.
        completed_jobs_only: Export only jobs in the "completed" state.
        group_by_task: Keep each CVAT task whole within one split.
        cvat_secret_name: Kubernetes Secret with CVAT credentials (keys access_token, or username and password); never put credentials in parameters.
        skip_bad_images: Skip (and count) missing, corrupt or mis-sized images instead of failing.
        train_fraction: Share of images for training.
        val_fraction: Share of images for validation.
        test_fraction: Share of images for testing.
        seed: Random seed of the split.
        stratify: Balance classes across splits.
        keep_cvat_subsets: Keep the CVAT Train/Validation/Test subsets the export carries.
        shard_size_mb: TFRecord shard size in MiB.
        exif_policy: "apply", "ignore" or "refuse" for images with an EXIF orientation.
        preset: The model (see the README's preset table): ssd-mobilenet-v2-coco, retinanet-mobilenetv2-light, frcnn-res50-coco, frcnn-res101-coco, frcnn-res101-lowp, frcnn-inc-resv2-atr-coco, frcnn-nas-coco.
        hyperparameters: YAML, one `key: value` per line, every key optional (the preset gives the rest): num_steps, batch_size, initial_learning_rate, num_clones, warmup_steps, image_size, checkpoint_interval, eval_interval, seed, model_garden_overrides, ...
        pretrained_checkpoint_uri: "preset" starts from the preset's published Model Garden checkpoint (downloaded), a URI (gs://, https://, path) from that checkpoint, "" from random weights. Ignored when init_model_uri is set.
        init_model_uri: URI of an earlier run's trained model (its `model` artifact) to fine-tune; the new model's lineage points at it. Empty: train from pretrained_checkpoint_uri.
        checkpoint_root: Durable checkpoint prefix (gs://bucket/path or a mounted path): each run keeps its checkpoints in <checkpoint_root>/<run id>, and a preempted training pod resumes from them. Empty: a restarted pod starts over.
        checkpoint_uri: An exact checkpoint location instead of checkpoint_root: give the one of a killed run to continue it where it stopped.
        gpu_count: GPUs for training (0: train on CPU; with 2 or more, all are used).
        accelerator_type: The GPU resource name (nvidia.com/gpu on most clusters).
        cpu_limit: CPU limit of the training pod, e.g. 6 or 7500m.
        memory_limit: Memory limit of the training pod (also bounds /dev/shm), e.g. 24G or 30Gi.
        node_selector: Node labels the training pod must run on, as JSON, e.g. {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}. Empty: any node.
        score_threshold: Lowest score counted as a detection in the confusion matrix and drawn images of the evaluation report (COCO AP uses every detection). -1: each class's threshold calibrated on the val split (highest F1; 0.5 for a class without val objects).
        iou_threshold: Overlap at which a detection matches an object in the confusion matrix.
        tflite: Also export model.tflite: "auto" (mobile presets), "yes" or "no".
        export_destination_uri: Also copy the exported model there (gs://... or a path), complete before visible.
        preannotate_task_id: A CVAT task id (on cvat_url) to pre-annotate with the new model. Empty: skipped.
        preannotate_score_threshold: Lowest score of an uploaded prediction. -1: each class's threshold calibrated on the val split, as the exported model carries them.
        preannotate_existing_annotations: The task's own annotations: "append" to them or "replace" them.
        select_task_id: A CVAT task id (on cvat_url) whose unannotated frames the new model ranks for annotation (select-frames). Empty: skipped. Not the preannotate task: its frames would count as annotated.
        select_top_n: How many frames select-frames picks.
        select_create_task: Put the selected frames in a new CVAT task (found again, not duplicated, when a run is retried).
    """  # noqa: E501 (one line per description: the Kubeflow UI shows them as written)
    wire_training_pipeline(locals(), train_tfod, include_masks=False)
