"""dataset-preparation: a Dataset artifact → stratified splits → TFRecords for each split.

The data half of every training pipeline, runnable on its own (e.g. to inspect the splits).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset

from cvat_kfp.components.convert_to_tfrecord.component import convert_to_tfrecord
from cvat_kfp.components.split_dataset.component import split_dataset

SPLITS = ("train", "val", "test")


class PreparedData(NamedTuple):
    train: Dataset
    val: Dataset
    test: Dataset


@dsl.pipeline(name="dataset-preparation")
def dataset_preparation(
    dataset_uri: str,
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
    """Splits a Dataset artifact into train/val/test and converts each split to TFRecords.

    Args:
        dataset_uri: URI of a Dataset artifact directory (annotations.json + images/), e.g. the
            output of an earlier export-annotations run (gs://..., or a local path with kfp.local).
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
        The TFRecords of each split (train, val, test).
    """
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=Dataset, reimport=False)
    dataset.set_display_name("import-dataset")
    split = split_dataset(
        dataset=dataset.output,
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
    return PreparedData(*(tfrecords[name].outputs["tfrecords"] for name in SPLITS))
