"""Pre-annotate a CVAT task: run a model on its frames and upload the predictions via cvat-sdk.

Credentials come only from the environment (see export_annotations.cvat_server), and so do its
client, retries and messages. Everything is predicted before anything is changed on the server:
a model or frame failure leaves the task as it was. predictions.json (COCO) is always written;
the upload follows unless dry_run.

Shapes: boxes become rectangles; with a mask model, masks become polygons (one per connected
part; the parts of one instance share a CVAT group) or CVAT masks. A task label of a fixed type
(rectangle, polygon, mask) gets that type; "any" gets the default. Append: PATCH
.../annotations/?action=create per batch of frames; replace: DELETE .../annotations/ first.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
    connect,
    credentials_from_env,
)
from ..common.dataset import mask_to_rle
from . import shapes as geometry

PREDICTIONS_FILE = "predictions.json"
MASK_FORMATS = ("polygon", "mask")
UNKNOWN_LABELS = ("error", "skip")
EXISTING_ANNOTATIONS = ("append", "replace")
SHAPE_LABEL_TYPES = ("any", "rectangle", "polygon", "mask")
SOURCE = "auto"


@dataclass
class PreannotateResult:
    metadata: dict
    report_markdown: str


@dataclass(frozen=True)
class Options:
    task_id: int
    score_threshold: float
    mask_format: str
    unknown_labels: str
    existing_annotations: str
    batch_size: int
    dry_run: bool


def check_options(
    cvat_url: str,
    task_id: str | int,
    score_threshold: float = 0.5,
    mask_format: str = "polygon",
    unknown_labels: str = "error",
    existing_annotations: str = "append",
    batch_size: int = 16,
    dry_run: bool = False,
) -> Options:
    """The options checked, task_id parsed; ValueError saying what is wrong otherwise."""
    if not str(cvat_url or "").strip():
        raise ValueError("cvat_url is empty: give the CVAT server, e.g. https://cvat.example.com")
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
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], not {score_threshold}")
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


def preannotate_task(
    model_dir: str,
    output_dir: str,
    cvat_url: str,
    task_id: str,
    score_threshold: float = 0.5,
    mask_format: str = "polygon",
    unknown_labels: str = "error",
    existing_annotations: str = "append",
    batch_size: int = 16,
    dry_run: bool = False,
    *,
    predictor=None,
    retries: int = 5,
    retry_delay: float = 2.0,
    log: Callable[[str], Any] = print,
) -> PreannotateResult:
    """Predict on every frame of the task, write predictions.json, upload unless dry_run.

    `predictor` (an inference Predictor) replaces loading the model from model_dir. Raises
    ValueError for bad options and label mismatches, CvatServerError for the server's refusals.
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

        predictor = load_predictor(model_dir)
    call = CvatCaller(cvat_url, credentials_source, retries, retry_delay, log)
    with CvatClient(cvat_url, call, poll_interval=2.0, timeout=3600) as client:
        connect(client, call, credentials)
        run = _Run(client, call, predictor, options, Path(output_dir))
        run.plan()
        run.predict()
        run.write_predictions()
        if not options.dry_run:
            run.upload()
    return PreannotateResult(run.metadata(cvat_url), run.report(cvat_url))


@dataclass
class _Target:
    label_id: int
    shape: str  # "rectangle", "polygon" or "mask"
    label_type: str


@dataclass
class _Frame:
    index: int
    name: str
    width: int
    height: int


@dataclass
class _Prediction:
    frame: int
    label: str
    score: float
    box: list[float]  # pixels: xtl, ytl, xbr, ybr
    shape: str
    points: list[list[float]]  # one CVAT shape each; several for a polygon's parts
    segmentation: Any  # COCO: None, polygons or RLE
    area: float


