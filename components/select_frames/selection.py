"""What to label next: rank a CVAT task's (or a folder's) unannotated frames by how much a model
would learn from them, and optionally put the top ones in a new CVAT task.

The steps: the frames to consider (`_CvatSource` reuses preannotate's `list_frames` and chunked
frame fetching and leaves out frames that already carry annotations; `_FolderSource` walks a
folder of images), each frame's uncertainty under the model (`frame_uncertainty`) and a cheap
embedding (`embed`), the selection (`select_diverse`), ranking.json and the Markdown report, then
the CVAT task holding the selection (`ensure_selection_task`, idempotent by a deterministic name).

Uncertainty of one frame: about how many of its objects the model is unsure. The detections are
grouped by object (class-agnostic, IoU >= 0.5: NMS runs per class, so one object can carry a box
of each class); a group whose best box scores at least half its class threshold t is an object
(fainter ones are background more likely than objects, and a detector gives out dozens). Each
object counts the larger of two signs, each 0 to 1:
- near the threshold: its score s close to t (1 at t, falling linearly to 0 at scores 0 and 1):
  the model cannot tell whether the object is there;
- class confusion: the best box of another class over it, that box's score over s (1 when they
  tie): the model cannot tell what it is.
To the sum over the objects adds nothing confident: when no detection reaches its threshold,
1 - best s/t (1 for a frame without any detection): the frame is empty or its objects are missed.
A frame with one object at the threshold scores 1, with three such objects 3, a frame whose
objects are all certain near 0. A sum rather than the largest sign: a young model is unsure of
something in nearly every frame, and the largest sign saturates at 1 everywhere (measured on
the shapes benchmark: 90% of the pool above 0.87); the sum still tells the frames apart.

Diversity: a frame's embedding is its grayscale image shrunk to 16x16, centred and scaled to unit
length, so that the distance of two frames is 0 for identical pictures, about 1.4 for unrelated
ones, and small for near-duplicates (consecutive video frames, bursts, the same scene again)
whatever their brightness. Why not the model's own features: the exported signature does not
give them out, and the frames that waste annotation effort are pixel-level near-duplicates, which
16x16 pictures catch at no cost (a 10,000-frame task embeds in seconds). Selection is greedy
uncertainty-weighted max-min (k-center): each pick maximises
`(uncertainty + 0.05) * min(1, distance to the nearest earlier pick / diversity_radius)`, so a frame
within `diversity_radius` of a pick is discounted in proportion, frames farther away compete on
uncertainty alone, and certain frames (the 0.05) still fill the list when the uncertain ones run
out. diversity_radius 0 turns diversity off (pure uncertainty order).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from cvat_sdk import models
from PIL import Image, ImageOps

from ..common.cvat_client import (
    CvatCaller,
    CvatClient,
    check_cvat_url,
    connect,
    credentials_from_env,
)
from ..common.redaction import redact_url
from ..common.report import markdown_cell, write_output
from ..inference.thresholds import MODEL_THRESHOLDS, resolve_score_thresholds

logger = logging.getLogger(__name__)

RANKING_FILE = "ranking.json"
THUMBNAILS_DIR = "thumbnails"
FRAMES = ("unannotated", "all")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EMBEDDING_SIDE = 16
THUMBNAIL_WIDTH = 160
CERTAIN_WEIGHT = 0.05  # what a certain frame still weighs, so that it can fill the list
CONFUSION_IOU = 0.5
TASK_NAME_PREFIX = "select_frames"
# A label type CVAT takes in a new task's label spec as read from another task; skeletons
# need their sublabels and SVG, which a copy would have to rebuild: they are left out (reported).
COPIED_LABEL_TYPES = ("any", "rectangle", "polygon", "polyline", "points", "ellipse", "cuboid")
COPIED_LABEL_TYPES += ("mask", "tag")


@dataclass(frozen=True)
class SelectFramesResult:
    metadata: dict[str, dict]  # output name ("ranking") -> that artifact's metadata


@dataclass(frozen=True)
class Options:
    task_id: int | None  # the CVAT task to select from, or None for a folder
    top_n: int
    score_threshold: float
    frames: str
    diversity_radius: float
    create_task: bool
    project_id: int | None


def check_options(
    cvat_url: str,
    task_id: str | int,
    images_dir: str,
    top_n: int,
    score_threshold: float,
    frames: str,
    diversity_radius: float,
    create_task: bool,
    project_id: str | int,
) -> Options:
    """The options checked; ValueError saying what is wrong otherwise."""
    task_text = str(task_id or "").strip()
    if bool(task_text) == bool(str(images_dir or "").strip()):
        raise ValueError(
            "give either task_id (a CVAT task whose frames to rank) or images_dir (a folder of "
            f"images), not {'both' if task_text else 'neither'}"
        )
    if task_text and (not re.fullmatch(r"\d+", task_text) or int(task_text) <= 0):
        raise ValueError(f"task_id must be a positive integer (a CVAT task id), not {task_id!r}")
    needs_cvat = bool(task_text) or create_task
    if needs_cvat and not str(cvat_url or "").strip():
        what = "task_id" if task_text else "create_task"
        raise ValueError(
            f"cvat_url is empty but {what} needs CVAT: give the server, e.g. "
            "https://cvat.example.com"
        )
    if needs_cvat:
        check_cvat_url(cvat_url)
    if int(top_n) != top_n or top_n < 1:
        raise ValueError(f"top_n must be a positive integer (frames to select), not {top_n!r}")
    if float(score_threshold) != MODEL_THRESHOLDS and not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(
            f"score_threshold must be in [0, 1], or {MODEL_THRESHOLDS:g} for the model's "
            f"calibrated per-class thresholds, not {score_threshold}"
        )
    if frames not in FRAMES:
        raise ValueError(f"frames must be one of {', '.join(map(repr, FRAMES))}, not {frames!r}")
    if float(diversity_radius) < 0:
        raise ValueError(f"diversity_radius must be >= 0 (0: no diversity), not {diversity_radius}")
    project_text = str(project_id or "").strip()
    if project_text and (not re.fullmatch(r"\d+", project_text) or int(project_text) <= 0):
        raise ValueError(f"project_id must be a positive integer or empty, not {project_id!r}")
    return Options(
        int(task_text) if task_text else None,
        int(top_n),
        float(score_threshold),
        frames,
        float(diversity_radius),
        bool(create_task),
        int(project_text) if project_text else None,
    )


def run_select_frames(
    model_dir: str,
    ranking_dir: str,
    report_path: str,
    cvat_url: str = "",
    task_id: str = "",
    images_dir: str = "",
    top_n: int = 50,
    score_threshold: float = MODEL_THRESHOLDS,
    frames: str = "unannotated",
    diversity_radius: float = 0.5,
    create_task: bool = False,
    project_id: str = "",
    *,
    predictor=None,
    retries: int = 5,
    retry_delay: float = 2.0,
    poll_interval: float = 2.0,
) -> SelectFramesResult:
    """Rank the frames, select top_n, write ranking.json (with thumbnails/) to ranking_dir and
    the Markdown report to report_path; with create_task, put the selection in a CVAT task.

    `predictor` (an inference Predictor) replaces loading the model from model_dir (a trained
    Model or an exported model); `poll_interval` is how often CVAT is asked whether the new
    task's data is ready. Raises ValueError for bad options or input, CvatServerError for
    the server's refusals.
    """
    options = check_options(
        cvat_url,
        task_id,
        images_dir,
        top_n,
        score_threshold,
        frames,
        diversity_radius,
        create_task,
        project_id,
    )
    credentials = None
    if options.task_id is not None or options.create_task:
        credentials, credentials_source = credentials_from_env()  # before the model loads
    folder = _FolderSource(Path(images_dir)) if options.task_id is None else None
    if predictor is None:
        from ..inference.predictor import load_predictor

        predictor = load_predictor(model_dir)
    resolved = resolve_score_thresholds(
        model_dir, predictor.label_map.names, options.score_threshold
    )
    thresholds = resolved.by_label
    ranking_dir = Path(ranking_dir)
    if credentials is None:
        source = folder
        ranked = _rank(source, predictor, thresholds, options)
        cvat_task = None
    else:
        call = CvatCaller(cvat_url, credentials_source, retries, retry_delay, logger.info)
        with CvatClient(cvat_url, call, poll_interval, timeout=3600) as client:
            connect(client, call, credentials)
            source = folder or _CvatSource(call, client, options.task_id, options.frames)
            ranked = _rank(source, predictor, thresholds, options)
            cvat_task = None
            if options.create_task:
                cvat_task = ensure_selection_task(call, client, source, ranked, predictor, options)
    outcome = _Outcome(
        redact_url(cvat_url) if cvat_url else "",
        options,
        source.describe(),
        predictor.description,
        resolved,
        ranked,
        cvat_task,
    )
    write_ranking(ranking_dir, outcome)
    write_output(report_path, _report_markdown(outcome))
    return SelectFramesResult({"ranking": _metadata(outcome)})


# --- what a frame tells about the model ---------------------------------------------------------


@dataclass(frozen=True)
class FrameUncertainty:
    uncertainty: float  # the sum over the frame's objects, plus nothing_confident
    near_threshold: float  # the largest of each sign, for the reason
    confusion: float
    nothing_confident: float
    reason: str  # the largest sign, in words
    objects: int  # plausible objects: boxes (one per object) scoring half their threshold or more
    detections: int
    confident: int  # detections reaching their class threshold


def near_threshold(score: float, threshold: float) -> float:
    """1 at the threshold, falling linearly to 0 at scores 0 and 1."""
    if threshold <= 0.0 or threshold >= 1.0:  # every score (0) or none (1) is kept
        return 1.0 - abs(score - threshold)
    if score <= threshold:
        return score / threshold
    return (1.0 - score) / (1.0 - threshold)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [ymin, xmin, ymax, xmax] boxes."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[3], b[3]) - max(a[1], b[1])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def objects_of(detections) -> list[list[int]]:
    """The detections grouped by object, class-agnostic, each group best score first: in score
    order, a detection joins the first group whose leading box it overlaps by IoU >= 0.5 (NMS
    runs per class, so one object can carry a box of each class)."""
    groups: list[list[int]] = []
    for k in np.argsort(-np.asarray(detections.scores), kind="stable"):
        for group in groups:
            if box_iou(detections.boxes[group[0]], detections.boxes[k]) >= CONFUSION_IOU:
                group.append(int(k))
                break
        else:
            groups.append([int(k)])
    return groups


def frame_uncertainty(detections, thresholds: Mapping[str, float]) -> FrameUncertainty:
    """How unsure the model is about one frame (see the module docstring)."""
    scores = [float(s) for s in detections.scores]
    names = list(detections.class_names)
    limits = [thresholds[name] for name in names]
    confident = sum(s >= t for s, t in zip(scores, limits, strict=True))
    total, objects = 0.0, 0
    near, near_why, confusion, confusion_why = 0.0, "", 0.0, ""
    for group in objects_of(detections):
        lead = group[0]
        score, limit, name = scores[lead], limits[lead], names[lead]
        if score < limit / 2:
            continue  # a faint box: background more likely than an object
        objects += 1
        near_value = near_threshold(score, limit)
        rival = next((k for k in group[1:] if names[k] != name), None)
        confusion_value = scores[rival] / score if rival is not None and score > 0 else 0.0
        total += max(near_value, confusion_value)
        if near_value > near:
            near, near_why = near_value, f"{name} at {score:.2f} (threshold {limit:.2f})"
        if confusion_value > confusion:
            confusion = confusion_value
            confusion_why = (
                f"{name} {score:.2f} or {names[rival]} {scores[rival]:.2f} on one object"
            )
    nothing, nothing_why = 0.0, ""
    if not confident:
        # here every score is below its threshold, so no threshold is 0
        best = max((s / t for s, t in zip(scores, limits, strict=True)), default=0.0)
        nothing = 1.0 - best
        nothing_why = "no detection reaches its threshold" + (
            f" (best {max(scores):.2f})" if scores else " (nothing detected)"
        )
    signs = [
        (near, "near the threshold: " + near_why),
        (confusion, "class confusion: " + confusion_why),
        (nothing, nothing_why),
    ]
    value, why = max(signs, key=lambda sign: sign[0])
    return FrameUncertainty(
        round(total + nothing, 4),
        round(near, 4),
        round(confusion, 4),
        round(nothing, 4),
        why if value > 0 else "certain",
        objects,
        len(scores),
        confident,
    )


def embed(image: np.ndarray) -> np.ndarray:
    """The frame as 16x16 grayscale, centred, unit length (zeros for a flat picture)."""
    side = (EMBEDDING_SIDE, EMBEDDING_SIDE)
    small = Image.fromarray(image).resize(side, Image.Resampling.BOX, reducing_gap=2.0).convert("L")
    vector = np.asarray(small, np.float32).reshape(-1)
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-6 else np.zeros_like(vector)


@dataclass(frozen=True)
class Pick:
    position: int  # index into the frames ranked
    distance: float | None  # to the nearest earlier pick when it was chosen (None: the first)


def select_diverse(
    uncertainty: np.ndarray,
    embeddings: np.ndarray,
    count: int,
    radius: float,
    allowed: np.ndarray | None = None,
    covered: np.ndarray | None = None,
) -> list[Pick]:
    """Greedy uncertainty-weighted max-min selection of `count` frames (see the module
    docstring) among the `allowed` ones (default all); `covered` frames count as picked
    already (their near-duplicates are discounted) without being returned. Ties go to the
    earlier frame."""
    weight = np.asarray(uncertainty, np.float64) + CERTAIN_WEIGHT
    total = len(weight)
    nearest = np.full(total, np.inf)
    for position in np.flatnonzero(covered if covered is not None else np.zeros(total, bool)):
        nearest = np.minimum(nearest, np.linalg.norm(embeddings - embeddings[position], axis=1))
    taken = np.zeros(total, bool) if allowed is None else ~np.asarray(allowed, bool)
    picks = []
    for _ in range(min(count, int((~taken).sum()))):
        if radius > 0:
            spread = np.minimum(nearest / radius, 1.0)
        else:
            spread = np.ones(total)
        gain = np.where(taken, -1.0, weight * spread)
        best = int(np.argmax(gain))
        distance = None if np.isinf(nearest[best]) else round(float(nearest[best]), 4)
        picks.append(Pick(best, distance))
        taken[best] = True
        distance = np.linalg.norm(embeddings - embeddings[best], axis=1)
        nearest = np.minimum(nearest, distance)
    return picks


# --- where the frames come from -----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    key: str  # how the report names it: "frame 12" or a path in the folder
    name: str  # the CVAT frame name or the file's path in the folder
    index: int | None  # the CVAT frame index


class _CvatSource:
    """A CVAT task's frames: preannotate's frame list and download, annotated ones left out."""

    def __init__(self, call: CvatCaller, client: CvatClient, task_id: int, frames: str):
        """With frames="unannotated", frames already copied into a selection task of an earlier
        run (`earlier`) are being annotated there: `_rank` does not pick them again."""
        from ..preannotate.preannotate import list_frames

        self.call, self.task_id, self.resource = call, task_id, f"task {task_id}"
        resource = self.resource
        self.task = call(
            f"read {resource}", partial(client.tasks.retrieve, task_id), resource=resource
        )
        meta = call(f"read the frames of {resource}", self.task.get_meta, resource=resource)
        self.frames = list_frames(self.task, meta, resource)
        annotated = set()
        if frames == "unannotated":
            annotations = call(
                f"read the annotations of {resource}", self.task.get_annotations, resource=resource
            )
            annotated = annotated_frames(annotations)
        self.annotated = sum(f.index in annotated for f in self.frames.frames)
        self.earlier = earlier_selections(call, client, task_id) if frames == "unannotated" else ()
        self._by_index = {f.index: f for f in self.frames.frames}
        self.candidates = [
            Candidate(f"frame {f.index}", f.name, f.index)
            for f in self.frames.frames
            if f.index not in annotated
        ]
        logger.info(
            f"{resource} ({self.task.name!r}): {len(self.candidates)} frame(s) to rank"
            + (f", {self.annotated} annotated frame(s) left out" if self.annotated else "")
            + (f", {self.frames.deleted} deleted" if self.frames.deleted else "")
            + (
                f"; earlier selection task(s) {', '.join(str(e.task_id) for e in self.earlier)}"
                if self.earlier
                else ""
            )
        )

    def images(self) -> Iterator[tuple[Candidate, np.ndarray]]:
        """The candidates' images as preannotate fetches frames: in CVAT's chunks (an image
        task), a background thread fetching and decoding ahead of the model."""
        from ..preannotate.preannotate import _frame_images, _prefetched

        by_index = {c.index: c for c in self.candidates}
        wanted = dataclasses.replace(self.frames, frames=tuple(self._by_index[i] for i in by_index))
        with contextlib.closing(_prefetched(_frame_images(self.call, wanted))) as fetched:
            for frame, image in fetched:
                yield by_index[frame.index], image

    def file_bytes(self, candidate: Candidate) -> tuple[str, bytes]:
        """The frame's original file (as CVAT serves it at original quality), and a file name."""
        what = f"download frame {candidate.index} of {self.resource}"
        get = partial(self.task.get_frame, candidate.index, quality="original")
        data = self.call(what, get, resource=self.resource).read()
        return _file_name(candidate.name, data), data

    @property
    def project_id(self) -> int | None:
        return self.task.project_id or None

    def labels(self):
        return self.call(
            f"read the labels of {self.resource}", self.task.get_labels, resource=self.resource
        )

    def describe(self) -> dict:
        return {
            "kind": "cvat_task",
            "task_id": self.task_id,
            "task_name": self.task.name,
            "frames": len(self.frames.frames) + self.frames.deleted,
            "deleted": self.frames.deleted,
            "annotated": self.annotated,
            "candidates": len(self.candidates),
            "earlier_selection_tasks": [e.task_id for e in self.earlier],
        }


