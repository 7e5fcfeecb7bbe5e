"""measure-corrections: what the annotators did to the model's pre-annotations.

Two inputs: what preannotate uploaded to a CVAT task (uploaded_shapes.json in its predictions
artifact: every shape CVAT created, with its id, frame, label and points) and the same task
exported after review as "CVAT for images 1.1" (a Dataset whose annotations carry CVAT's
`source` and whose images carry their frame number).

CVAT records what happened to each shape: one the model uploaded is "auto"; the editor turns it
"semi-auto" when a person changes it (points, label, attributes); a deleted one is gone; one a
person draws is "manual". The export carries no shape ids, so the reviewed shapes are matched to
the uploaded ones frame by frame: only "auto"/"semi-auto" shapes can be the model's, and among
them the assignment maximises unchanged geometry first, then overlap (IoU), then same label.

Each uploaded prediction ends as exactly one of: kept unchanged, corrected (semi-auto or its
geometry moved; its IoU with what was uploaded is reported), relabelled, deleted, or on a frame
deleted since. Each reviewed shape is exactly one of: kept, corrected, relabelled (the model's),
added by hand ("manual": what the model missed) or other (a model shape not from this upload, a
file's). Nothing is counted twice.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from ..common.dataset import Dataset, box_mask_to_rle, polygons_to_rle
from ..common.report import write_output
from ..preannotate.preannotate import UPLOADED_SHAPES_FILE

logger = logging.getLogger(__name__)

REVIEW_FORMAT = "CVAT for images 1.1"
MODEL_SOURCES = ("auto", "semi-auto")
HAND_SOURCE = "manual"
# CVAT writes coordinates with 2 decimals: closer than this is the same point.
SAME_POINT_PX = 0.02
IOU_BINS = (0.5, 0.75, 0.9, 0.99)  # corrected shapes' IoU, reported in these bins

KEPT, CORRECTED, RELABELLED, DELETED, FRAME_DELETED = (
    "kept",
    "corrected",
    "relabelled",
    "deleted",
    "frame deleted",
)
ADDED, OTHER = "added by hand", "other"


@dataclass(frozen=True)
class MeasureCorrectionsResult:
    metadata: dict[str, dict]  # output name ("report") -> that artifact's metadata
    metrics: dict[str, float]  # for the KFP Metrics output


# --- the inputs --------------------------------------------------------------------------------


@dataclass
class Geometry:
    """A shape in pixels: a box [x, y, w, h], polygons, or a COCO RLE of the whole frame."""

    kind: str  # "box", "polygons" or "rle"
    bbox: list[float]
    polygons: list[list[float]] | None = None
    rle: dict | None = None


@dataclass
class UploadedShape:
    """One prediction as uploaded: its shapes (one per part; the parts share a CVAT group)."""

    prediction: int
    frame: int
    label: str
    shape_type: str  # "rectangle", "polygon" or "mask"
    ids: list[int | None]  # CVAT's ids of its shapes
    geometry: Geometry
    score: float


@dataclass
class ReviewedShape:
    annotation_id: int
    frame: int
    label: str
    source: str
    geometry: Geometry


@dataclass
class Frame:
    frame: int
    name: str
    width: int
    height: int
    image: dict | None = None  # the reviewed Dataset's image, None when the frame is gone


def read_uploaded(predictions_dir: Path) -> tuple[dict, list[UploadedShape]]:
    """uploaded_shapes.json: (its task fields and frames, the uploaded predictions)."""
    path = predictions_dir / UPLOADED_SHAPES_FILE
    if not path.is_file():
        raise ValueError(
            f"{predictions_dir}: no {UPLOADED_SHAPES_FILE}. It is what preannotate uploaded, with "
            "CVAT's ids; preannotate writes it beside predictions.json when it uploads. Give the "
            "predictions artifact of a preannotate run that was not a dry run."
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        frames = {f["frame"]: f for f in record["frames"]}
        parts: dict[int, list[dict]] = defaultdict(list)
        for shape in record["shapes"]:
            parts[shape["prediction"]].append(shape)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not an {UPLOADED_SHAPES_FILE} as preannotate writes it ({error!r})"
        ) from None
    uploaded = []
    for prediction, shapes in sorted(parts.items()):
        first = shapes[0]
        frame = frames.get(first["frame"])
        if frame is None:
            raise ValueError(
                f"{path}: prediction {prediction} lies on frame {first['frame']}, which the "
                "file's frames do not list"
            )
        geometry = uploaded_geometry(shapes, frame["width"], frame["height"])
        uploaded.append(
            UploadedShape(
                prediction,
                first["frame"],
                first["label"],
                first["type"],
                [s.get("id") for s in shapes],
                geometry,
                float(first.get("score", 0.0)),
            )
        )
    return record, uploaded


def uploaded_geometry(shapes: list[dict], width: int, height: int) -> Geometry:
    """The geometry of one prediction's CVAT shapes (rectangle, polygons or a mask)."""
    shape_type = shapes[0]["type"]
    if shape_type == "rectangle":
        xtl, ytl, xbr, ybr = shapes[0]["points"]
        return Geometry("box", [xtl, ytl, xbr - xtl, ybr - ytl])
    if shape_type == "polygon":
        polygons = [[float(v) for v in s["points"]] for s in shapes]
        return Geometry("polygons", _polygons_bbox(polygons), polygons=polygons)
    runs = [int(v) for v in shapes[0]["points"][:-4]]
    left, top, right, bottom = (int(v) for v in shapes[0]["points"][-4:])
    box_width, box_height = right - left + 1, bottom - top + 1
    values = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)  # CVAT starts with 0s
    box = np.zeros(box_width * box_height, np.uint8)
    box[: len(values)] = values[: box.size]
    box = box.reshape(box_height, box_width)
    # the part of the mask inside the frame, as the CVAT XML reader keeps it
    x0, y0 = max(0, -left), max(0, -top)
    x1, y1 = min(box_width, width - left), min(box_height, height - top)
    inside = box[y0:y1, x0:x1]
    rle = box_mask_to_rle(inside, left + x0, top + y0, width, height)
    bbox = [float(v) for v in mask_utils.toBbox(encoded_rle(rle))]
    return Geometry("rle", bbox, rle=rle)


