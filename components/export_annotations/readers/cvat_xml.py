"""CVAT for images 1.1 and CVAT for video 1.1: task, job and project exports.

Kept: boxes (rotated ones as 4-point polygons), polygons, masks (CVAT's RLE), ellipses (as
64-point polygons); shapes sharing a `group_id` on one image or frame become one instance;
attributes, `occluded`, and for tracks `track_id` and `keyframe`; each instance's `source`, how
CVAT says it came to be ("manual", "auto", "semi-auto", ...; a group whose shapes differ is
"semi-auto": a person changed what the model drew); each task image's CVAT frame number. Tracks
become one shape per frame: the shapes the file holds are taken as written (CVAT writes every
frame), frames missing between two of them are filled as CVAT interpolates, and a track ends at
an `outside` shape.
Points, polylines, skeletons, cuboids and tags are skipped with a report line each.
A `stop_frame` past the last of the task's `<size>` frames (datumaro writes the size there) is
capped at the last; datumaro's per-subset `<subset>.xml`, whose meta names no subset, gives its
images the subset of its file name.
"""

from __future__ import annotations

import fnmatch
import glob
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ...common.dataset import nearest_pixels, polygons_to_rle, rle_pixels
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder
from . import safe_xml

FORMATS = ("CVAT for images 1.1", "CVAT for video 1.1")
IMAGES_FORMAT, VIDEO_FORMAT = FORMATS
NO_FRAMES = "no frames"  # a file with a <meta> and no <image> or <track>: read as either format
SHAPES = ("box", "polygon", "ellipse", "mask")
# Label types that can only hold what we skip: they make no class.
NO_INSTANCE_LABEL_TYPES = ("points", "polyline", "skeleton", "cuboid", "tag")
ELLIPSE_VERTICES = 64
FRAME_FILE = re.compile(r"frame_(\d+)")
CVAT_FILE_NAME = "annotations.xml"  # what CVAT names it; other names are datumaro's <subset>.xml
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class _Invalid(ValueError):
    """A shape whose numbers cannot be read."""


def detect(root: Path) -> list[str]:
    """The CVAT XML formats of the *.xml files at the top of `root` (reads up to the first
    <image> or <track>)."""
    kinds = {_sniff(path)[0] for path in Path(root).glob("*.xml")}
    kinds = {VIDEO_FORMAT if kind == NO_FRAMES else kind for kind in kinds}
    return [name for name in FORMATS if name in kinds]


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    if format_name is not None and format_name not in FORMATS:
        raise ValueError(f"{format_name!r} is not one of {FORMATS}")
    found = [(path, *_sniff(path)) for path in sorted(root.glob("*.xml"))]
    files = [
        (p, (format_name or VIDEO_FORMAT) if kind == NO_FRAMES else kind)
        for p, kind, _ in found
        if kind and kind in (format_name or kind, NO_FRAMES)
    ]
    if not files:
        seen = [f"{p.name}: {kind or getattr(why, 'reason', why)}" for p, kind, why in found]
        raise ValueError(
            f"{root}: no {format_name or 'CVAT'} annotation XML at the top level "
            f"({'; '.join(seen) or 'no *.xml'})"
        )
    for path, _, unreadable in found:
        if isinstance(unreadable, safe_xml.XmlFileError):
            builder.report.skipped(unreadable.code, f"{unreadable.reason}: not read", path.name)
    for path, kind in files:
        _read_file(_Context(root, path, builder, kind), kind)


def _sniff(path: Path) -> tuple[str | None, str | safe_xml.XmlFileError]:
    """(the CVAT format of the file, or None and why it is not one)."""
    depth, seen_meta = 0, False
    try:
        for event, element in safe_xml.iterparse(path, path.name):
            if event == "end":
                depth -= 1
                continue
            depth += 1
            if depth == 1 and element.tag != "annotations":
                return None, f"not CVAT XML: its root element is <{element.tag}>, not <annotations>"
            if depth == 2:
                seen_meta = seen_meta or element.tag == "meta"
                if element.tag in ("image", "track") and not seen_meta:
                    return None, (
                        f"not CVAT XML: an <{element.tag}> comes before any <meta> (CVAT writes "
                        "<version> and <meta>, the labels and frames, first)"
                    )
                if element.tag == "image":
                    return IMAGES_FORMAT, ""
                if element.tag == "track":
                    return VIDEO_FORMAT, ""
    except safe_xml.XmlFileError as e:
        return None, e
    if not seen_meta:
        return None, "not CVAT XML: <annotations> holds no <meta>"
    return NO_FRAMES, ""  # either format, of a task whose frames are all deleted