@dataclass(frozen=True)
class EarlierSelection:
    task_id: int
    frames: frozenset[int]  # the source task's frame indices it holds


SELECTED_FRAME_NAME = re.compile(r"^\d+_frame(\d+)_")  # _upload_names' "<rank>_frame<index>_..."


def earlier_selections(call: CvatCaller, client: CvatClient, task_id: int):
    """The selection tasks earlier runs made from task `task_id` (by their name), with the
    frames they hold; a task without frames yet (a run stopped before uploading) holds none."""
    pattern = re.compile(rf"^{re.escape(TASK_NAME_PREFIX)}: \d+ frames of task {task_id} \(")
    # CVAT's `search` matches each word of it somewhere in the name (or owner, ...): a superset
    listed = call(
        f"look for earlier selections from task {task_id}",
        partial(client.tasks.list, search=f"frames of task {task_id} ("),
        resource="tasks",
    )
    found = []
    for task in sorted(listed, key=lambda t: t.id):
        if not pattern.match(task.name) or not (task.size or 0):
            continue
        resource = f"task {task.id}"
        meta = call(f"read the frames of {resource}", task.get_meta, resource=resource)
        indices = {
            int(match.group(1))
            for frame in meta.frames or []
            if (match := SELECTED_FRAME_NAME.match(frame.name))
        }
        found.append(EarlierSelection(task.id, frozenset(indices)))
    return tuple(found)


