"""convert-to-tfrecord: a Dataset directory in, a TFRecords directory out.

The output directory holds `<split>-NNNNN-of-MMMMM.tfrecord` shards, label_map.pbtxt/.csv/.json,
report.json/.md/.html and manifest.json, written last: it marks a complete output. Per-image
work runs in spawned worker processes (this process loads TensorFlow and must never be forked),
a bounded window of images at a time, consumed in dataset order so the output is deterministic.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import re
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..common.dataset import Dataset, DatasetError
from ..common.label_map import CSV_FILE, JSON_FILE, PBTXT_FILE
from ..common.report import REPORT_MARKDOWN, Report
from ..common.tfrecords import MANIFEST_FILE, write_manifest
from .example import STAGE, ImageResult, ImageTask, build_image_record, has_segmentation
from .images import EXIF_POLICIES
from .writer import Shard, ShardedTFRecordWriter

DEFAULT_SHARD_SIZE_BYTES = 128 * 1024 * 1024
TASKS_IN_FLIGHT_PER_WORKER = 4
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ConvertToTfrecordResult:
    split_name: str
    num_examples: int
    num_instances: int
    num_shards: int
    shard_paths: list[Path]
    report: Report
    has_masks: bool = False
    class_names: list[str] = field(default_factory=list)
    metadata: dict[str, dict] = field(init=False)  # keyed by the face's output: tfrecords

    def __post_init__(self):
        tfrecords = {
            "split": self.split_name,
            "num_examples": self.num_examples,
            "num_instances": self.num_instances,
            "num_shards": self.num_shards,
            "has_masks": self.has_masks,
            "num_classes": len(self.class_names),
            "class_names": list(self.class_names),
            "file_pattern": self.file_pattern,
        }
        object.__setattr__(self, "metadata", {"tfrecords": tfrecords})

    @property
    def file_pattern(self) -> str:
        return f"{self.split_name}-*-of-{self.num_shards:05d}.tfrecord"


def run_convert_to_tfrecord(
    dataset_dir: str | Path,
    tfrecords_dir: str | Path,
    report_path: str | Path | None = None,
    *,
    split_name: str = "train",
    shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
    include_masks: bool = True,
    exif_policy: str = "apply",
    num_workers: int | None = None,
) -> ConvertToTfrecordResult:
    """Write the Dataset at `dataset_dir` as TFRecord shards into `tfrecords_dir` (see
    _convert_dataset); the report's Markdown also goes to `report_path` when given, whether the
    conversion succeeded or refused its input."""
    try:
        return _convert_dataset(
            dataset_dir,
            tfrecords_dir,
            split_name,
            shard_size_bytes=shard_size_bytes,
            include_masks=include_masks,
            exif_policy=exif_policy,
            num_workers=num_workers,
        )
    finally:
        rendered = Path(tfrecords_dir) / REPORT_MARKDOWN
        if report_path is not None and rendered.is_file():
            Path(report_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rendered, report_path)


def _convert_dataset(
    dataset_dir: str | Path,
    output_dir: str | Path,
    split_name: str = "train",
    *,
    shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
    include_masks: bool = True,
    exif_policy: str = "apply",
    num_workers: int | None = None,
) -> ConvertToTfrecordResult:
    """Write the Dataset at `dataset_dir` as TFRecord shards into `output_dir`.

    Raises ReportError, after saving the report into `output_dir`, when anything was refused;
    no finished-looking shard is left then. `num_workers` None (or 0) means one per available
    CPU; 1 runs in this process.
    """
    _check_arguments(split_name, exif_policy, shard_size_bytes, num_workers)
    output_dir = Path(output_dir)
    _refuse_finished_output(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = Report(STAGE)

    dataset = _load_dataset(dataset_dir, output_dir, report)
    label_map = dataset.label_map
    write_masks = include_masks and any(map(has_segmentation, dataset.annotations))
    if include_masks and not write_masks:
        report.note("no-masks", "no annotation has a segmentation: writing boxes only, no masks")
    images, image_paths = dataset.images, [str(dataset.image_path(im)) for im in dataset.images]
    packed_annotations = pack_annotations_by_image(dataset)
    del dataset  # its parsed annotations are what grows with the dataset: keep them packed only

    tasks = (
        ImageTask(image, pickle.loads(packed), path, label_map.names, write_masks, exif_policy)
        for image, packed, path in zip(images, packed_annotations, image_paths)
    )
    workers = min(num_workers or available_cpus(), max(1, len(images)))
    refused = False
    num_examples = num_instances = 0
    with ShardedTFRecordWriter(output_dir, split_name, shard_size_bytes) as writer:
        for result in results_in_order(tasks, workers):
            report.extend(result.entries)
            refused = refused or result.refused
            if refused:
                continue  # keep going: the report lists every refusal at once
            writer.write(result.record)
            num_examples += 1
            num_instances += result.num_instances
        if refused:
            report.save(output_dir)
            report.raise_if_refused("input")
        shards = writer.finish()

    if num_examples == 0:
        report.note("empty-split", f"the dataset has no images: {split_name} has no examples")
    label_map.save(output_dir)
    report.save(output_dir)
    result = ConvertToTfrecordResult(
        split_name,
        num_examples,
        num_instances,
        len(shards),
        [shard.path for shard in shards],
        report,
        write_masks,
        list(label_map.names),
    )
    _write_manifest(output_dir, result, shards)
    return result


def _check_arguments(split_name, exif_policy, shard_size_bytes, num_workers) -> None:
    if not SPLIT_NAME.fullmatch(split_name):
        raise ValueError(f"split_name {split_name!r} must be a plain file-name prefix like 'train'")
    if exif_policy not in EXIF_POLICIES:
        raise ValueError(f"exif_policy must be one of {EXIF_POLICIES}, got {exif_policy!r}")
    if shard_size_bytes <= 0:
        raise ValueError(f"shard_size_bytes must be positive, got {shard_size_bytes}")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 1 (or None/0: one per CPU), got {num_workers}")


def _refuse_finished_output(output_dir: Path) -> None:
    if not output_dir.is_dir():
        return
    existing = sorted(p.name for p in output_dir.glob("*.tfrecord"))
    if (output_dir / MANIFEST_FILE).exists():
        existing.append(MANIFEST_FILE)
    if existing:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise FileExistsError(
            f"{output_dir} already holds TFRecords output ({shown}); nothing was overwritten. "
            "Write into an empty directory, or remove these files first."
        )


def _load_dataset(dataset_dir, output_dir: Path, report: Report) -> Dataset:
    """The validated Dataset; otherwise its problems are refused in the saved report."""
    try:
        return Dataset.load(dataset_dir)
    except DatasetError as e:
        for problem in e.problems:
            report.refused("invalid-dataset", problem, e.source)
        report.save(output_dir)
        report.raise_if_refused("dataset")
        raise


def _write_manifest(output_dir: Path, result: ConvertToTfrecordResult, shards: list[Shard]):
    manifest = {
        **result.metadata["tfrecords"],
        "shards": [
            {"file": s.path.name, "num_examples": s.num_examples, "num_bytes": s.num_bytes}
            for s in shards
        ],
        "label_map": {"pbtxt": PBTXT_FILE, "csv": CSV_FILE, "json": JSON_FILE},
        "report": result.report.summary(),
    }
    write_manifest(output_dir, manifest)


def pack_annotations_by_image(dataset: Dataset) -> list[bytes]:
    """Each image's annotations, pickled, in image order.

    Parsed JSON takes ~3x the memory of its pickle (a float object per polygon coordinate), and
    the annotations are the only memory that grows with the image count.
    """
    by_image = dataset.annotations_by_image()
    protocol = pickle.HIGHEST_PROTOCOL
    return [pickle.dumps(by_image[image["id"]], protocol) for image in dataset.images]


def results_in_order(tasks: Iterable[ImageTask], num_workers: int) -> Iterator[ImageResult]:
    """build_image_record over `tasks`, in their order, with at most a few tasks in flight."""
    if num_workers <= 1:
        yield from map(build_image_record, tasks)
        return
    window = TASKS_IN_FLIGHT_PER_WORKER * num_workers
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(num_workers, mp_context=spawn) as pool:
        in_flight = deque()
        try:
            for task in tasks:
                in_flight.append(pool.submit(build_image_record, task))
                if len(in_flight) >= window:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (a pod's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)