def reviewed_geometry(annotation: dict) -> Geometry:
    segmentation = annotation.get("segmentation")
    bbox = [float(v) for v in annotation["bbox"]]
    if isinstance(segmentation, dict):
        return Geometry("rle", bbox, rle=segmentation)
    if segmentation:
        return Geometry("polygons", bbox, polygons=[[float(v) for v in p] for p in segmentation])
    return Geometry("box", bbox)


def _polygons_bbox(polygons) -> list[float]:
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def encoded_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


# --- comparing shapes ----------------------------------------------------------------------------


def same_geometry(a: Geometry, b: Geometry, width: int, height: int) -> bool:
    """Whether two shapes are the same up to CVAT's 2-decimal coordinates."""
    if a.kind == b.kind == "box":
        return _close(a.bbox, b.bbox)
    if a.kind == b.kind == "polygons":
        first, second = sorted(a.polygons), sorted(b.polygons)
        return len(first) == len(second) and all(
            len(p) == len(q) and _close(p, q) for p, q in zip(first, second)
        )
    if a.kind == b.kind == "rle":
        return iou(a, b, width, height) == 1.0
    return False


def _close(a, b) -> bool:
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0) <= SAME_POINT_PX


def iou(a: Geometry, b: Geometry, width: int, height: int) -> float:
    """Box IoU between two boxes; pixel IoU (pycocotools) when either is a polygon or mask."""
    if a.kind == b.kind == "box":
        return float(mask_utils.iou([a.bbox], [b.bbox], [0])[0][0])
    first, second = _rle(a, width, height), _rle(b, width, height)
    return float(mask_utils.iou([first], [second], [0])[0][0])