def annotated_frames(annotations) -> set[int]:
    """Frames holding a shape or a tag, or covered by a track (from its first to its last
    keyframe; a track that ends with an `outside` keyframe stops there)."""
    frames = {s.frame for s in annotations.shapes} | {t.frame for t in annotations.tags}
    for track in annotations.tracks:
        keyframes = sorted(track.shapes, key=lambda s: s.frame)
        if keyframes:
            last = keyframes[-1]
            end = last.frame - 1 if last.outside else last.frame
            frames.update(range(keyframes[0].frame, end + 1))
    return frames


class _FolderSource:
    """Every image file under a folder (recursively), in path order."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise ValueError(f"images_dir {root} is not a folder")
        self.root = root
        paths = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise ValueError(
                f"images_dir {root} holds no images ({', '.join(IMAGE_SUFFIXES)}, searched "
                "recursively)"
            )
        names = [p.relative_to(root).as_posix() for p in paths]
        self.candidates = [Candidate(name, name, None) for name in names]
        self.unreadable: dict[str, str] = {}
        self.project_id = None
        self.earlier = ()
        logger.info(f"{root}: {len(self.candidates)} image(s) to rank")

    def images(self) -> Iterator[tuple[Candidate, np.ndarray]]:
        for candidate in self.candidates:
            try:
                with Image.open(self.root / candidate.name) as image:
                    picture = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
            except Exception as error:  # counted and reported: one bad file spoils no ranking
                self.unreadable[candidate.name] = str(error)
                logger.warning(f"{self.root / candidate.name}: not a readable image ({error})")
                continue
            yield candidate, picture

    def file_bytes(self, candidate: Candidate) -> tuple[str, bytes]:
        data = (self.root / candidate.name).read_bytes()
        return _file_name(candidate.name, data), data

    def labels(self):
        return None

    def describe(self) -> dict:
        return {
            "kind": "folder",
            "images_dir": str(self.root),
            "candidates": len(self.candidates),
            "unreadable": dict(self.unreadable),
        }


def _file_name(name: str, data: bytes) -> str:
    """A flat file name for the frame: its base name, with the image's extension if it has none
    (a video frame)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1] or "frame"
    if Path(base).suffix.lower() in IMAGE_SUFFIXES:
        return base
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "png").lower()
    except Exception:
        kind = "png"
    return f"{base}.{'jpg' if kind == 'jpeg' else kind}"


