"""Pre-annotate a CVAT task: run a model on its frames and upload the predictions via cvat-sdk.

Credentials come only from the environment (see common.cvat_client), and so do its client,
retries and messages. Everything is predicted before anything is changed on the server: a model or
frame failure leaves the task as it was. predictions.json (COCO) is always written; the upload
follows unless dry_run.

The steps, each a function handing a small frozen dataclass to the next: the task's labels matched
to the model's (`match_labels`), the frames to predict (`list_frames`), each frame's detections
turned into shapes (`predict`, through shapes.detections_to_shapes), predictions.json
(`write_predictions`), the upload (`upload`, which records the id CVAT gave each shape it created
in uploaded_shapes.json, for measure-corrections), then the metadata and the report.

Frames: an image task's frames come in CVAT's chunks (a zip of chunk_size frame files, one
request each; `_frame_images`), a video task's one frame per request (its chunks are video
files); either way a background thread fetches and decodes ahead of the model, a few frames at
most (`PREFETCH_FRAMES`), so that the network and decoding overlap inference.

Shapes: boxes become rectangles; with a mask model, masks become polygons (one per connected
part; the parts of one instance share a CVAT group) or CVAT masks. A task label of a fixed type
(rectangle, polygon, mask) gets that type; "any" gets the default. Append: PATCH
.../annotations/?action=create per batch of frames; replace: DELETE .../annotations/ first.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import queue
import re
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from cvat_sdk import models
from PIL import Image, ImageOps

from ..common.cvat_client import (
    CvatCaller,
    CvatClient,
    CvatServerError,
    check_cvat_url,
    connect,
    credentials_from_env,
)
from ..common.redaction import redact_url
from ..common.report import markdown_cell, write_output
from ..inference.thresholds import MODEL_THRESHOLDS, ScoreThresholds, resolve_score_thresholds
from .shapes import NO_SHAPE_TYPE, Shape, detections_to_shapes

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.json"
UPLOADED_SHAPES_FILE = "uploaded_shapes.json"  # what was uploaded, with CVAT's ids
MASK_FORMATS = ("polygon", "mask")
UNKNOWN_LABELS = ("error", "skip")
EXISTING_ANNOTATIONS = ("append", "replace")
SHAPE_LABEL_TYPES = ("any", "rectangle", "polygon", "mask")
SOURCE = "auto"
PREFETCH_FRAMES = 16  # decoded frames waiting for the model, besides the chunk being read


@dataclass(frozen=True)
class PreannotateResult:
    metadata: dict[str, dict]  # output name ("predictions") -> that artifact's metadata


@dataclass(frozen=True)
class Options:
    task_id: int
    score_threshold: float  # MODEL_THRESHOLDS (-1): the model's calibrated per-class thresholds
    mask_format: str
    unknown_labels: str
    existing_annotations: str
    batch_size: int
    dry_run: bool
    thresholds: ScoreThresholds | None = None  # each label's, once the model is known


def check_options(
    cvat_url: str,
    task_id: str | int,
    score_threshold: float = MODEL_THRESHOLDS,
    mask_format: str = "polygon",
    unknown_labels: str = "error",
    existing_annotations: str = "append",
    batch_size: int = 16,
    dry_run: bool = False,
) -> Options:
    """The options checked, task_id parsed; ValueError saying what is wrong otherwise."""
    if not str(cvat_url or "").strip():
        raise ValueError("cvat_url is empty: give the CVAT server, e.g. https://cvat.example.com")
    check_cvat_url(cvat_url)
    text = str(task_id).strip()
    if not re.fullmatch(r"\d+", text) or int(text) <= 0:
        raise ValueError(f"task_id must be a positive integer (a CVAT task id), not {task_id!r}")
    choices = {
        "mask_format": (mask_format, MASK_FORMATS),
        "unknown_labels": (unknown_labels, UNKNOWN_LABELS),
        "existing_annotations": (existing_annotations, EXISTING_ANNOTATIONS),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(
                f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
            )
    if float(score_threshold) != MODEL_THRESHOLDS and not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(
            f"score_threshold must be in [0, 1], or {MODEL_THRESHOLDS:g} for the model's "
            f"calibrated per-class thresholds, not {score_threshold}"
        )
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size}")
    return Options(
        int(text),
        float(score_threshold),
        mask_format,
        unknown_labels,
        existing_annotations,
        int(batch_size),
        bool(dry_run),
    )


def run_preannotate(
    exported_model_dir: str,
    predictions_dir: str,
    report_path: str,
    cvat_url: str,
    task_id: str,
    score_threshold: float = MODEL_THRESHOLDS,
    mask_format: str = "polygon",
    unknown_labels: str = "error",
    existing_annotations: str = "append",
    batch_size: int = 16,
    dry_run: bool = False,
    *,
    predictor=None,
    retries: int = 5,
    retry_delay: float = 2.0,
) -> PreannotateResult:
    """Predict on every frame of the task, write predictions.json, upload unless dry_run, then
    write the report (Markdown) to report_path.

    `predictor` (an inference Predictor) replaces loading the model from exported_model_dir.
    score_threshold -1 (the default): each label's threshold as the exported model carries it
    (calibrated on the val split by evaluate-model), 0.5 where it carries none.
    Raises ValueError for bad options and label mismatches, CvatServerError for the server's
    refusals.
    """
    options = check_options(
        cvat_url,
        task_id,
        score_threshold,
        mask_format,
        unknown_labels,
        existing_annotations,
        batch_size,
        dry_run,
    )
    credentials, credentials_source = credentials_from_env()  # before the model loads
    if predictor is None:
        from ..inference.predictor import load_predictor

        predictor = load_predictor(exported_model_dir)
    options = replace(
        options,
        thresholds=resolve_score_thresholds(
            exported_model_dir, predictor.label_map.names, options.score_threshold
        ),
    )
    logger.info(f"score threshold: {options.thresholds.describe()}")
    call = CvatCaller(cvat_url, credentials_source, retries, retry_delay, logger.info)
    with CvatClient(cvat_url, call, poll_interval=2.0, timeout=3600) as client:
        connect(client, call, credentials)
        resource = f"task {options.task_id}"
        task = call(
            f"read {resource}", partial(client.tasks.retrieve, options.task_id), resource=resource
        )
        task_labels = call(f"read the labels of {resource}", task.get_labels, resource=resource)
        labels = match_labels(task_labels, predictor, options, resource)
        meta = call(f"read the frames of {resource}", task.get_meta, resource=resource)
        task_frames = list_frames(task, meta, resource)
        mode = "dry run, nothing uploaded" if options.dry_run else options.existing_annotations
        logger.info(
            f"{resource} ({task.name!r}): {len(task_frames.frames)} frame(s) to predict"
            + (f", {task_frames.deleted} deleted frame(s) left out" if task_frames.deleted else "")
            + f", {_fetching(task_frames)}; {mode}"
        )
        predictions = predict(call, task_frames, predictor, labels, options)
        write_predictions(
            Path(predictions_dir), task_frames, predictions, predictor.label_map, options
        )
        uploaded = None
        if not options.dry_run:
            uploaded = upload(call, task_frames, predictions, labels, options)
            write_uploaded_shapes(
                Path(predictions_dir), redact_url(cvat_url), task_frames, uploaded, options
            )
    outcome = _Outcome(
        redact_url(cvat_url),
        options,
        task_frames,
        predictor.label_map,
        predictor.has_masks,
        labels,
        predictions,
        uploaded,
    )
    write_output(report_path, _report_markdown(outcome))
    return PreannotateResult({"predictions": _metadata(outcome)})


# --- the task's labels and frames -------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    label_id: int
    shape: str  # "rectangle", "polygon" or "mask"
    label_type: str


@dataclass(frozen=True)
class _LabelMatch:
    targets: Mapping[str, _Target]  # model label -> the task label its predictions go to
    unmatched: Mapping[str, str]  # model label -> why it cannot be used

    @property
    def shape_types(self) -> dict[str, str]:
        return {name: target.shape for name, target in self.targets.items()}


def match_labels(task_labels, predictor, options: Options, resource: str) -> _LabelMatch:
    """Model labels → task labels by exact (case-sensitive) name, as CVAT tells labels apart.

    ValueError listing the model labels the task cannot take, unless unknown_labels="skip" (and
    at least one can be used).
    """
    by_name = {
        label.name: label for label in task_labels if not getattr(label, "has_parent", False)
    }
    default = options.mask_format if predictor.has_masks else "rectangle"
    targets, unmatched = {}, {}
    for name in predictor.label_map.names:
        label = by_name.get(name)
        if label is None:
            near = [n for n in by_name if n.casefold() == name.casefold()]
            hint = f" (the task has {near[0]!r}; names are case-sensitive)" if near else ""
            unmatched[name] = "not in the task" + hint
            continue
        label_type = str(getattr(label, "type", None) or "any")
        if label_type not in SHAPE_LABEL_TYPES:
            unmatched[name] = (
                f"the task's label is a {label_type} label, which takes no rectangles, "
                "polygons or masks"
            )
            continue
        shape = default if label_type == "any" else label_type
        targets[name] = _Target(label.id, shape, label_type)
    if unmatched:
        task_label_list = ", ".join(
            f"{label.name!r} ({getattr(label, 'type', None) or 'any'})"
            for label in by_name.values()
        )
        listed = "; ".join(f"{name!r}: {why}" for name, why in unmatched.items())
        if not targets:
            raise ValueError(
                f"none of the model's labels can be used in {resource}: {listed}. The task's "
                f"labels: {task_label_list or 'none'}. Is it the right task and model?"
            )
        if options.unknown_labels == "error":
            raise ValueError(
                f"{len(unmatched)} model label(s) cannot be used in {resource}: {listed}. The "
                f"task's labels: {task_label_list}. Add them to the task in CVAT, or set "
                'unknown_labels="skip" to leave their predictions out.'
            )
        logger.info(f"{resource}: left out (unknown_labels=skip): {listed}")
    return _LabelMatch(targets, unmatched)


@dataclass(frozen=True)
class _Frame:
    index: int
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class _TaskFrames:
    task: Any  # the cvat-sdk Task
    resource: str  # "task 7", as messages name it
    frames: tuple[_Frame, ...]  # to predict, in order
    deleted: int  # frames left out because they are deleted in the task
    chunk_size: int = 0  # frames per chunk when they are fetched in chunks; 0: one per request
    per_frame_reason: str = ""  # why they are fetched one per request

    @property
    def chunks(self) -> int:
        """The requests fetching the frames: chunks, or frames one by one."""
        if not self.chunk_size:
            return len(self.frames)
        return len({frame.index // self.chunk_size for frame in self.frames})


def list_frames(task, meta, resource: str) -> _TaskFrames:
    """The task's frames that are not deleted, named and sized as its data meta says, and how
    they are fetched."""
    size = task.size or 0
    infos = list(meta.frames or [])
    deleted_indices = set(meta.deleted_frames or [])
    video = getattr(task, "media_type", "image") == "video"
    if not infos or (len(infos) != size and len(infos) != 1):
        raise CvatServerError(
            f"{resource}: the data meta describes {len(infos)} frame(s) of {size}"
        )
    frames, deleted = [], 0
    for index in range(size):
        if index in deleted_indices:
            deleted += 1
            continue
        info = infos[index] if len(infos) == size else infos[0]
        name = f"frame_{index:06d}" if video or len(infos) != size else info.name
        frames.append(_Frame(index, name, int(info.width), int(info.height)))
    if not frames:
        raise ValueError(f"{resource} has no frames to pre-annotate (all deleted or none)")
    chunk_size, reason = _chunking(task, meta)
    return _TaskFrames(task, resource, tuple(frames), deleted, chunk_size, reason)


def _fetching(task: _TaskFrames) -> str:
    """How the frames are fetched, in words."""
    if task.chunk_size:
        return f"fetched in {task.chunks} chunk(s) of up to {task.chunk_size} frames"
    return f"fetched one per request ({task.per_frame_reason})"


def _chunking(task, meta) -> tuple[int, str]:
    """(frames per chunk, "") when the original-quality chunks are zips of the frame files, as
    CVAT serves an image task's; else (0, why frames are fetched one by one)."""
    chunk_type = getattr(task, "data_original_chunk_type", None)
    if chunk_type != "imageset":
        return 0, f"its original chunks are {chunk_type or 'of no known type'}, not image sets"
    if str(getattr(task, "dimension", None) or "2d") != "2d":
        return 0, f"a {task.dimension} task"
    chunk_size = int(getattr(meta, "chunk_size", None) or task.data_chunk_size or 0)
    if chunk_size < 1:
        return 0, "the data meta gives no chunk size"
    return chunk_size, ""


