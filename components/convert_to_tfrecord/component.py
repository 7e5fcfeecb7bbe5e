"""KFP face of convert-to-tfrecord; the work is in convert.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from cvat_kfp.components.common.component_image import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def convert_to_tfrecord(
    dataset: Input[Dataset],
    tfrecords: Output[Dataset],
    report: Output[Markdown],
    split_name: str = "train",
    shard_size_mb: int = 128,
    include_masks: bool = True,
    exif_policy: str = "apply",
    num_workers: int = 0,
):
    """Converts a Dataset into TFRecord shards in the TF Object Detection API form.

    Image bytes pass through undecoded (formats TensorFlow cannot read are converted once);
    boxes are normalized and clipped to the image; masks are one 0/1 PNG per instance. The output
    directory also holds label_map.pbtxt/.csv/.json, manifest.json and report.json.

    Args:
        dataset: The Dataset to convert (one split of it, usually).
        tfrecords: The TFRecords directory: <split>-NNNNN-of-MMMMM.tfrecord shards and label maps.
        report: What was clipped, converted, skipped or refused, and where.
        split_name: Prefix of the shard file names (train, val, test).
        shard_size_mb: A shard is closed once it reaches this many megabytes (MiB).
        include_masks: Write instance masks when the dataset has segmentations.
        exif_policy: Images with an EXIF orientation: "apply" (annotations were drawn on the
            rotated image, as CVAT shows it), "ignore" (drawn on the stored pixels) or "refuse".
        num_workers: Worker processes; 0 = one per CPU available to the pod.
    """
    from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord

    result = run_convert_to_tfrecord(
        dataset.path,
        tfrecords.path,
        report.path,
        split_name=split_name,
        shard_size_bytes=shard_size_mb * 1024 * 1024,
        include_masks=include_masks,
        exif_policy=exif_policy,
        num_workers=num_workers,
    )
    tfrecords.metadata.update(result.metadata["tfrecords"])