# --- ranking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedFrame:
    candidate: Candidate
    score: FrameUncertainty
    width: int
    height: int
    thumbnail: bytes  # JPEG, THUMBNAIL_WIDTH wide
    rank: int | None = None  # 1.. for the selected frames
    distance_to_earlier_pick: float | None = None
    nearest_pick: int | None = None  # the rank of the selected frame nearest to it
    nearest_pick_distance: float | None = None
    in_selection_task: int | None = None  # an earlier selection task holding it: not picked


@dataclass(frozen=True)
class _Ranked:
    frames: tuple[RankedFrame, ...]  # every frame ranked, in source order
    selected: tuple[RankedFrame, ...]  # rank order


def _rank(source, predictor, thresholds: Mapping[str, float], options: Options) -> _Ranked:
    scored, embeddings = [], []
    total = len(source.candidates)
    if not total:
        raise ValueError(
            f"{source.describe().get('task_name') or 'the source'}: no frame to rank "
            '(every frame is annotated or deleted); use frames="all" to rank annotated frames '
            "too"
        )
    for n, (candidate, image) in enumerate(source.images(), start=1):
        score = frame_uncertainty(predictor.predict(image), thresholds)
        embeddings.append(embed(image))
        height, width = image.shape[:2]
        scored.append(RankedFrame(candidate, score, width, height, _thumbnail(image)))
        if n % 50 == 0 or n == total:
            logger.info(f"ranked {n} of {total} frame(s)")
    if not scored:
        raise ValueError("no frame could be read: nothing to rank (see the log for each file)")
    vectors = np.stack(embeddings)
    uncertainty = np.array([f.score.uncertainty for f in scored])
    picks, held_by = _select_past_earlier(source.earlier, scored, uncertainty, vectors, options)
    rank_of = {pick.position: (rank, pick) for rank, pick in enumerate(picks, start=1)}
    picked = np.array([pick.position for pick in picks])
    distances = np.linalg.norm(vectors[:, None, :] - vectors[None, picked, :], axis=2)
    frames = []
    for position, frame in enumerate(scored):
        nearest = int(np.argmin(distances[position]))
        rank, pick = rank_of.get(position, (None, None))
        others = distances[position].copy()
        if rank is not None:
            others[rank - 1] = np.inf  # its nearest pick other than itself
            nearest = int(np.argmin(others)) if len(others) > 1 else nearest
        has_other = rank is None or len(picks) > 1
        frames.append(
            RankedFrame(
                frame.candidate,
                frame.score,
                frame.width,
                frame.height,
                frame.thumbnail,
                rank,
                pick.distance if pick else None,
                nearest + 1 if has_other else None,
                round(float(others[nearest]), 4) if has_other else None,
                held_by.get(position),
            )
        )
    selected = sorted((f for f in frames if f.rank is not None), key=lambda f: f.rank)
    return _Ranked(tuple(frames), tuple(selected))