@dataclass
class _Run:
    client: Any
    call: CvatCaller
    predictor: Any
    options: Options
    output_dir: Path
    task: Any = None
    resource: str = ""
    targets: dict[str, _Target] = field(default_factory=dict)
    unmatched: dict[str, str] = field(default_factory=dict)  # model label -> why
    frames: list[_Frame] = field(default_factory=list)
    deleted: int = 0
    predictions: list[_Prediction] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> predictions left out
    below_threshold: int = 0
    resized_frames: int = 0
    requests: int = 0

    @property
    def log(self):
        return self.call.log

    # --- what to do

    def plan(self) -> None:
        task_id = self.options.task_id
        self.resource = f"task {task_id}"
        retrieve = partial(self.client.tasks.retrieve, task_id)
        self.task = self.call(f"read {self.resource}", retrieve, resource=self.resource)
        labels = self.call(
            f"read the labels of {self.resource}", self.task.get_labels, resource=self.resource
        )
        self._map_labels(labels)
        meta = self.call(
            f"read the frames of {self.resource}", self.task.get_meta, resource=self.resource
        )
        self._list_frames(meta)
        mode = (
            "dry run, nothing uploaded"
            if self.options.dry_run
            else self.options.existing_annotations
        )
        self.log(
            f"{self.resource} ({self.task.name!r}): {len(self.frames)} frame(s) to predict"
            + (f", {self.deleted} deleted frame(s) left out" if self.deleted else "")
            + f"; {mode}"
        )

    def _map_labels(self, labels) -> None:
        """Model labels → task labels by exact (case-sensitive) name, as CVAT tells labels apart."""
        by_name = {label.name: label for label in labels if not getattr(label, "has_parent", False)}
        model_names = list(self.predictor.label_map.names)
        default = self.options.mask_format if self.predictor.has_masks else "rectangle"
        for name in model_names:
            label = by_name.get(name)
            if label is None:
                near = [n for n in by_name if n.casefold() == name.casefold()]
                hint = f" (the task has {near[0]!r}; names are case-sensitive)" if near else ""
                self.unmatched[name] = "not in the task" + hint
                continue
            label_type = str(getattr(label, "type", None) or "any")
            if label_type not in SHAPE_LABEL_TYPES:
                self.unmatched[name] = (
                    f"the task's label is a {label_type} label, which takes no rectangles, "
                    "polygons or masks"
                )
                continue
            shape = default if label_type == "any" else label_type
            self.targets[name] = _Target(label.id, shape, label_type)
        if not self.unmatched:
            return
        task_labels = ", ".join(
            f"{label.name!r} ({getattr(label, 'type', None) or 'any'})"
            for label in by_name.values()
        )
        listed = "; ".join(f"{name!r}: {why}" for name, why in self.unmatched.items())
        if not self.targets:
            raise ValueError(
                f"none of the model's labels can be used in {self.resource}: {listed}. The task's "
                f"labels: {task_labels or 'none'}. Is it the right task and model?"
            )
        if self.options.unknown_labels == "error":
            raise ValueError(
                f"{len(self.unmatched)} model label(s) cannot be used in {self.resource}: "
                f"{listed}. The task's labels: {task_labels}. Add them to the task in CVAT, or set "
                'unknown_labels="skip" to leave their predictions out.'
            )
        self.log(f"{self.resource}: left out (unknown_labels=skip): {listed}")

    def _list_frames(self, meta) -> None:
        size = self.task.size or 0
        infos = list(meta.frames or [])
        deleted = set(meta.deleted_frames or [])
        video = getattr(self.task, "media_type", "image") == "video"
        if not infos or (len(infos) != size and len(infos) != 1):
            raise CvatServerError(
                f"{self.resource}: the data meta describes {len(infos)} frame(s) of {size}"
            )
        for index in range(size):
            if index in deleted:
                self.deleted += 1
                continue
            info = infos[index] if len(infos) == size else infos[0]
            name = f"frame_{index:06d}" if video or len(infos) != size else info.name
            self.frames.append(_Frame(index, name, int(info.width), int(info.height)))
        if not self.frames:
            raise ValueError(f"{self.resource} has no frames to pre-annotate (all deleted or none)")

    # --- predicting

    def predict(self) -> None:
        total = len(self.frames)
        for n, frame in enumerate(self.frames, start=1):
            image = self._image(frame)
            detections = self.predictor.predict(image)
            self._add(frame, detections, image.shape[:2])
            if n % self.options.batch_size == 0 or n == total:
                self.log(
                    f"{self.resource}: predicted {n} of {total} frame(s), "
                    f"{len(self.predictions)} prediction(s) kept"
                )

    def _image(self, frame: _Frame) -> np.ndarray:
        what = f"download frame {frame.index} of {self.resource}"
        get = partial(self.task.get_frame, frame.index, quality="original")
        data = self.call(what, get, resource=self.resource).read()
        try:
            with Image.open(io.BytesIO(data)) as image:
                # CVAT shows (and annotates) images turned by their EXIF orientation
                return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except Exception as error:
            raise CvatServerError(
                f"frame {frame.index} ({frame.name!r}) of {self.resource} is not a readable "
                f"image ({len(data):,} bytes): {error}"
            ) from None

    def _add(self, frame: _Frame, detections, image_size) -> None:
        if tuple(image_size) != (frame.height, frame.width):
            self.resized_frames += 1
        masks = detections.masks if self.predictor.has_masks else None
        for k in range(len(detections)):
            score = float(detections.scores[k])
            if score < self.options.score_threshold:
                self.below_threshold += 1
                continue
            name = detections.class_names[k]
            target = self.targets.get(name)
            if target is None:
                self.skipped[f"label {name!r}: {self.unmatched.get(name, 'unknown')}"] += 1
                continue
            box = geometry.box_to_pixels(detections.boxes[k], frame.width, frame.height)
            if box[2] <= box[0] or box[3] <= box[1]:
                self.skipped["empty box (no area inside the frame)"] += 1
                continue
            mask = None
            if masks is not None:
                mask = geometry.resized_mask(masks[k], frame.width, frame.height)
            prediction = self._shape(frame, name, score, box, target.shape, mask)
            if prediction is None:
                self.skipped["empty mask"] += 1
            else:
                self.predictions.append(prediction)

    def _shape(self, frame, name, score, box, shape, mask) -> _Prediction | None:
        box_area = (box[2] - box[0]) * (box[3] - box[1])
        if shape == "rectangle":
            return _Prediction(frame.index, name, score, box, shape, [box], None, box_area)
        if shape == "polygon" and mask is None:
            polygon = geometry.box_polygon(box)
            return _Prediction(frame.index, name, score, box, shape, [polygon], [polygon], box_area)
        if mask is None:  # a mask label, a boxes-only model: the pixels the box touches
            mask = np.zeros((frame.height, frame.width), np.uint8)
            left, top, right, bottom = geometry.box_mask_points(box)[2:]
            mask[int(top) : int(bottom) + 1, int(left) : int(right) + 1] = 1
        if shape == "polygon":
            points = geometry.mask_polygons(mask)
            segmentation = points
        else:
            encoded = geometry.mask_points(mask)
            points = [encoded] if encoded else []
            segmentation = mask_to_rle(mask)
        if not points:
            return None
        area = float(np.count_nonzero(mask))
        return _Prediction(frame.index, name, score, box, shape, points, segmentation, area)

    # --- writing and uploading

    def write_predictions(self) -> Path:
        label_map = self.predictor.label_map
        annotations = []
        for number, p in enumerate(self.predictions, start=1):
            xtl, ytl, xbr, ybr = p.box
            annotation = {
                "id": number,
                "image_id": p.frame + 1,
                "category_id": label_map.id_of(p.label),
                "bbox": [xtl, ytl, round(xbr - xtl, 2), round(ybr - ytl, 2)],
                "area": round(p.area, 2),
                "iscrowd": 0,
                "score": round(p.score, 4),
                "attributes": {"cvat_shape": p.shape},
            }
            if p.segmentation is not None:
                annotation["segmentation"] = p.segmentation
            annotations.append(annotation)
        coco = {
            "info": {
                "description": f"predictions for CVAT {self.resource} ({self.task.name})",
                "score_threshold": self.options.score_threshold,
            },
            "images": [
                {
                    "id": f.index + 1,
                    "file_name": f.name,
                    "width": f.width,
                    "height": f.height,
                    "frame": f.index,
                }
                for f in self.frames
            ],
            "categories": [{"id": i, "name": name} for i, name in label_map.items()],
            "annotations": annotations,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / PREDICTIONS_FILE
        path.write_text(json.dumps(coco), encoding="utf-8")
        self.log(f"{self.resource}: {len(annotations)} prediction(s) written to {path}")
        return path

    def upload(self) -> None:
        task, resource = self.task, self.resource
        if self.options.existing_annotations == "replace":
            self.call(
                f"remove the annotations of {resource}", task.remove_annotations, resource=resource
            )
            self.requests += 1
            self.log(f"{resource}: existing annotations removed")
            next_group = 1
        else:
            next_group = self._next_group()
        by_frame: dict[int, list[_Prediction]] = {}
        for p in self.predictions:
            by_frame.setdefault(p.frame, []).append(p)
        size = self.options.batch_size
        batches = [self.frames[i : i + size] for i in range(0, len(self.frames), size)]
        uploaded = 0
        for number, batch in enumerate(batches, start=1):
            shapes = []
            for frame in batch:
                for p in by_frame.get(frame.index, []):
                    group = None
                    if len(p.points) > 1:
                        group, next_group = next_group, next_group + 1
                    shapes += [self._request(p, points, group) for points in p.points]
            span = f"frames {batch[0].index}-{batch[-1].index}"
            if not shapes:
                self.log(f"{resource}: batch {number} of {len(batches)} ({span}): no shapes")
                continue
            request = models.PatchedLabeledDataRequest(shapes=shapes)
            upload = partial(
                task.api.partial_update_annotations,
                "create",
                task.id,
                patched_labeled_data_request=request,
            )
            self.call(f"upload the shapes of {span} to {resource}", upload, resource=resource)
            self.requests += 1
            uploaded += len(shapes)
            self.log(
                f"{resource}: batch {number} of {len(batches)} ({span}): {len(shapes)} shape(s) "
                f"uploaded, {uploaded} in all"
            )

    def _next_group(self) -> int:
        """Past the task's own groups, so that ours join none of them (when ours need any)."""
        if not any(len(p.points) > 1 for p in self.predictions):
            return 1
        existing = self.call(
            f"read the annotations of {self.resource}",
            self.task.get_annotations,
            resource=self.resource,
        )
        groups = [s.group or 0 for s in (*existing.shapes, *existing.tracks)]
        return max(groups, default=0) + 1

    def _request(self, p: _Prediction, points, group) -> models.LabeledShapeRequest:
        extra = {"group": group} if group else {}
        return models.LabeledShapeRequest(
            type=models.ShapeType(p.shape),
            frame=p.frame,
            label_id=self.targets[p.label].label_id,
            points=[float(v) for v in points],
            occluded=False,
            z_order=0,
            source=SOURCE,
            attributes=[],
            score=p.score,
            **extra,
        )

    # --- telling

    def shape_count(self) -> int:
        return sum(len(p.points) for p in self.predictions)

    def metadata(self, cvat_url: str) -> dict:
        per_label = Counter(p.label for p in self.predictions)
        return {
            "cvat_url": cvat_url,
            "task_id": self.options.task_id,
            "dry_run": self.options.dry_run,
            "existing_annotations": self.options.existing_annotations,
            "score_threshold": self.options.score_threshold,
            "mask_format": self.options.mask_format,
            "frames": len(self.frames),
            "predictions": len(self.predictions),
            "shapes": self.shape_count(),
            "uploaded_shapes": 0 if self.options.dry_run else self.shape_count(),
            "skipped": sum(self.skipped.values()),
            "below_threshold": self.below_threshold,
            "predictions_per_label": dict(sorted(per_label.items())),
        }

    def report(self, cvat_url: str) -> str:
        o = self.options
        if o.dry_run:
            mode = "dry run: predictions.json written, nothing uploaded"
        elif o.existing_annotations == "replace":
            mode = "uploaded, replacing the task's annotations"
        else:
            mode = "uploaded, appended to the task's annotations"
        kinds = "masks" if self.predictor.has_masks else "boxes"
        lines = [
            f"# Pre-annotation of CVAT task {o.task_id}",
            "",
            "| | |",
            "|---|---|",
            f"| server | {cvat_url} |",
            f"| task | {o.task_id} ({_cell(self.task.name)}) |",
            f"| mode | {mode} |",
            f"| model | {kinds}; {len(self.predictor.label_map)} label(s) |",
            f"| score threshold | {o.score_threshold:g} |",
            f"| frames processed | {len(self.frames)}"
            + (f" ({self.deleted} deleted frame(s) left out)" if self.deleted else "")
            + " |",
            f"| predictions kept | {len(self.predictions)} ({self.shape_count()} shape(s)) |",
            f"| below the threshold | {self.below_threshold} |",
        ]
        if not o.dry_run:
            lines.append(
                f"| upload requests | {self.requests} (batches of {o.batch_size} frames) |"
            )
        if self.resized_frames:
            lines.append(
                f"| frames whose image size differs from CVAT's | {self.resized_frames} "
                "(predictions scaled to CVAT's size) |"
            )
        per_label = Counter(p.label for p in self.predictions)
        shapes = Counter()
        for p in self.predictions:
            shapes[p.label] += len(p.points)
        lines += [
            "",
            "## Per label",
            "",
            "| model label | CVAT label id | shape | predictions | shapes |",
            "|---|---|---|---|---|",
        ]
        for name in self.predictor.label_map.names:
            target = self.targets.get(name)
            if target is None:
                lines.append(f"| {_cell(name)} | — | left out: {_cell(self.unmatched[name])} | | |")
                continue
            lines.append(
                f"| {_cell(name)} | {target.label_id} | {target.shape} | {per_label[name]} "
                f"| {shapes[name]} |"
            )
        lines += ["", "## Skipped", ""]
        if self.skipped:
            lines += ["| reason | predictions |", "|---|---|"]
            lines += [f"| {_cell(why)} | {n} |" for why, n in self.skipped.most_common()]
        else:
            lines.append("Nothing above the threshold was skipped.")
        return "\n".join(lines) + "\n"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
