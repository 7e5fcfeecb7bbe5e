"""dataset-preparation: a CVAT export (or CVAT server tasks) → Dataset → splits → TFRecords.

The data half of every training pipeline, runnable on its own (e.g. to inspect the splits).
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Dataset

from cvat_kfp.components.convert_to_tfrecord.component import convert_to_tfrecord
from cvat_kfp.components.export_annotations.component import export_annotations
from cvat_kfp.components.split_dataset.component import split_dataset

SPLITS = ("train", "val", "test")
# Keys of the Kubernetes Secret that holds CVAT credentials, and the variables they become.
CVAT_SECRET_KEYS = {
    "access_token": "CVAT_ACCESS_TOKEN",
    "username": "CVAT_USERNAME",
    "password": "CVAT_PASSWORD",
}


def use_cvat_secret(task: dsl.PipelineTask, secret_name) -> None:
    """The task gets the CVAT credentials of the Secret `secret_name` as environment variables
    (each key optional: a token, or a username and password)."""
    kubernetes.use_secret_as_env(
        task, secret_name=secret_name, secret_key_to_env=CVAT_SECRET_KEYS, optional=True
    )


class PreparedData(NamedTuple):
    dataset: Dataset
    train: Dataset
    val: Dataset
    test: Dataset


@dsl.pipeline(name="dataset-preparation")
def dataset_preparation(
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
    include_masks: bool = True,
    exif_policy: str = "apply",
) -> PreparedData:
    """Reads CVAT annotations, splits them into train/val/test, converts each split to TFRecords.

    Args:
        source: A CVAT export (folder, .zip, .tar.gz): gs://..., https://..., or a local path
            with kfp.local. Leave empty to pull from cvat_url.
        annotation_format: "auto" or a CVAT format name (COCO 1.0, CVAT for images 1.1, ...).
        cvat_url: CVAT server to export task_ids/project_ids/job_ids from (instead of source);
            the training pipelines also pre-annotate on it.
        task_ids: Comma-separated CVAT task ids.
        project_ids: Comma-separated CVAT project ids.
        job_ids: Comma-separated CVAT job ids.
        completed_jobs_only: Export only jobs in the "completed" state.
        group_by_task: Keep each CVAT task whole within one split.
        cvat_secret_name: Kubernetes Secret with CVAT credentials (keys access_token, or
            username and password); never put credentials in parameters.
        skip_bad_images: Skip (and count) missing, corrupt or mis-sized images instead of failing.
        train_fraction: Share of images for training.
        val_fraction: Share of images for validation.
        test_fraction: Share of images for testing.
        seed: Random seed of the split.
        stratify: Balance classes across splits.
        keep_cvat_subsets: Keep the CVAT Train/Validation/Test subsets the export carries.
        shard_size_mb: TFRecord shard size in MiB.
        include_masks: Write instance masks when the dataset has segmentations.
        exif_policy: "apply", "ignore" or "refuse" for images with an EXIF orientation.

    Returns:
        The whole Dataset, and the TFRecords of each split (train, val, test).
    """
    export = export_annotations(
        source=source,
        annotation_format=annotation_format,
        cvat_url=cvat_url,
        task_ids=task_ids,
        project_ids=project_ids,
        job_ids=job_ids,
        completed_jobs_only=completed_jobs_only,
        group_by_task=group_by_task,
        skip_bad_images=skip_bad_images,
    )
    export.set_caching_options(False)  # the source may change behind the same URI
    use_cvat_secret(export, cvat_secret_name)
    split = split_dataset(
        dataset=export.outputs["dataset"],
        train_fraction=train_fraction,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=stratify,
        keep_cvat_subsets=keep_cvat_subsets,
    )
    tfrecords = {}
    for name in SPLITS:
        tfrecords[name] = convert_to_tfrecord(
            dataset=split.outputs[name],
            split_name=name,
            shard_size_mb=shard_size_mb,
            include_masks=include_masks,
            exif_policy=exif_policy,
        )
        tfrecords[name].set_display_name(f"convert-{name}-to-tfrecord")
    return PreparedData(
        export.outputs["dataset"], *(tfrecords[name].outputs["tfrecords"] for name in SPLITS)
    )