def _select_past_earlier(earlier, scored, uncertainty, vectors, options: Options):
    """The picks, leaving out the frames earlier selection tasks hold (and discounting their
    near-duplicates: those frames are being annotated), and which task holds which frame
    (position -> task id).

    Such a task may be this selection's own, made by an earlier attempt of this run (a retried
    step): it is, when leaving out only the other tasks' frames picks exactly its frames. Then
    those picks stand (and ensure_selection_task finds the task by its name)."""
    position_of = {f.candidate.index: p for p, f in enumerate(scored)}
    held_by = {position_of[i]: e.task_id for e in earlier for i in e.frames if i in position_of}
    for own in sorted(earlier, key=lambda e: e.task_id, reverse=True):
        others = {p for p, task_id in held_by.items() if task_id != own.task_id}
        allowed = np.array([p not in others for p in range(len(scored))])
        picks = select_diverse(
            uncertainty, vectors, options.top_n, options.diversity_radius, allowed, ~allowed
        )
        if {scored[pick.position].candidate.index for pick in picks} == set(own.frames):
            logger.info(f"the selection is task {own.task_id}'s, made by an earlier attempt")
            return picks, {p: t for p, t in held_by.items() if t != own.task_id}
    allowed = np.array([p not in held_by for p in range(len(scored))])
    if held_by:
        logger.info(f"{len(held_by)} frame(s) in earlier selection tasks left out")
    radius = options.diversity_radius
    picks = select_diverse(uncertainty, vectors, options.top_n, radius, allowed, ~allowed)
    if not picks:
        raise ValueError(
            "every frame to rank is already in an earlier selection task (tasks "
            f"{', '.join(str(e.task_id) for e in earlier)}): nothing left to select"
        )
    return picks, held_by