def _rle(g: Geometry, width: int, height: int) -> dict:
    if g.kind == "rle":
        return encoded_rle(g.rle)
    if g.kind == "polygons":
        return polygons_to_rle(g.polygons, height, width)
    return mask_utils.frPyObjects(np.array([g.bbox], dtype=np.float64), height, width)[0]


# --- matching ----------------------------------------------------------------------------------


@dataclass
class Pair:
    uploaded: UploadedShape
    reviewed: ReviewedShape
    iou: float
    unchanged: bool  # same geometry


def match_frame(
    uploaded: list[UploadedShape], reviewed: list[ReviewedShape], width: int, height: int
) -> list[Pair]:
    """The reviewed model shapes ("auto", "semi-auto") paired with the uploaded predictions they
    came from: the assignment that keeps most shapes unchanged, then overlaps most, then keeps
    most labels. Shapes that do not overlap at all are not paired."""
    from scipy.optimize import linear_sum_assignment

    candidates = [r for r in reviewed if r.source in MODEL_SOURCES]
    if not uploaded or not candidates:
        return []
    score = np.full((len(uploaded), len(candidates)), -1.0)
    facts = {}
    for i, u in enumerate(uploaded):
        for j, r in enumerate(candidates):
            unchanged = same_geometry(u.geometry, r.geometry, width, height)
            overlap = 1.0 if unchanged else iou(u.geometry, r.geometry, width, height)
            if overlap <= 0.0:
                continue
            facts[i, j] = (overlap, unchanged)
            score[i, j] = 4.0 * unchanged + 2.0 * overlap + 1.0 * (u.label == r.label)
    rows, columns = linear_sum_assignment(score, maximize=True)
    return [
        Pair(uploaded[i], candidates[j], *facts[i, j])
        for i, j in zip(rows, columns)
        if (i, j) in facts
    ]


# --- the measurement ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one uploaded prediction."""

    uploaded: UploadedShape
    kind: str  # KEPT, CORRECTED, RELABELLED, DELETED, FRAME_DELETED
    label: str  # the class it counts under: its label, renames applied
    reviewed: ReviewedShape | None = None
    iou: float | None = None


@dataclass
class Origin:
    """Where one reviewed shape came from."""

    reviewed: ReviewedShape
    kind: str  # KEPT, CORRECTED, RELABELLED, ADDED, OTHER


@dataclass
class Measurement:
    task: dict  # uploaded_shapes.json's fields
    frames: dict[int, Frame]
    outcomes: list[Outcome]
    origins: list[Origin]
    classes: list[str]
    renamed: dict[str, str]  # uploaded label -> its name in the reviewed task
    notes: list[str] = field(default_factory=list)

    def counts(self, label: str | None = None) -> dict[str, int]:
        """The counts for one class (None: all)."""

        def mine(name):
            return label is None or name == label

        outcomes = Counter(o.kind for o in self.outcomes if mine(o.label))
        origins = Counter(o.kind for o in self.origins if mine(o.reviewed.label))
        return {
            "uploaded": sum(outcomes.values()),
            "kept": outcomes[KEPT],
            "corrected": outcomes[CORRECTED],
            "relabelled": outcomes[RELABELLED],
            "deleted": outcomes[DELETED],
            "on_deleted_frames": outcomes[FRAME_DELETED],
            "added_by_hand": origins[ADDED],
            "other": origins[OTHER],
            "final": sum(origins.values()),
            "final_kept": origins[KEPT],
        }

    def corrected_ious(self, label: str | None = None) -> list[float]:
        return [
            o.iou
            for o in self.outcomes
            if o.kind == CORRECTED and (label is None or o.label == label)
        ]