# --- predicting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prediction:
    frame: int  # the CVAT frame index
    shape: Shape


@dataclass(frozen=True)
class _Predictions:
    kept: tuple[_Prediction, ...]  # frame by frame
    skipped: Mapping[str, int]  # reason -> detections at or above the threshold left out
    below_threshold: int
    resized_frames: int  # frames whose image size differs from the size CVAT gives

    @property
    def shape_count(self) -> int:
        return sum(len(p.shape.parts) for p in self.kept)


def predict(
    call: CvatCaller, task: _TaskFrames, predictor, labels: _LabelMatch, options: Options
) -> _Predictions:
    """Every frame downloaded, predicted and its detections turned into shapes."""
    shape_types = labels.shape_types
    kept, skipped, below_threshold, resized_frames = [], Counter(), 0, 0
    total = len(task.frames)
    # closed on any way out, so that a model failure stops the fetching thread at once
    with contextlib.closing(_prefetched(_frame_images(call, task))) as images:
        for n, (frame, image) in enumerate(images, start=1):
            if image.shape[:2] != (frame.height, frame.width):
                resized_frames += 1
            found = detections_to_shapes(
                predictor.predict(image),
                frame.width,
                frame.height,
                shape_types,
                options.thresholds.by_label,
            )
            below_threshold += found.below_threshold
            for left_out in found.skipped:
                reason = left_out.reason
                if reason == NO_SHAPE_TYPE:
                    why = labels.unmatched.get(left_out.label, "unknown")
                    reason = f"label {left_out.label!r}: {why}"
                skipped[reason] += 1
            kept += [_Prediction(frame.index, shape) for shape in found.shapes]
            if n % options.batch_size == 0 or n == total:
                logger.info(
                    f"{task.resource}: predicted {n} of {total} frame(s), "
                    f"{len(kept)} prediction(s) kept"
                )
    return _Predictions(tuple(kept), skipped, below_threshold, resized_frames)