def _thumbnail(image: np.ndarray) -> bytes:
    picture = Image.fromarray(image)
    height = max(1, round(picture.height * THUMBNAIL_WIDTH / picture.width))
    out = io.BytesIO()
    size = (THUMBNAIL_WIDTH, height)
    picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).save(out, "JPEG", quality=75)
    return out.getvalue()


# --- the CVAT task holding the selection -------------------------------------------------------


@dataclass(frozen=True)
class SelectionTask:
    task_id: int
    name: str
    created: bool  # False: found from an earlier run
    frames: int
    matches: bool  # whether it holds this run's selection (by frame names)
    note: str = ""


def selection_task_name(source_description: dict, selected: tuple[RankedFrame, ...]) -> str:
    """Deterministic: the source and a digest of the selected frames, so that a rerun of the same
    selection finds its task, and another selection gets a task of its own."""
    keys = "\n".join(f.candidate.name if f.candidate.index is None else str(f.candidate.index)
                     for f in selected)  # fmt: skip
    if source_description["kind"] == "cvat_task":
        where = f"task {source_description['task_id']}"
        keys = f"task {source_description['task_id']}\n{keys}"
    else:
        where = Path(source_description["images_dir"]).name or "folder"
    digest = hashlib.sha256(keys.encode("utf-8")).hexdigest()[:10]
    return f"{TASK_NAME_PREFIX}: {len(selected)} frames of {where} ({digest})"


def ensure_selection_task(
    call: CvatCaller, client: CvatClient, source, ranked: _Ranked, predictor, options: Options
) -> SelectionTask:
    """The CVAT task holding the selected frames: found by its name, or created (labels from
    `project_id`, else the source task's project, else copied from the source task, else the
    model's), then given the frames' original files in rank order. A task found without data
    (a run stopped between creating it and uploading) gets its frames now."""
    name = selection_task_name(source.describe(), ranked.selected)
    file_names = _upload_names(source, ranked.selected)
    project_id = options.project_id or source.project_id
    spec = None

    def find_or_create():
        # One action, so that a retried creation looks again first and never makes a second task.
        nonlocal spec
        found = client.tasks.list(name=name)  # CVAT's `name` filter is an exact match
        found = sorted((t for t in found if t.name == name), key=lambda t: t.id)
        if found:
            if len(found) > 1:
                ids = ", ".join(str(t.id) for t in found)
                logger.warning(
                    f"{len(found)} tasks are named {name!r} ({ids}); using {found[0].id}"
                )
            return found[0], False
        spec = spec or _task_spec(name, project_id, source, predictor)
        return client.tasks.create(spec), True

    task, created = call(f"find or create the task {name!r}", find_or_create)
    if created:
        logger.info(f"created task {task.id} ({name!r})")
    else:
        logger.info(f"task {task.id} ({name!r}) exists: not creating another")
    resource = f"task {task.id}"
    note = ""
    if not (task.size or 0):
        _upload_frames(call, task, source, ranked.selected, file_names)
        task = call(f"read {resource}", partial(client.tasks.retrieve, task.id), resource=resource)
        if not created:
            note = "found without frames (an earlier run stopped before uploading): uploaded now"
    meta = call(f"read the frames of {resource}", task.get_meta, resource=resource)
    held = [frame.name for frame in meta.frames or []]
    # by stem: a video frame's extension is known only once its file is downloaded
    matches = sorted(Path(n).stem for n in held) == sorted(Path(n).stem for n in file_names)
    if not matches:
        note = (
            f"holds {len(held)} frame(s) that are not this run's selection (named alike by "
            "chance, or changed in CVAT): compare before annotating"
        )
        logger.warning(f"{resource} ({name!r}) {note}")
    return SelectionTask(task.id, name, created, len(held), matches, note)


def _upload_names(source, selected) -> list[str]:
    """Upload file names, rank-prefixed: CVAT sorts a task's images by name, so the frames keep
    the rank order, and two frames of the same base name stay apart."""
    names = []
    for frame in selected:
        base = frame.candidate.name.replace("\\", "/").rsplit("/", 1)[-1] or "frame"
        if frame.candidate.index is not None:
            base = f"frame{frame.candidate.index:06d}_{base}"
        names.append(f"{frame.rank:04d}_{base}")
    return names