def measure(task: dict, uploaded: list[UploadedShape], reviewed: Dataset) -> Measurement:
    """Every uploaded prediction's outcome and every reviewed shape's origin."""
    notes: list[str] = []
    frames = _frames(task, reviewed, notes)
    names = {c["id"]: c["name"] for c in reviewed.categories}
    reviewed_shapes: dict[int, list[ReviewedShape]] = defaultdict(list)
    image_frames = {image["id"]: image["frame"] for image in reviewed.images}
    for annotation in reviewed.annotations:
        frame = image_frames[annotation["image_id"]]
        reviewed_shapes[frame].append(
            ReviewedShape(
                annotation["id"],
                frame,
                names[annotation["category_id"]],
                annotation.get("source", ""),
                reviewed_geometry(annotation),
            )
        )
    by_frame: dict[int, list[UploadedShape]] = defaultdict(list)
    for u in uploaded:
        by_frame[u.frame].append(u)

    pairs: list[Pair] = []
    gone: set[int] = set()  # id() of the predictions on frames deleted since
    for number, shapes in sorted(by_frame.items()):
        frame = frames[number]
        if frame.image is None:
            gone.update(id(u) for u in shapes)
            continue
        pairs += match_frame(shapes, reviewed_shapes.get(number, []), frame.width, frame.height)

    renamed = _renames(pairs, set(names.values()), {u.label for u in uploaded}, notes)
    outcomes, origins = [], []
    paired = {id(p.uploaded): p for p in pairs}
    paired_reviewed = {id(p.reviewed): p for p in pairs}
    for u in uploaded:
        label = renamed.get(u.label, u.label)
        pair = paired.get(id(u))
        if id(u) in gone:
            outcomes.append(Outcome(u, FRAME_DELETED, label))
        elif pair is None:
            outcomes.append(Outcome(u, DELETED, label))
        else:
            outcomes.append(Outcome(u, _kind(pair, label), label, pair.reviewed, pair.iou))
    outcome_of = {id(o.uploaded): o for o in outcomes}
    for shapes in reviewed_shapes.values():
        for r in shapes:
            pair = paired_reviewed.get(id(r))
            if pair is not None:
                origins.append(Origin(r, outcome_of[id(pair.uploaded)].kind))
            elif r.source == HAND_SOURCE:
                origins.append(Origin(r, ADDED))
            else:
                origins.append(Origin(r, OTHER))
    other = Counter(o.reviewed.source or "none" for o in origins if o.kind == OTHER)
    if other:
        listed = ", ".join(f"{n} {source!r}" for source, n in other.most_common())
        notes.append(
            f"{sum(other.values())} reviewed shape(s) are neither this upload's nor drawn by hand "
            f"(source {listed}: another pre-annotation round, an imported file, or a model shape "
            "moved off every prediction): counted as 'other', not as the model's"
        )
    if task.get("existing_annotations") == "append":
        notes.append(
            "the predictions were appended to the task's annotations: shapes a person drew "
            "before the upload count as added by hand too"
        )
    classes = list(dict.fromkeys([*names.values(), *(o.label for o in outcomes)]))
    return Measurement(task, frames, outcomes, origins, classes, renamed, notes)


def _kind(pair: Pair, label: str) -> str:
    if pair.reviewed.label != label:
        return RELABELLED
    if pair.unchanged and pair.reviewed.source == "auto":
        return KEPT
    return CORRECTED