def _frame_images(call: CvatCaller, task: _TaskFrames) -> Iterator[tuple[_Frame, np.ndarray]]:
    """Each frame to predict with its image, in order: chunk by chunk, else frame by frame."""
    if not task.chunk_size:
        for frame in task.frames:
            yield frame, _frame_image(call, task, frame)
        return
    for number, frames in itertools.groupby(task.frames, lambda f: f.index // task.chunk_size):
        members = _chunk_members(call, task, number)
        for frame in frames:
            yield frame, _decode_frame(members[frame.index % task.chunk_size], task, frame)


def _chunk_members(call: CvatCaller, task: _TaskFrames, number: int) -> list[bytes]:
    """The frame files of chunk `number` at original quality, in frame order.

    CVAT's chunk of an image task is a zip of the chunk's frames, `000000.jpg`, `000001.png`,
    ... in order (cvat-sdk's TaskDataset reads its members by position too), holding every frame
    of the chunk, deleted ones included.
    """
    first = number * task.chunk_size
    last = min(first + task.chunk_size, task.task.size) - 1
    what = f"download chunk {number} (frames {first}-{last}) of {task.resource}"

    def download() -> bytes:
        buffer = io.BytesIO()  # a fresh one for each attempt
        task.task.download_chunk(number, buffer, quality="original")
        return buffer.getvalue()

    data = call(what, download, resource=task.resource)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            files = [info for info in archive.infolist() if not info.is_dir()]
            if len(files) != last - first + 1:
                raise ValueError(
                    f"it holds {len(files)} file(s) for its {last - first + 1} frame(s)"
                )
            return [archive.read(info) for info in files]
    except (zipfile.BadZipFile, ValueError) as error:
        raise CvatServerError(
            f"chunk {number} (frames {first}-{last}) of {task.resource} is not the zip of "
            f"frames CVAT serves for an image task ({len(data):,} bytes): {error}"
        ) from None


def _prefetched(items: Iterator, depth: int = PREFETCH_FRAMES) -> Iterator:
    """`items`, produced by a background thread up to `depth` ahead of the consumer; its
    exceptions are raised here. Stopping early (or an error here) stops the thread."""
    ahead: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as error:  # handed to the consumer, which raises it
            put((None, error))

    thread = threading.Thread(target=produce, name="preannotate-frames", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ahead.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)  # at most one request or decode; the thread is a daemon


def _frame_image(call: CvatCaller, task: _TaskFrames, frame: _Frame) -> np.ndarray:
    what = f"download frame {frame.index} of {task.resource}"
    get = partial(task.task.get_frame, frame.index, quality="original")
    return _decode_frame(call(what, get, resource=task.resource).read(), task, frame)


def _decode_frame(data: bytes, task: _TaskFrames, frame: _Frame) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            # CVAT shows (and annotates) images turned by their EXIF orientation
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception as error:
        raise CvatServerError(
            f"frame {frame.index} ({frame.name!r}) of {task.resource} is not a readable "
            f"image ({len(data):,} bytes): {error}"
        ) from None


# --- predictions.json ---------------------------------------------------------------------------


def write_predictions(
    output_dir: Path, task: _TaskFrames, predictions: _Predictions, label_map, options: Options
) -> Path:
    """predictions.json: the kept predictions as COCO results, with the frames as images."""
    annotations = []
    for number, p in enumerate(predictions.kept, start=1):
        xtl, ytl, xbr, ybr = p.shape.box
        annotation = {
            "id": number,
            "image_id": p.frame + 1,
            "category_id": label_map.id_of(p.shape.label),
            "bbox": [xtl, ytl, round(xbr - xtl, 2), round(ybr - ytl, 2)],
            "area": round(p.shape.area, 2),
            "iscrowd": 0,
            "score": round(p.shape.score, 4),
            "attributes": {"cvat_shape": p.shape.type},
        }
        if p.shape.segmentation is not None:
            annotation["segmentation"] = p.shape.segmentation
        annotations.append(annotation)
    coco = {
        "info": {
            "description": f"predictions for CVAT {task.resource} ({task.task.name})",
            "score_threshold": options.score_threshold,
            "score_thresholds": options.thresholds.by_label,
        },
        "images": [
            {
                "id": f.index + 1,
                "file_name": f.name,
                "width": f.width,
                "height": f.height,
                "frame": f.index,
            }
            for f in task.frames
        ],
        "categories": [{"id": i, "name": name} for i, name in label_map.items()],
        "annotations": annotations,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / PREDICTIONS_FILE
    path.write_text(json.dumps(coco), encoding="utf-8")
    logger.info(f"{task.resource}: {len(annotations)} prediction(s) written to {path}")
    return path


# --- uploading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    span: str  # "frames 0-15"
    shapes: tuple[models.LabeledShapeRequest, ...]
    predictions: tuple[int, ...]  # for each shape, its prediction's index in predictions.kept


def shape_batches(
    task: _TaskFrames,
    predictions: _Predictions,
    labels: _LabelMatch,
    batch_size: int,
    first_group: int,
) -> list[_Batch]:
    """The upload requests' shapes, batch_size frames at a time; the parts of one prediction
    share a group, numbered from first_group."""
    by_frame: dict[int, list[tuple[int, Shape]]] = {}
    for index, p in enumerate(predictions.kept):
        by_frame.setdefault(p.frame, []).append((index, p.shape))
    next_group = first_group
    batches = []
    for start in range(0, len(task.frames), batch_size):
        frames = task.frames[start : start + batch_size]
        requests, origins = [], []
        for frame in frames:
            for index, shape in by_frame.get(frame.index, []):
                group = None
                if len(shape.parts) > 1:
                    group, next_group = next_group, next_group + 1
                label_id = labels.targets[shape.label].label_id
                requests += [
                    _shape_request(shape, frame.index, label_id, points, group)
                    for points in shape.parts
                ]
                origins += [index] * len(shape.parts)
        span = f"frames {frames[0].index}-{frames[-1].index}"
        batches.append(_Batch(span, tuple(requests), tuple(origins)))
    return batches


def _shape_request(shape: Shape, frame: int, label_id: int, points, group):
    extra = {"group": group} if group else {}
    return models.LabeledShapeRequest(
        type=models.ShapeType(shape.type),
        frame=frame,
        label_id=label_id,
        points=[float(v) for v in points],
        occluded=False,
        z_order=0,
        source=SOURCE,
        attributes=[],
        score=shape.score,
        **extra,
    )


@dataclass(frozen=True)
class _Uploaded:
    requests: int  # requests that changed the task
    shapes: tuple[dict, ...]  # each shape created: CVAT's id, its prediction, frame, label, points
    without_id: int  # shapes the server's answers did not give back (recorded with id None)


def upload(
    call: CvatCaller,
    task: _TaskFrames,
    predictions: _Predictions,
    labels: _LabelMatch,
    options: Options,
) -> _Uploaded:
    """The shapes uploaded batch by batch (after removing the task's annotations with
    existing_annotations="replace"), each with the id CVAT gave it."""
    resource, requests = task.resource, 0
    if options.existing_annotations == "replace":
        call(
            f"remove the annotations of {resource}", task.task.remove_annotations, resource=resource
        )
        requests += 1
        logger.info(f"{resource}: existing annotations removed")
        first_group = 1
    else:
        first_group = _next_group(call, task, predictions)
    batches = shape_batches(task, predictions, labels, options.batch_size, first_group)
    uploaded, created, without_id = 0, [], 0
    names = {f.index: f.name for f in task.frames}
    for number, batch in enumerate(batches, start=1):
        where = f"batch {number} of {len(batches)} ({batch.span})"
        if not batch.shapes:
            logger.info(f"{resource}: {where}: no shapes")
            continue
        request = models.PatchedLabeledDataRequest(shapes=list(batch.shapes))
        send = partial(
            task.task.api.partial_update_annotations,
            "create",
            task.task.id,
            patched_labeled_data_request=request,
        )
        answer, _ = call(
            f"upload the shapes of {batch.span} to {resource}", send, resource=resource
        )
        requests += 1
        uploaded += len(batch.shapes)
        ids = created_ids(batch.shapes, getattr(answer, "shapes", None) or [])
        without_id += ids.count(None)
        for request, index, shape_id in zip(batch.shapes, batch.predictions, ids):
            prediction = predictions.kept[index]
            created.append(
                {
                    "id": shape_id,
                    "prediction": index + 1,  # its annotation id in predictions.json
                    "frame": request.frame,
                    "frame_name": names[request.frame],
                    "label": prediction.shape.label,
                    "label_id": request.label_id,
                    "type": prediction.shape.type,
                    "points": list(request.points),
                    "group": getattr(request, "group", None),
                    "score": round(prediction.shape.score, 4),
                }
            )
        logger.info(
            f"{resource}: {where}: {len(batch.shapes)} shape(s) uploaded, {uploaded} in all"
        )
    if without_id:
        logger.warning(
            f"{resource}: the server's answers did not give back {without_id} of the "
            f"{uploaded} shape(s) created: they are recorded without an id"
        )
    return _Uploaded(requests, tuple(created), without_id)


def _shape_key(frame, label_id, shape_type, points) -> tuple:
    return (int(frame), int(label_id), str(shape_type), tuple(round(float(v), 2) for v in points))


def created_ids(requests, answered) -> list[int | None]:
    """The id CVAT gave each requested shape, found in its answer to PATCH ?action=create.

    CVAT answers with the shapes it created, ids set: it splits the request by job, saves each
    part and merges the parts back (cvat/apps/dataset_manager/task.py, TaskAnnotation._patch_data),
    so the order can differ from the request's; a shape is found by frame, label, type and
    points. None for a shape the answer does not hold."""
    by_key: dict[tuple, list[int]] = {}
    for shape in answered:
        shape_type = getattr(shape.type, "value", shape.type)
        key = _shape_key(shape.frame, shape.label_id, shape_type, shape.points)
        by_key.setdefault(key, []).append(shape.id)
    ids = []
    for request in requests:
        key = _shape_key(request.frame, request.label_id, request.type.value, request.points)
        found = by_key.get(key)
        ids.append(found.pop(0) if found else None)
    return ids


def write_uploaded_shapes(
    output_dir: Path, server: str, task: _TaskFrames, uploaded: _Uploaded, options: Options
) -> Path:
    """uploaded_shapes.json: the task's frames as they were, and every shape created in it."""
    record = {
        "cvat_url": server,
        "task_id": options.task_id,
        "task_name": task.task.name,
        "existing_annotations": options.existing_annotations,
        "score_threshold": options.score_threshold,
        "frames": [
            {"frame": f.index, "name": f.name, "width": f.width, "height": f.height}
            for f in task.frames
        ],
        "shapes": list(uploaded.shapes),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / UPLOADED_SHAPES_FILE
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def _next_group(call: CvatCaller, task: _TaskFrames, predictions: _Predictions) -> int:
    """Past the task's own groups, so that ours join none of them (when ours need any)."""
    if not any(len(p.shape.parts) > 1 for p in predictions.kept):
        return 1
    existing = call(
        f"read the annotations of {task.resource}",
        task.task.get_annotations,
        resource=task.resource,
    )
    groups = [s.group or 0 for s in (*existing.shapes, *existing.tracks)]
    return max(groups, default=0) + 1


# --- telling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    server: str  # the CVAT URL, redacted
    options: Options
    task: _TaskFrames
    label_map: Any  # the model's
    has_masks: bool  # whether the model predicts masks
    labels: _LabelMatch
    predictions: _Predictions
    uploaded: _Uploaded | None  # None on a dry run

    @property
    def upload_requests(self) -> int:
        return self.uploaded.requests if self.uploaded else 0


def _metadata(outcome: _Outcome) -> dict:
    o, predictions = outcome.options, outcome.predictions
    per_label = Counter(p.shape.label for p in predictions.kept)
    return {
        "cvat_url": outcome.server,
        "task_id": o.task_id,
        "dry_run": o.dry_run,
        "existing_annotations": o.existing_annotations,
        "score_threshold": o.score_threshold,
        "score_thresholds": o.thresholds.by_label,
        "mask_format": o.mask_format,
        "frames": len(outcome.task.frames),
        "predictions": len(predictions.kept),
        "shapes": predictions.shape_count,
        "uploaded_shapes": 0 if o.dry_run else predictions.shape_count,
        "uploaded_shape_ids": (
            0
            if outcome.uploaded is None
            else len(outcome.uploaded.shapes) - outcome.uploaded.without_id
        ),
        "uploaded_shapes_file": "" if o.dry_run else UPLOADED_SHAPES_FILE,
        "skipped": sum(predictions.skipped.values()),
        "below_threshold": predictions.below_threshold,
        "predictions_per_label": dict(sorted(per_label.items())),
    }


def _report_markdown(outcome: _Outcome) -> str:
    o, task, predictions = outcome.options, outcome.task, outcome.predictions
    label_map = outcome.label_map
    if o.dry_run:
        mode = "dry run: predictions.json written, nothing uploaded"
    elif o.existing_annotations == "replace":
        mode = "uploaded, replacing the task's annotations"
    else:
        mode = "uploaded, appended to the task's annotations"
    kinds = "masks" if outcome.has_masks else "boxes"
    lines = [
        f"# Pre-annotation of CVAT task {o.task_id}",
        "",
        "| | |",
        "|---|---|",
        f"| server | {markdown_cell(outcome.server)} |",
        f"| task | {o.task_id} ({markdown_cell(task.task.name)}) |",
        f"| mode | {mode} |",
        f"| model | {kinds}; {len(label_map)} label(s) |",
        f"| score threshold | {markdown_cell(o.thresholds.describe())} |",
        f"| frames processed | {len(task.frames)}"
        + (f" ({task.deleted} deleted frame(s) left out)" if task.deleted else "")
        + " |",
        f"| frames | {_fetching(task)} |",
        f"| predictions kept | {len(predictions.kept)} ({predictions.shape_count} shape(s)) |",
        f"| below the threshold | {predictions.below_threshold} |",
    ]
    if not o.dry_run:
        lines.append(
            f"| upload requests | {outcome.upload_requests} (batches of {o.batch_size} frames) |"
        )
        recorded = len(outcome.uploaded.shapes) - outcome.uploaded.without_id
        lines.append(
            f"| shape ids recorded | {recorded} of {len(outcome.uploaded.shapes)}, in "
            f"{UPLOADED_SHAPES_FILE} (measure-corrections compares them with the reviewed task) |"
        )
    if predictions.resized_frames:
        lines.append(
            f"| frames whose image size differs from CVAT's | {predictions.resized_frames} "
            "(predictions scaled to CVAT's size) |"
        )
    per_label, shapes = Counter(), Counter()
    for p in predictions.kept:
        per_label[p.shape.label] += 1
        shapes[p.shape.label] += len(p.shape.parts)
    lines += [
        "",
        "## Per label",
        "",
        "| model label | CVAT label id | shape | predictions | shapes |",
        "|---|---|---|---|---|",
    ]
    for name in label_map.names:
        target = outcome.labels.targets.get(name)
        cell = markdown_cell(name)
        if target is None:
            why = markdown_cell(outcome.labels.unmatched[name])
            lines.append(f"| {cell} | — | left out: {why} | | |")
            continue
        lines.append(
            f"| {cell} | {target.label_id} | {target.shape} | {per_label[name]} | {shapes[name]} |"
        )
    lines += ["", "## Skipped", ""]
    if predictions.skipped:
        lines += ["| reason | predictions |", "|---|---|"]
        lines += [
            f"| {markdown_cell(why)} | {n} |"
            for why, n in Counter(predictions.skipped).most_common()
        ]
    else:
        lines.append("Nothing above the threshold was skipped.")
    return "\n".join(lines) + "\n"