def _task_spec(name: str, project_id: int | None, source, predictor) -> models.TaskWriteRequest:
    if project_id:
        return models.TaskWriteRequest(name=name, project_id=project_id)
    labels = source.labels()
    if labels is None:  # a folder: the model's classes
        specs = [models.PatchedLabelRequest(name=n, type="any") for n in predictor.label_map.names]
    else:
        specs, left_out = [], []
        for label in labels:
            if getattr(label, "has_parent", False):
                continue
            if str(label.type) not in COPIED_LABEL_TYPES:
                left_out.append(f"{label.name!r} ({label.type})")
                continue
            attributes = [
                models.AttributeRequest(
                    name=a.name,
                    mutable=a.mutable,
                    input_type=a.input_type,
                    default_value=a.default_value,
                    values=list(a.values),
                )
                for a in label.attributes or []
            ]
            specs.append(
                models.PatchedLabelRequest(
                    name=label.name, color=label.color, type=label.type, attributes=attributes
                )
            )
        if left_out:
            logger.warning(
                f"labels not copied to the new task (give project_id to share the project's "
                f"labels instead): {', '.join(left_out)}"
            )
    return models.TaskWriteRequest(name=name, labels=specs)


def _upload_frames(call, task, source, selected, file_names) -> None:
    resource = f"task {task.id}"
    with tempfile.TemporaryDirectory(prefix="select_frames_") as tmp:
        paths = []
        for frame, upload_name in zip(selected, file_names, strict=True):
            _, data = source.file_bytes(frame.candidate)
            path = Path(tmp) / _with_suffix(upload_name, data)
            path.write_bytes(data)
            paths.append(path)
        upload = partial(
            task.upload_data,
            paths,
            params={"image_quality": 95, "sorting_method": "lexicographical"},
            wait_for_completion=True,
        )
        call(f"upload {len(paths)} frame(s) to {resource}", upload, resource=resource)
    logger.info(f"{resource}: {len(paths)} frame(s) uploaded")


def _with_suffix(name: str, data: bytes) -> str:
    return name if Path(name).suffix.lower() in IMAGE_SUFFIXES else _file_name(name, data)


# --- telling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    server: str  # the CVAT URL, redacted ("" for a folder without CVAT)
    options: Options
    source: dict  # the source's description
    model: dict  # the predictor's description
    thresholds: Any  # inference.thresholds.ScoreThresholds: each label's, and where from
    ranked: _Ranked
    cvat_task: SelectionTask | None


def _frame_json(frame: RankedFrame) -> dict:
    entry = {
        "frame": frame.candidate.index,
        "name": frame.candidate.name,
        "width": frame.width,
        "height": frame.height,
        **asdict(frame.score),
        "rank": frame.rank,
    }
    if frame.candidate.index is None:
        del entry["frame"]
    if frame.rank is not None:
        entry["distance_to_earlier_pick"] = frame.distance_to_earlier_pick
        entry["thumbnail"] = f"{THUMBNAILS_DIR}/{frame.rank:04d}.jpg"
    entry["nearest_pick"] = frame.nearest_pick
    entry["nearest_pick_distance"] = frame.nearest_pick_distance
    if frame.in_selection_task is not None:
        entry["in_selection_task"] = frame.in_selection_task
    return entry


def write_ranking(output_dir: Path, outcome: _Outcome) -> Path:
    """ranking.json: the options, the selection in rank order and every frame ranked; the
    selected frames' thumbnails under thumbnails/."""
    o, ranked = outcome.options, outcome.ranked
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / THUMBNAILS_DIR).mkdir(exist_ok=True)
    for frame in ranked.selected:
        (output_dir / THUMBNAILS_DIR / f"{frame.rank:04d}.jpg").write_bytes(frame.thumbnail)
    document = {
        "source": outcome.source,
        "cvat_url": outcome.server or None,
        "model": outcome.model,
        "thresholds": dict(outcome.thresholds.by_label),
        "thresholds_source": outcome.thresholds.source,
        "options": {
            "top_n": o.top_n,
            "score_threshold": o.score_threshold,
            "frames": o.frames,
            "diversity_radius": o.diversity_radius,
            "embedding": f"grayscale {EMBEDDING_SIDE}x{EMBEDDING_SIDE}, centred, unit length",
        },
        "selected": [_frame_json(f) for f in ranked.selected],
        "frames": [_frame_json(f) for f in ranked.frames],
        "cvat_task": asdict(outcome.cvat_task) if outcome.cvat_task else None,
    }
    path = output_dir / RANKING_FILE
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    logger.info(f"{len(ranked.selected)} frame(s) selected of {len(ranked.frames)}: {path}")
    return path


def _mean_uncertainty(frames) -> float:
    return float(np.mean([f.score.uncertainty for f in frames]))


def _reasons(frames) -> Counter:
    kinds = Counter()
    for frame in frames:
        kinds[frame.score.reason.split(":")[0].split(" (")[0]] += 1
    return kinds


def _metadata(outcome: _Outcome) -> dict:
    ranked, source = outcome.ranked, outcome.source
    all_u = [f.score.uncertainty for f in ranked.frames]
    picked_u = [f.score.uncertainty for f in ranked.selected]
    metadata = {
        "source": source["kind"],
        "frames_ranked": len(ranked.frames),
        "selected": len(ranked.selected),
        "mean_uncertainty_selected": round(float(np.mean(picked_u)), 4),
        "mean_uncertainty_all": round(float(np.mean(all_u)), 4),
        "top_n": outcome.options.top_n,
        "score_threshold": outcome.options.score_threshold,
        "thresholds_source": outcome.thresholds.source,
        "diversity_radius": outcome.options.diversity_radius,
        "selected_by_reason": dict(sorted(_reasons(ranked.selected).items())),
    }
    if source["kind"] == "cvat_task":
        metadata.update(cvat_url=outcome.server, task_id=source["task_id"])
        metadata["annotated_frames_left_out"] = source["annotated"]
        metadata["in_earlier_selection_tasks"] = sum(
            f.in_selection_task is not None for f in ranked.frames
        )
    if outcome.cvat_task:
        metadata["selection_task_id"] = outcome.cvat_task.task_id
        metadata["selection_task_created"] = outcome.cvat_task.created
    return metadata