def _frames(task: dict, reviewed: Dataset, notes: list[str]) -> dict[int, Frame]:
    """The task's frames at upload, each with its reviewed image (None once deleted)."""
    frames = {
        f["frame"]: Frame(f["frame"], f["name"], int(f["width"]), int(f["height"]))
        for f in task["frames"]
    }
    mismatched, resized = [], []
    for image in reviewed.images:
        frame = frames.get(image["frame"])
        if frame is None:
            continue
        frame.image = image
        name = image["file_name"]
        if not same_frame_name(name, frame.name):
            mismatched.append(f"frame {frame.frame}: uploaded to {frame.name!r}, exported {name!r}")
        if (image["width"], image["height"]) != (frame.width, frame.height):
            resized.append(
                f"frame {frame.frame}: {frame.width}x{frame.height} at upload, "
                f"{image['width']}x{image['height']} in the export"
            )
    present = [f for f in frames.values() if f.image is not None]
    if present and len(mismatched) == len(present):
        raise ValueError(
            f"the reviewed export is not task {task.get('task_id')} as it was pre-annotated: no "
            f"frame has the name it had at upload ({'; '.join(mismatched[:3])}). Export the task "
            "preannotate uploaded to."
        )
    if resized:
        raise ValueError(
            f"{len(resized)} frame(s) of the reviewed export differ in size from the frames "
            f"uploaded to ({'; '.join(resized[:3])}): shapes cannot be compared. Export the task "
            "with its original images."
        )
    if mismatched:
        notes.append(
            f"{len(mismatched)} frame(s) are named differently than at upload, matched by frame "
            f"number: {'; '.join(mismatched[:3])}"
        )
    deleted = sorted(n for n, f in frames.items() if f.image is None)
    if deleted:
        shown = ", ".join(map(str, deleted[:20])) + (" ..." if len(deleted) > 20 else "")
        notes.append(
            f"{len(deleted)} frame(s) pre-annotated but not in the reviewed export (deleted in "
            f"the task since): {shown}. Their uploaded shapes are counted apart ('on deleted "
            "frames'), not as deleted by the annotators"
        )
    return frames


def same_frame_name(file_name: str, frame_name: str) -> bool:
    """Whether the export's image is the frame preannotate named: the same path, possibly under a
    folder the export adds, possibly with an extension the frame name lacks (CVAT names a video's
    frames frame_NNNNNN, and its export writes frame_NNNNNN.PNG)."""
    exported, uploaded = PurePosixPath(file_name), PurePosixPath(frame_name.lstrip("/"))
    for a, b in ((exported, uploaded), (exported.with_suffix(""), uploaded.with_suffix(""))):
        if a == b or str(a).endswith("/" + str(b)):
            return True
    return False


def _renames(pairs: list[Pair], reviewed_labels: set, uploaded_labels: set, notes) -> dict:
    """Uploaded labels the reviewed task no longer has, renamed in CVAT: an untouched ("auto")
    shape keeps its label id, so its new label name is the rename."""
    renamed = {}
    for label in sorted(uploaded_labels - reviewed_labels):
        evidence = Counter(
            p.reviewed.label
            for p in pairs
            if p.uploaded.label == label and p.unchanged and p.reviewed.source == "auto"
        )
        if len(evidence) == 1:
            (new,) = evidence
            renamed[label] = new
            notes.append(
                f"label {label!r} was renamed {new!r} in CVAT after the upload (its untouched "
                f"shapes carry the new name): counted as {new!r}"
            )
        elif evidence:
            notes.append(
                f"label {label!r} is not in the reviewed task, and its untouched shapes now carry "
                f"several labels ({dict(evidence)}): counted as relabelled"
            )
        else:
            notes.append(
                f"label {label!r} is not in the reviewed task (renamed or deleted in CVAT), and "
                "none of its shapes was kept untouched to tell its new name: its shapes count "
                "as relabelled or deleted"
            )
    return renamed


# --- the entry point ---------------------------------------------------------------------------