# --- the file and its meta -------------------------------------------------------------------


@dataclass
class _Task:
    """A task (or the job) whose frames the file covers."""

    id: str
    start: int
    stop: int
    step: int
    subset: str
    size: tuple[int, int] | None  # (width, height) of the video frames, when the meta says

    def frames(self) -> range:
        return range(self.start, self.stop + 1, self.step)


@dataclass
class _Meta:
    kind: str  # "task", "job" or "project"
    id: str
    mode: str  # "interpolation" for video data
    subset: str
    labels: list[tuple[str, str, str]]  # (name, type, parent)
    attribute_types: dict[tuple[str, str], str]  # (label, attribute) -> input_type
    tasks: dict[str, _Task]  # by the task_id the file's elements give ("" when they give none)


@dataclass
class _Shape:
    """One shape ready for the builder: kind "box" ([x, y, w, h]), "polygon" ([x1, y1, ...]) or
    "mask" ((runs, left, top, width, height): CVAT's RLE over its box, decoded once drawn)."""

    kind: str
    data: object
    label: str
    attributes: dict
    group: int
    location: str
    source: str = ""  # CVAT's "manual", "auto", "semi-auto", ... ("" when the file says none)


@dataclass
class _Context:
    root: Path
    path: Path
    builder: DatasetBuilder
    kind: str  # IMAGES_FORMAT or VIDEO_FORMAT
    meta: _Meta | None = None
    classes: set[str] = field(default_factory=set)
    frames: dict = field(default_factory=lambda: defaultdict(list))  # (task, frame) -> shapes
    _files_by_name: dict[str, list[str]] | None = None  # see files_named

    @property
    def where(self) -> str:
        return self.path.relative_to(self.root).as_posix()

    @property
    def report(self):
        return self.builder.report

    def files_named(self, pattern: str) -> list[str]:
        """The export's files whose name matches `pattern` (a glob), relative to its root: where
        a missing image lies instead. The export is listed once, on the first call."""
        if self._files_by_name is None:
            self._files_by_name = defaultdict(list)
            for path in sorted(self.root.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    relative = path.relative_to(self.root).as_posix()
                    self._files_by_name[path.name].append(relative)
        names = fnmatch.filter(self._files_by_name, pattern)
        return [relative for name in sorted(names) for relative in self._files_by_name[name]]

    def group(self, what: str) -> str:
        """A split group name, kept apart from other sources merged into the same builder."""
        default = self.builder.default_group
        return f"{default}/{what}" if default else what


def _read_file(ctx: _Context, kind: str) -> None:
    for element in _top_elements(ctx):
        if element.tag == "meta":
            ctx.meta = _read_meta(ctx, element)
            _subset_from_file_name(ctx)
            _declare_classes(ctx)
        elif element.tag in ("image", "track"):
            if ctx.meta is None:
                raise ValueError(f"{ctx.where}: <{element.tag}> before the <meta> that says labels")
            if (element.tag == "image") != (kind == IMAGES_FORMAT):
                raise ValueError(f"{ctx.where}: a <{element.tag}> in a {kind} file")
            if element.tag == "image":
                _read_image(ctx, element)
            else:
                _read_track(ctx, element)
    if ctx.meta is None:
        raise ValueError(f"{ctx.where}: no <meta> (labels, frames): not a CVAT 1.1 export")
    if kind == VIDEO_FORMAT:
        _add_video_frames(ctx)


def _top_elements(ctx: _Context):
    """Each child of <annotations>, complete, then dropped from memory."""
    depth, top = 0, None
    for event, element in safe_xml.iterparse(ctx.path, ctx.where):
        if event == "start":
            depth += 1
            top = element if depth == 1 else top
            continue
        depth -= 1
        if depth == 1:
            yield element
            top.clear()


def _read_meta(ctx: _Context, meta: ET.Element) -> _Meta:
    owner = next((meta.find(k) for k in ("project", "task", "job") if meta.find(k) is not None),
                 None)  # fmt: skip
    if owner is None:
        raise ValueError(f"{ctx.where}: <meta> holds no <project>, <task> or <job>")
    labels, types = [], {}
    for label in owner.iterfind("labels/label"):
        name = (label.findtext("name") or "").strip()
        labels.append((name, (label.findtext("type") or "any").strip(),
                       (label.findtext("parent") or "").strip()))  # fmt: skip
        for attribute in label.iterfind("attributes/attribute"):
            key = (name, (attribute.findtext("name") or "").strip())
            types[key] = (attribute.findtext("input_type") or "text").strip()
    if owner.tag == "project":
        tasks = {_text(t, "id"): _read_task(ctx, t) for t in owner.iterfind("tasks/task")}
    else:
        tasks = {"": _read_task(ctx, owner)}
    ids = (_text(owner, k) for k in ("id", "mode", "subset"))
    return _Meta(owner.tag, *ids, labels, types, tasks)


def _read_task(ctx: _Context, task: ET.Element) -> _Task:
    start = int(_text(task, "start_frame") or 0)
    step_text = _text(task, "frame_filter")
    match = re.fullmatch(r"step\s*=\s*(\d+)", step_text)
    if step_text and not (match and int(match.group(1)) > 0):
        raise ValueError(f"{ctx.where}: frame_filter {step_text!r} is not CVAT's 'step=N'")
    step = int(match.group(1)) if match else 1
    size = int(_text(task, "size") or 0)
    last = start + (size - 1) * step
    stop = int(_text(task, "stop_frame") or last)
    if size and stop > last and ctx.kind == VIDEO_FORMAT:
        what = f"{task.tag} {_text(task, 'id')}".strip()
        ctx.report.fixed(
            "stop-frame-past-end",
            f"stop_frame {stop} lies past the last of the {task.tag}'s {size} frame(s) "
            f"({start}..{last} step {step}; <size> {size}): the {task.tag} is read to frame {last}",
            f"{ctx.where}: {what}",
        )
        stop = last
    original = task.find("original_size")
    frame_size = None
    if original is not None and _text(original, "width") and _text(original, "height"):
        frame_size = (int(_text(original, "width")), int(_text(original, "height")))
    return _Task(_text(task, "id"), start, stop, step, _text(task, "subset"), frame_size)


def _subset_from_file_name(ctx: _Context) -> None:
    """datumaro writes one <subset>.xml per subset and names the subset nowhere else."""
    if ctx.meta.subset or ctx.path.name == CVAT_FILE_NAME:
        return
    ctx.meta.subset = ctx.path.stem
    ctx.report.note(
        "subset-from-file-name",
        f"the <meta> names no subset: its images are subset {ctx.path.stem!r}, after the file "
        "name (datumaro writes one <subset>.xml per subset)",
        ctx.where,
    )


def _text(element: ET.Element, path: str) -> str:
    return (element.findtext(path) or "").strip()


def _declare_classes(ctx: _Context) -> None:
    """Every label that can hold an instance becomes a class, in CVAT's label order."""
    left_out = []
    for name, label_type, parent in ctx.meta.labels:
        if not name:
            continue
        if parent or label_type in NO_INSTANCE_LABEL_TYPES:
            left_out.append(name)
            continue
        ctx.builder.category(name)
        ctx.classes.add(name)
    if left_out:
        ctx.report.note(
            "labels-not-classes",
            f"labels {left_out} are skeleton parts or points/polyline/skeleton/cuboid/tag labels: "
            "they cannot hold boxes, polygons or masks, so they make no class",
            ctx.where,
        )


# --- CVAT for images -------------------------------------------------------------------------


def _read_image(ctx: _Context, image: ET.Element) -> None:
    name = image.get("name") or ""
    try:
        reader_relative_path(name)
    except ValueError as e:
        message = (
            f"<image id={image.get('id')!r}> name {name!r} is no file inside the export: it {e}"
        )
        ctx.report.refused("image-invalid", message, ctx.where)
        return
    subset = image.get("subset") or ctx.meta.subset or None
    source, file_name, candidates = _find_image(
        ctx.root, name, subset if ctx.meta.kind == "project" else None
    )
    size = (_int(image.get("width")), _int(image.get("height")))
    image_id = ctx.builder.add_image(
        source,
        file_name,
        width=size[0],
        height=size[1],
        subset=subset,
        group=_image_group(ctx, image),
        frame=_int(image.get("id")) if ctx.meta.kind != "project" else None,
        location=f"{ctx.where}: image {name!r}",
        looked_for="" if source.is_file() else _looked_for(ctx, candidates),
    )
    shapes = []
    for index, element in enumerate(image, start=1):
        label = element.get("label")
        location = f"{ctx.where}: image {name!r}: {element.tag} #{index} label {label!r}"
        if not _usable(ctx, element.tag, label, location):
            continue
        geometry = _geometry(ctx, element, location)
        label = label.strip()
        group = _int(element.get("group_id")) or 0
        attributes = _attributes(ctx, element, label)
        shape = geometry and _shape(ctx, geometry, label, attributes, group, location)
        if shape:
            shape.source = (element.get("source") or "").strip()
            shapes.append(shape)
    _add_instances(ctx, image_id, shapes, size)


def _image_group(ctx: _Context, image: ET.Element) -> str | None:
    """A project's images stay together per task; a video's frames too (they nearly repeat)."""
    if ctx.meta.kind == "project" and image.get("task_id"):
        return ctx.group(f"task {image.get('task_id')}")
    if ctx.meta.mode == "interpolation":
        return ctx.group(f"{ctx.meta.kind} {ctx.meta.id}" if ctx.meta.id else ctx.where)
    return None


def _find_image(root: Path, name: str, subset: str | None) -> tuple[Path, str, list[Path]]:
    """The file an <image> names (CVAT writes a video frame's name without its extension), or
    where it should be; its name inside the Dataset; and the places looked in, as globs."""
    images = root / "images"
    relative = reader_relative_path(name).as_posix()
    bases = ([images / subset] if subset else []) + [images, root]
    candidates = []
    for base in bases:
        path = base / relative
        candidates.append(path if path.suffix else path.with_name(path.name + ".*"))
        if not path.is_file() and not path.suffix:
            pattern = glob.escape(path.name) + ".*"
            path = next((p for p in sorted(path.parent.glob(pattern)) if p.is_file()), path)
        if path.is_file():
            break
    else:
        path = bases[0] / relative
    if path.is_relative_to(images):
        return path, path.relative_to(images).as_posix(), candidates
    return path, path.relative_to(root).as_posix(), candidates


def _looked_for(ctx: _Context, candidates: list[Path]) -> str:
    """Where the reader looked for a missing image, and where a file of its name lies instead."""
    looked = ", ".join(p.relative_to(ctx.root).as_posix() for p in candidates)
    name = candidates[-1].name
    pattern = glob.escape(name[:-2]) + ".*" if name.endswith(".*") else glob.escape(name)
    elsewhere = ctx.files_named(pattern)
    if not elsewhere:
        return f"looked for {looked}"
    shown = ", ".join(elsewhere[:3]) + (
        f" and {len(elsewhere) - 3} more" if len(elsewhere) > 3 else ""
    )
    which = "a file of that name is" if len(elsewhere) == 1 else "files of that name are"
    advice = ""
    if not any(path.startswith("images/") for path in elsewhere):
        advice = ": CVAT keeps an export's images in images/, move them there"
    return f"looked for {looked}; {which} at {shown}{advice}"


# --- CVAT for video --------------------------------------------------------------------------


@dataclass
class _Written:
    """A track's shape as the file holds it."""

    frame: int
    outside: bool
    keyframe: bool
    values: list  # see _geometry
    attributes: dict


def _read_track(ctx: _Context, track: ET.Element) -> None:
    task_key = track.get("task_id", "")
    label = track.get("label")
    location = f"{ctx.where}: track {track.get('id')} label {label!r}"
    task = ctx.meta.tasks.get(task_key)
    if task is None:
        message = f"task_id {task_key!r} is not in the meta"
        ctx.report.refused("track-task-unknown", message, location)
        return
    elements = [e for e in track if e.tag not in ("track", "attribute")]
    kinds = sorted({e.tag for e in elements})
    if not elements:
        return
    if len(kinds) > 1:
        ctx.report.refused("track-invalid", f"the track mixes shape types {kinds}", location)
        return
    if kinds[0] not in SHAPES:
        shown = [e.get("frame") for e in elements if e.get("outside") != "1"]
        frames = f" (frames {shown[0]}..{shown[-1]})" if shown else ""
        ctx.report.skipped(
            "shape-unsupported",
            f"{kinds[0]} track with {len(shown)} visible shape(s){frames}: only boxes, polygons, "
            "masks and ellipses make instances",
            location,
        )
        return
    if not _usable(ctx, kinds[0], label, location):
        return
    try:
        written = [_written(ctx, e, label, location) for e in elements]
    except _Invalid as e:
        ctx.report.refused("shape-invalid", str(e), location)
        return
    group = _int(track.get("group_id")) or 0
    for frame, values, attributes in _expand(ctx, kinds[0], written, task, location):
        attributes = {**attributes, "track_id": _int(track.get("id"))}
        where = f"{location} frame {frame}"
        shape = _shape(ctx, _Geometry(kinds[0], values), label.strip(), attributes, group, where)
        if shape:
            shape.source = (track.get("source") or "").strip()
            ctx.frames[(task_key, frame)].append(shape)


def _written(ctx: _Context, element: ET.Element, label: str, location: str) -> _Written:
    frame = _int(element.get("frame"))
    if frame is None:
        raise _Invalid(f"a <{element.tag}> without a frame number")
    geometry = _geometry(ctx, element, f"{location} frame {frame}", strict=True)
    return _Written(
        frame,
        element.get("outside") == "1",
        element.get("keyframe", "1") == "1",
        geometry.values,
        _attributes(ctx, element, label),
    )


def _expand(ctx: _Context, kind: str, written: list[_Written], task: _Task, location: str):
    """(frame, values, attributes) for every frame the track is visible on, as CVAT shows it."""
    by_frame = {w.frame: w for w in written}
    if len(by_frame) < len(written):
        message = "several shapes on one frame: the last kept"
        ctx.report.skipped("shape-duplicate", message, location)
    shapes = [by_frame[f] for f in sorted(by_frame)]
    frames = task.frames()
    filled = approximated = 0
    for index, shape in enumerate(shapes):
        if shape.outside:
            continue
        if shape.frame not in frames:
            ctx.report.skipped(
                "frame-not-in-task",
                f"frame {shape.frame} is not one of the task's frames ({frames.start}..."
                f"{frames.stop - 1} step {frames.step})",
                location,
            )
            continue
        yield shape.frame, shape.values, {**shape.attributes, "keyframe": shape.keyframe}
        following = shapes[index + 1] if index + 1 < len(shapes) else None
        end = following.frame if following else frames.stop
        for frame in range(shape.frame + frames.step, min(end, frames.stop), frames.step):
            filled += 1
            values, exact = shape.values, True
            if following:
                t = (frame - shape.frame) / (following.frame - shape.frame)
                values, exact = _between(kind, shape.values, following.values, t)
            approximated += not exact
            yield frame, values, {**shape.attributes, "keyframe": False}
    if filled:
        ctx.report.note(
            "track-interpolated",
            f"{filled} frame(s) the file holds no shape for were filled in as CVAT does: "
            "linear between shapes, the last shape kept to the task's end unless outside",
            location,
        )
    if approximated:
        ctx.report.note(
            "polygon-interpolation-approximated",
            f"{approximated} frame(s) lie between polygons with different point counts: they "
            "take the previous polygon (CVAT matches vertices along the outline)",
            location,
        )


def _between(kind: str, start: list, end: list, t: float) -> tuple[list, bool]:
    """The shape at fraction t from `start` to `end`; False when only approximated."""
    if kind in ("box", "ellipse"):
        turn = (end[4] - start[4] + 180) % 360 - 180
        coordinates = [a + (b - a) * t for a, b in zip(start[:4], end[:4])]
        return coordinates + [(start[4] + turn * t) % 360], True
    if kind == "polygon" and len(start) == len(end):
        return [a + (b - a) * t for a, b in zip(start, end)], True
    return start, kind == "mask"  # CVAT does not interpolate masks either


def _add_video_frames(ctx: _Context) -> None:
    """One image per task frame that has a file or shapes; each task is one split group."""
    for task_key, task in ctx.meta.tasks.items():
        subset = task.subset or ctx.meta.subset or None
        folder = ctx.root / "images"
        if ctx.meta.kind == "project":
            folder /= task.subset or "default"
        files = _frame_files(folder)
        what = f"task {task.id}" if ctx.meta.kind == "project" else f"{ctx.meta.kind} {task.id}"
        group = ctx.group(what if task.id else ctx.where)
        missing = []
        for frame in task.frames():
            shapes = ctx.frames.pop((task_key, frame), [])
            if frame not in files and not shapes:
                missing.append(frame)
                continue
            source = files.get(frame, folder / f"frame_{frame:06d}")
            width, height = task.size or _file_size(source, shapes)
            image_id = ctx.builder.add_image(
                source,
                source.relative_to(ctx.root / "images").as_posix(),
                width=width,
                height=height,
                subset=subset,
                group=group,
                frame=frame if ctx.meta.kind != "project" else None,
                location=f"{ctx.where}: {what} frame {frame}",
                looked_for="" if frame in files else _looked_for(ctx, [Path(f"{source}.*")]),
            )
            _add_instances(ctx, image_id, shapes, (width, height))
        if missing:
            ctx.report.skipped(
                "frame-missing",
                f"{len(missing)} frame(s) have no image file (looked for "
                f"{folder.relative_to(ctx.root).as_posix()}/frame_NNNNNN.*) and no shapes: left "
                f"out (deleted frames, or an export without images): {missing[:30]}",
                f"{ctx.where}: {what}",
            )


def _file_size(path: Path, shapes: list[_Shape]) -> tuple[int | None, int | None]:
    """The frame's size from its file, when masks need it and the meta does not say."""
    if not path.is_file() or not any(s.kind == "mask" for s in shapes):
        return None, None
    try:
        with Image.open(path) as picture:
            return picture.size
    except OSError:
        return None, None  # the builder refuses the file by name


def _frame_files(folder: Path) -> dict[int, Path]:
    """Frame number -> file, for CVAT's frame_NNNNNN.<ext> video frames."""
    files: dict[int, Path] = {}
    if not folder.is_dir():
        return files
    others = []
    for path in sorted(folder.iterdir()):
        match = FRAME_FILE.fullmatch(path.stem)
        if match and path.is_file():
            files.setdefault(int(match.group(1)), path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            others.append(path.name)
    if others and not files:
        raise ValueError(
            f"{folder}: images named {others[:3]} but no frame_NNNNNN files: a CVAT for video "
            "export of an image task does not say which file is which frame; export the task "
            "as 'CVAT for images 1.1'"
        )
    return files


# --- shapes ----------------------------------------------------------------------------------


@dataclass
class _Geometry:
    """What a shape element says, as numbers: box [xtl, ytl, xbr, ybr, rotation], ellipse
    [cx, cy, rx, ry, rotation], polygon [x1, y1, ...], mask [left, top, width, height, *runs]."""

    tag: str
    values: list


def _usable(ctx: _Context, tag: str, label: str | None, location: str) -> bool:
    if tag not in SHAPES:
        ctx.report.skipped(
            "shape-unsupported",
            f"{tag}: only boxes, polygons, masks and ellipses make instances",
            location,
        )
        return False
    label = (label or "").strip()
    if not label:
        ctx.report.skipped("label-missing", f"a {tag} without a label", location)
        return False
    if label not in ctx.classes:
        ctx.classes.add(label)
        message = f"label {label!r} is not in the meta's labels"
        ctx.report.note("label-undeclared", message, location)
    return True


def _geometry(ctx: _Context, element: ET.Element, location: str, strict: bool = False):
    """The numbers of a box, ellipse, polygon or mask element (None, refused, when unreadable)."""
    try:
        get = element.get
        if element.tag == "box":
            values = [_float(get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
            return _Geometry("box", values + [_float(get("rotation") or "0")])
        if element.tag == "ellipse":
            values = [_float(get(k)) for k in ("cx", "cy", "rx", "ry")]
            return _Geometry("ellipse", values + [_float(get("rotation") or "0")])
        if element.tag == "polygon":
            points = (get("points") or "").replace(";", ",").split(",")
            return _Geometry("polygon", [_float(v) for v in points if v.strip()])
        runs = [_int_or_invalid(v) for v in (get("rle") or "").split(",") if v.strip()]
        box = [_int_or_invalid(get(k)) for k in ("left", "top", "width", "height")]
        return _Geometry("mask", box + runs)
    except _Invalid as e:
        if strict:
            raise
        ctx.report.refused("shape-invalid", str(e), location)
        return None


def _shape(ctx, geometry: _Geometry, label, attributes, group, location) -> _Shape | None:
    """The shape as the builder takes it: rotated boxes and ellipses become polygons."""
    values = geometry.values
    if geometry.tag == "mask":
        return _mask_shape(ctx, values, label, attributes, group, location)
    if geometry.tag == "box" and values[4] % 360 == 0:
        xtl, ytl, xbr, ybr = values[:4]
        if xbr < xtl or ybr < ytl:
            ctx.report.skipped("shape-invalid", f"box corners {values[:4]} are swapped", location)
            return None
        return _Shape("box", [xtl, ytl, xbr - xtl, ybr - ytl], label, attributes, group, location)
    if geometry.tag == "box":
        points = _rotated_box(*values)
    elif geometry.tag == "ellipse":
        if values[2] <= 0 or values[3] <= 0:
            ctx.report.skipped("shape-invalid", f"ellipse radii {values[2:4]}", location)
            return None
        points = _ellipse(*values)
    else:
        points = values
    if len(points) < 6 or len(points) % 2:
        ctx.report.skipped(
            "polygon-degenerate", f"{len(points) // 2} point(s): a polygon needs 3", location
        )
        return None
    polygon = [round(v, 3) for v in points]
    return _Shape("polygon", polygon, label, attributes, group, location)


def _mask_shape(ctx, values, label, attributes, group, location) -> _Shape | None:
    """CVAT's mask RLE: runs over its box, row by row, starting with a run of 0s."""
    left, top, width, height, *runs = values
    if width <= 0 or height <= 0 or min(runs, default=0) < 0 or sum(runs) != width * height:
        ctx.report.refused(
            "mask-invalid",
            f"the runs cover {sum(runs)} pixels but the mask box is {width}x{height}",
            location,
        )
        return None
    if not any(runs[1::2]):
        ctx.report.skipped("mask-empty", "the mask has no pixel set", location)
        return None
    return _Shape("mask", (runs, left, top, width, height), label, attributes, group, location)


def _rotated_box(xtl, ytl, xbr, ybr, degrees) -> list[float]:
    """The corners of a box turned by `degrees` (clockwise on screen) about its centre."""
    cx, cy = (xtl + xbr) / 2, (ytl + ybr) / 2
    return _turned([(xtl, ytl), (xbr, ytl), (xbr, ybr), (xtl, ybr)], cx, cy, degrees)


def _ellipse(cx, cy, rx, ry, degrees) -> list[float]:
    steps = [2 * math.pi * k / ELLIPSE_VERTICES for k in range(ELLIPSE_VERTICES)]
    points = [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in steps]
    return _turned(points, cx, cy, degrees)


def _turned(points, cx, cy, degrees) -> list[float]:
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    turned = []
    for x, y in points:
        dx, dy = x - cx, y - cy
        turned += [cx + dx * cos - dy * sin, cy + dx * sin + dy * cos]
    return turned


def _attributes(ctx: _Context, element: ET.Element, label: str) -> dict:
    """`occluded` and the element's <attribute>s, typed as the meta declares them."""
    attributes: dict = {"occluded": element.get("occluded") == "1"}
    for attribute in element.iterfind("attribute"):
        name = attribute.get("name", "")
        value = (attribute.text or "").strip()
        input_type = ctx.meta.attribute_types.get((label, name))
        if input_type == "checkbox":
            attributes[name] = value.lower() == "true"
        elif input_type == "number":
            try:
                attributes[name] = float(value)
            except ValueError:
                attributes[name] = value
        else:
            attributes[name] = value
    return attributes


# --- instances -------------------------------------------------------------------------------


def _add_instances(ctx: _Context, image_id: int, shapes: list[_Shape], size) -> None:
    """One instance per shape, or per group of shapes sharing a group_id."""
    groups: dict[int, list[_Shape]] = defaultdict(list)
    for shape in shapes:
        groups[shape.group or -id(shape)].append(shape)
    for members in groups.values():
        if len(members) == 1:
            _add_instance(ctx, image_id, members[0].label, members, members[0].attributes, size)
            continue
        label = _group_label(ctx, members)
        leader = next(s for s in members if s.label == label)
        attributes = {**leader.attributes, "group_id": leader.group}
        _add_instance(ctx, image_id, label, members, attributes, size)


def _group_label(ctx: _Context, members: list[_Shape]) -> str:
    counts = Counter(s.label for s in members)
    label = next(s.label for s in members if counts[s.label] == max(counts.values()))
    kinds = Counter(s.kind for s in members)
    message = f"{len(members)} shapes ({dict(kinds)}) of group {members[0].group}: one instance"
    if "box" in kinds and len(kinds) > 1:
        message += "; its box is the extent of its polygons/masks, the drawn box is left out"
    ctx.report.note("group-merged", message, members[0].location)
    if len(counts) > 1:
        ctx.report.fixed(
            "group-labels-differ",
            f"group {members[0].group} mixes labels {dict(counts)}: the instance takes "
            f"{label!r} (the most common, the first on ties)",
            members[0].location,
        )
    return label


def _add_instance(ctx, image_id, label, members, attributes, size) -> None:
    kinds = {s.kind for s in members}
    location = members[0].location
    sources = {s.source for s in members}
    source = sources.pop() if len(sources) == 1 else "semi-auto"
    options = {"attributes": attributes, "source": source, "location": location}
    if "mask" in kinds:
        drawn = _instance_mask(ctx, image_id, members, size)
        if drawn is not None:
            mask, left, top = drawn
            ctx.builder.add_mask(image_id, label, mask, left=left, top=top, **options)
    elif "polygon" in kinds:
        polygons = [s.data for s in members if s.kind == "polygon"]
        ctx.builder.add_polygon(image_id, label, polygons, **options)
    else:
        boxes = np.array([s.data for s in members], dtype=float)
        x, y = boxes[:, 0].min(), boxes[:, 1].min()
        right, bottom = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
        ctx.builder.add_box(image_id, label, x, y, right - x, bottom - y, **options)


def _instance_mask(ctx: _Context, image_id: int, members: list[_Shape], size):
    """The union of the masks and polygons of one instance, drawn at the file's size within the
    instance's own box clipped to the image: (box mask, left, top), for `add_mask`. Masks and
    polygons are read from their runs, never decoded whole; nothing is drawn on an image its
    file rules out, nor from a mask box larger than the whole image."""
    width, height = size
    location = members[0].location
    if width is None or height is None:
        ctx.report.skipped("mask-no-image-size", "the image size is unknown", location)
        return None
    drawable = ctx.builder.drawable_size(image_id)
    if drawable is None:  # the build refuses or skips the image, saying why
        ctx.builder.count_undrawn(image_id)
        return None
    masks = [s.data for s in members if s.kind == "mask"]
    for _, _, _, mask_width, mask_height in masks:
        if mask_width * mask_height > width * height:
            ctx.report.refused(
                "mask-too-large",
                f"the mask box is {mask_width}x{mask_height}, more pixels than the whole "
                f"{width}x{height} image: it is not a mask of this image. Re-export the task "
                "from CVAT",
                location,
            )
            return None
    polygons = [  # each one's RLE on the whole image: runs only
        polygons_to_rle([s.data], height, width) for s in members if s.kind == "polygon"
    ]
    drawn = sum(sum(runs[1::2]) for runs, *_ in masks)
    kept = sum(_ones_inside(mask, width, height) for mask in masks)
    if not kept and not sum(int(mask_utils.area(rle)) for rle in polygons):
        ctx.report.skipped("mask-empty", "the mask lies outside the image", location)
        return None
    if all(s.kind == "mask" for s in members) and kept < drawn:
        ctx.report.fixed(
            "mask-clipped", f"{drawn - kept} mask pixel(s) outside the image cut off", location
        )
    # For each row and column of the file, the declared image's row and column it shows (the
    # same one unless the file is a resized copy); the box holds those within the extent.
    rows, columns = nearest_pixels(height, drawable[1]), nearest_pixels(width, drawable[0])
    x0, y0, x1, y1 = _extent(members, width, height)
    top, bottom = np.searchsorted(rows, [y0, y1])
    left, right = np.searchsorted(columns, [x0, x1])
    rows, columns = rows[top:bottom], columns[left:right]
    box = np.zeros((len(rows), len(columns)), dtype=np.uint8)
    for runs, mask_left, mask_top, mask_width, mask_height in masks:
        # CVAT's runs go row by row over the mask's box: a COCO RLE of the box turned over.
        turned = {"size": [mask_width, mask_height], "counts": runs}
        inside_rows = (rows >= mask_top) & (rows < mask_top + mask_height)
        inside_columns = (columns >= mask_left) & (columns < mask_left + mask_width)
        pixels = rle_pixels(
            turned, columns[inside_columns] - mask_left, rows[inside_rows] - mask_top
        )
        box[np.ix_(inside_rows, inside_columns)] |= pixels.T
    for rle in polygons:
        box |= rle_pixels(rle, rows, columns)
    return box, int(left), int(top)


def _ones_inside(mask, width: int, height: int) -> int:
    """How many set pixels of a CVAT mask ((runs, left, top, width, height)) lie in the image,
    counted from its runs."""
    runs, left, top, mask_width, mask_height = mask
    a, c = max(0, -left), min(mask_width, width - left)  # the image's columns, in the box
    b, d = max(0, -top), min(mask_height, height - top)
    if c <= a or d <= b:
        return 0
    ends = np.cumsum(np.asarray(runs, dtype=np.int64))
    starts = ends - np.asarray(runs, dtype=np.int64)

    def before(flat):  # the image pixels of the box that come before these box positions
        row = flat // mask_width
        column = flat - row * mask_width
        partial = np.where((row >= b) & (row < d), np.clip(column - a, 0, c - a), 0)
        return (np.clip(row, b, d) - b) * (c - a) + partial

    return int((before(ends[1::2]) - before(starts[1::2])).sum())


def _extent(members: list[_Shape], width, height) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the image pixels the masks and polygons may cover."""
    xs, ys = [], []
    for shape in members:
        if shape.kind == "mask":
            _, left, top, mask_width, mask_height = shape.data
            xs += [left, left + mask_width]
            ys += [top, top + mask_height]
        elif shape.kind == "polygon":
            xs += [math.floor(min(shape.data[0::2])), math.ceil(max(shape.data[0::2])) + 1]
            ys += [math.floor(min(shape.data[1::2])), math.ceil(max(shape.data[1::2])) + 1]
    return max(min(xs), 0), max(min(ys), 0), min(max(xs), width), min(max(ys), height)


# --- numbers ---------------------------------------------------------------------------------


def _float(text: str | None) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _Invalid(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise _Invalid(f"{text!r} is not a finite number")
    return value


def _int_or_invalid(text: str | None) -> int:
    value = _int(text)
    if value is None:
        raise _Invalid(f"{text!r} is not an integer")
    return value


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None