def _report_markdown(outcome: _Outcome) -> str:
    o, source, ranked = outcome.options, outcome.source, outcome.ranked
    if source["kind"] == "cvat_task":
        where = f"CVAT task {source['task_id']}"
        considered = (
            f"{len(ranked.frames)} of {source['frames']}"
            + (f"; {source['annotated']} annotated left out" if source["annotated"] else "")
            + (f"; {source['deleted']} deleted left out" if source["deleted"] else "")
        )
        held = sum(f.in_selection_task is not None for f in ranked.frames)
        if held:
            tasks = ", ".join(map(str, source["earlier_selection_tasks"]))
            considered += f"; {held} in earlier selection tasks ({tasks}) not picked again"
    else:
        where = f"`{markdown_cell(source['images_dir'])}`"
        unreadable = len(source["unreadable"])
        considered = f"{len(ranked.frames)}" + (
            f" ({unreadable} unreadable file(s) left out)" if unreadable else ""
        )
    threshold_text = markdown_cell(outcome.thresholds.describe())
    lines = [
        f"# What to label next: {where}",
        "",
        "| | |",
        "|---|---|",
    ]
    if outcome.server:
        lines.append(f"| server | {markdown_cell(outcome.server)} |")
    if source["kind"] == "cvat_task":
        lines.append(f"| task | {source['task_id']} ({markdown_cell(source['task_name'])}) |")
    model = outcome.model
    lines += [
        f"| model | {markdown_cell(model.get('source', '?'))}, preset "
        f"{markdown_cell(model.get('preset') or '?')}, step {model.get('global_step', '?')} |",
        f"| frames ranked | {considered} |",
        f"| selected | {len(ranked.selected)} (top_n {o.top_n}) |",
        f"| class thresholds | {threshold_text} |",
        f"| diversity | radius {o.diversity_radius:g} on {EMBEDDING_SIDE}x{EMBEDDING_SIDE} "
        "grayscale embeddings" + (" (off)" if not o.diversity_radius else "") + " |",
        f"| mean uncertainty | selected {_mean_uncertainty(ranked.selected):.3f}, "
        f"all {_mean_uncertainty(ranked.frames):.3f} |",
    ]
    task = outcome.cvat_task
    if task:
        state = "created" if task.created else "found from an earlier run (not created again)"
        lines.append(
            f"| CVAT task with the selection | {task.task_id} ({markdown_cell(task.name)}): "
            f"{state}, {task.frames} frame(s) |"
        )
        if task.note:
            lines.append(f"| note | {markdown_cell(task.note)} |")
    lines += [
        "",
        "Uncertainty: about how many objects of the frame the model is unsure of. Each object "
        "(boxes scoring at least half their class threshold, grouped by overlap) counts 0 to 1: "
        "its score near the class threshold, or another class's box on it; plus, when no "
        "detection reaches its threshold, 1 - best score / threshold. A frame close to an "
        "earlier pick (distance below the radius) is discounted, so near-duplicates are not all "
        "picked.",
        "",
        "## Selected, in order",
        "",
        "| rank | frame | uncertainty | why | distance to earlier picks | thumbnail |",
        "|---|---|---|---|---|---|",
    ]
    for frame in ranked.selected:
        distance = "—" if frame.distance_to_earlier_pick is None else (
            f"{frame.distance_to_earlier_pick:.2f}"
        )  # fmt: skip
        thumbnail = base64.b64encode(frame.thumbnail).decode("ascii")
        name = frame.candidate.key
        if frame.candidate.index is not None:
            name += f" ({frame.candidate.name})"
        lines.append(
            f"| {frame.rank} | {markdown_cell(name)} | {frame.score.uncertainty:.3f} | "
            f"{markdown_cell(frame.score.reason)} | {distance} | "
            f"![rank {frame.rank}](data:image/jpeg;base64,{thumbnail}) |"
        )
    near_duplicates = sum(
        1
        for f in ranked.frames
        if f.rank is None
        and f.in_selection_task is None
        and f.nearest_pick_distance is not None
        and f.nearest_pick_distance < o.diversity_radius
    )
    lines += [
        "",
        "## All frames ranked, by reason",
        "",
        "| strongest sign | frames | selected |",
        "|---|---|---|",
    ]
    every, chosen = _reasons(ranked.frames), _reasons(ranked.selected)
    for reason, count in every.most_common():
        lines.append(f"| {markdown_cell(reason)} | {count} | {chosen[reason]} |")
    if o.diversity_radius:
        lines += [
            "",
            f"{near_duplicates} frame(s) not selected lie within the radius of a selected one "
            "(near-duplicates). Every frame's scores are in ranking.json.",
        ]
    return "\n".join(lines) + "\n"