def check_reviewed(reviewed: Dataset, reviewed_dir: Path) -> None:
    """A reviewed export that can be measured: frames numbered, shapes with their source."""
    if not reviewed.images:
        raise ValueError(
            f"{reviewed_dir}: the reviewed export holds no frames (an empty task, or all its "
            "frames deleted): nothing to measure"
        )
    unnumbered = [im["file_name"] for im in reviewed.images if "frame" not in im]
    without_source = [a["id"] for a in reviewed.annotations if "source" not in a]
    if unnumbered or (reviewed.annotations and len(without_source) == len(reviewed.annotations)):
        what = "frame numbers" if unnumbered else "the source of its shapes"
        raise ValueError(
            f"{reviewed_dir}: the reviewed export carries no {what}, so what the annotators kept, "
            f"changed or drew cannot be told apart. Export the task as {REVIEW_FORMAT!r} "
            f"(export-annotations: annotation_format={REVIEW_FORMAT!r}); COCO, YOLO, VOC and "
            "the other formats do not record a shape's source"
        )


def run_measure_corrections(
    predictions_dir: str,
    reviewed_dir: str,
    *,
    report_path: str,
    report_html_path: str,
    max_frames_drawn: int = 12,
) -> MeasureCorrectionsResult:
    """Measure what the review did to the uploaded predictions; write the Markdown report to
    report_path and the HTML report (the most corrected frames drawn, before and after) to
    report_html_path. ValueError, saying what to do, for inputs that cannot be measured."""
    from .report import render_html, render_markdown

    if int(max_frames_drawn) < 0:
        raise ValueError(f"max_frames_drawn must be 0 or more, not {max_frames_drawn}")
    task, uploaded = read_uploaded(Path(predictions_dir))
    reviewed = Dataset.load(reviewed_dir, check_files=False)
    check_reviewed(reviewed, Path(reviewed_dir))
    if not uploaded and not reviewed.annotations:
        raise ValueError(
            f"nothing to measure: preannotate uploaded no shape to task {task.get('task_id')} "
            "and the reviewed task holds none"
        )
    measurement = measure(task, uploaded, reviewed)
    metrics = metrics_of(measurement)
    for path, text in (
        (report_path, render_markdown(measurement)),
        (report_html_path, render_html(measurement, reviewed, int(max_frames_drawn))),
    ):
        write_output(path, text)
    total = measurement.counts()
    logger.info(
        f"task {task.get('task_id')}: {total['uploaded']} uploaded: {total['kept']} kept, "
        f"{total['corrected']} corrected, {total['relabelled']} relabelled, {total['deleted']} "
        f"deleted; {total['added_by_hand']} added by hand"
    )
    metadata = {
        "task_id": task.get("task_id"),
        "cvat_url": task.get("cvat_url", ""),
        "frames": len(measurement.frames),
        "classes": measurement.classes,
        "renamed_labels": measurement.renamed,
        **total,
    }
    # on the report: the Metrics artifact's metadata is its metrics, numbers only
    return MeasureCorrectionsResult({"report": metadata}, metrics)


def metrics_of(m: Measurement) -> dict[str, float]:
    """Counts and rates overall, and each class's share kept: flat, for the KFP Metrics output.
    A rate without a denominator (nothing uploaded, nothing final) is left out."""
    total = m.counts()
    metrics = {name: float(value) for name, value in total.items() if name != "final_kept"}
    metrics.update(_rates(total))
    ious = m.corrected_ious()
    if ious:
        metrics["corrected_iou_median"] = round(statistics.median(ious), 4)
    for label in m.classes:
        share = _rates(m.counts(label)).get("kept_share")
        if share is not None:
            metrics[f"kept_share_{label}"] = share
    return metrics


def _rates(counts: dict) -> dict[str, float]:
    rates = {}
    judged = counts["uploaded"] - counts["on_deleted_frames"]  # the shapes a person could review
    if judged:
        for name in ("kept", "corrected", "relabelled", "deleted"):
            rates[f"{name}_rate"] = round(counts[name] / judged, 4)
    if counts["final"]:
        rates["kept_share"] = round(counts["final_kept"] / counts["final"], 4)
        rates["added_share"] = round(counts["added_by_hand"] / counts["final"], 4)
    return rates
