"""LabelMe 3.0: one XML per image, in CVAT's flat layout or MIT CSAIL's.

- Flat (CVAT): `<subset>/<image>` with `<subset>/<image stem>.xml` beside it (or everything at
  the top level) and `<subset>/Masks/`. The first folder is the subset.
- CSAIL: `Annotations/<folder>/*.xml`, `Images/<folder>/<image>`, `Masks/<folder>/`,
  `Scribbles/` (not read). The folder is the subset.

Objects: `<polygon>` points become polygons; with `<type>bounding_box</type>` a box (their
extent); `<segm><mask>` a full-image mask (a pixel is in it when any channel, alpha included, is
nonzero; `<box>` is not needed). Kept as attributes: `occluded` (yes/no as a boolean) and the
`<attributes>` text, parsed as CVAT writes it (`k=v, k2=v2`, with `\\`-escapes; a bare word is
True). Parts stay separate instances: objects in a part relation carry `labelme_id` (their
`<id>`) and parts `part_of` (their parent's `<id>`). `<deleted>1</deleted>` objects are skipped
with a report line; `<imagesize>` may come anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...common.report import Report
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder
from . import safe_xml

FORMATS = ("LabelMe 3.0",)

ANNOTATIONS_DIR = "Annotations"
IMAGES_DIR = "Images"
MASKS_DIR = "Masks"


@dataclass
class _Shape:
    kind: str  # "box", "polygon" or "mask"
    name: str
    data: object  # (x, y, w, h), [flat points] or a bool array
    attributes: dict
    where: str


def detect(root: Path) -> list[str]:
    root = Path(root)
    if _is_csail(root):
        return list(FORMATS)
    peek = sorted(root.glob("*.xml"))[:5] + sorted(root.glob("*/*.xml"))[:5]
    return list(FORMATS) if any(map(_has_labelme_shape, peek)) else []


def _is_csail(root: Path) -> bool:
    return (root / ANNOTATIONS_DIR).is_dir() and (root / IMAGES_DIR).is_dir()


def _has_labelme_shape(path: Path) -> bool:
    try:
        annotation = safe_xml.parse(path)
    except safe_xml.XmlFileError:
        return False
    shapes = annotation.findall("object/polygon") + annotation.findall("object/segm")
    return annotation.tag == "annotation" and bool(shapes)


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    annotations_root = root / ANNOTATIONS_DIR if _is_csail(root) else root
    files = sorted(annotations_root.rglob("*.xml"))
    if not files:
        raise ValueError(f"{root}: no XML files: not a LabelMe 3.0 export")
    for path in files:
        _read_file(root, annotations_root, path, builder)


def _read_file(root: Path, annotations_root: Path, path: Path, builder: DatasetBuilder) -> None:
    report = builder.report
    location = path.relative_to(root).as_posix()
    try:
        annotation = safe_xml.parse(path, location)
    except safe_xml.XmlFileError as e:
        report.refused(e.code, e.reason, location)
        return
    if annotation.tag != "annotation":
        report.note("xml-not-labelme", f"root element <{annotation.tag}>: not read", location)
        return
    filename = (annotation.findtext("filename") or "").strip()
    try:
        reader_relative_path(filename)
    except ValueError as e:
        message = f"<filename> {filename!r} is no file inside the export: it {e}"
        report.refused("image-name-invalid", message, location)
        return
    image, images_root, mask_dirs = _places(root, annotations_root, path, filename)
    relative = path.relative_to(annotations_root)
    shapes = _shapes(annotation, location, mask_dirs, report)
    width, height = _image_size(annotation, shapes, report)
    image_id = builder.add_image(
        image,
        image.relative_to(images_root).as_posix(),
        width=width,
        height=height,
        subset=relative.parts[0] if len(relative.parts) > 1 else None,
        location=location,
    )
    for shape in shapes:
        _add(builder, image_id, shape)


def _places(root: Path, annotations_root: Path, path: Path, filename: str):
    """(the image file, the folder file names are relative to, folders to look for masks in)."""
    relative = path.relative_to(annotations_root)
    if annotations_root != root:  # CSAIL
        folder = relative.parent
        return root / IMAGES_DIR / folder / filename, root / IMAGES_DIR, [root / MASKS_DIR / folder]
    subset_root = root / relative.parts[0] if len(relative.parts) > 1 else root
    return path.parent / filename, root, [subset_root / MASKS_DIR, path.parent / MASKS_DIR]


def _shapes(annotation, location: str, mask_dirs: list[Path], report: Report) -> list[_Shape]:
    objects = annotation.findall("object")
    related = _part_relations(objects)
    shapes = []
    for index, element in enumerate(objects):
        object_id = _int((element.findtext("id") or "").strip(), index)
        where = f"{location} object {index} (id {object_id})"
        shape = _parse_object(element, where, mask_dirs, report)
        if shape is None:
            continue
        if object_id in related:
            shape.attributes["labelme_id"] = object_id
            if related[object_id] is not None:
                shape.attributes["part_of"] = related[object_id]
        shapes.append(shape)
    return shapes


def _part_relations(objects) -> dict[int, int | None]:
    """{object id: parent id, or None for a parent} for the objects in a part relation."""
    related = {}
    for index, element in enumerate(objects):
        object_id = _int((element.findtext("id") or "").strip(), index)
        parent = (element.findtext("parts/ispartof") or "").split(",")[0].strip()
        if parent:
            related[object_id] = _int(parent, None)
        elif (element.findtext("parts/hasparts") or "").strip():
            related.setdefault(object_id, None)
    return related


def _int(text: str, default):
    try:
        return int(text)
    except ValueError:
        return default


def _parse_object(element, where: str, mask_dirs: list[Path], report: Report) -> _Shape | None:
    if (element.findtext("deleted") or "").strip() == "1":
        report.skipped("object-deleted", "marked <deleted>1</deleted> in LabelMe", where)
        return None
    name = (element.findtext("name") or "").strip()
    if not name:
        report.skipped("label-missing", "the object has no <name>", where)
        return None
    attributes = parse_attributes(element.findtext("attributes") or "")
    occluded = (element.findtext("occluded") or "").strip().lower()
    if occluded in ("yes", "no"):
        attributes["occluded"] = occluded == "yes"
    polygon, segm = element.find("polygon"), element.find("segm")
    if polygon is not None:
        is_box = (element.findtext("type") or "").strip() == "bounding_box"
        return _polygon_shape(polygon, is_box, name, attributes, where, report)
    if segm is not None:
        return _mask_shape(segm, name, attributes, where, mask_dirs, report)
    report.skipped("shape-missing", "the object has neither <polygon> nor <segm>", where)
    return None


def _polygon_shape(polygon, is_box: bool, name, attributes, where, report) -> _Shape | None:
    points = []
    for point in polygon.iter("pt"):
        texts = (point.findtext("x"), point.findtext("y"))
        try:
            xy = [float(t) for t in texts]
        except (TypeError, ValueError):
            report.refused("polygon-malformed", f"point {texts} is not two numbers", where)
            return None
        if not all(map(math.isfinite, xy)):
            report.refused("polygon-malformed", f"point {texts} is not finite", where)
            return None
        points += xy
    if is_box and points:
        xs, ys = points[0::2], points[1::2]
        box = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        return _Shape("box", name, box, attributes, where)
    if len(points) < 6:
        report.skipped(
            "polygon-too-few-points", f"{len(points) // 2} point(s); a polygon needs 3", where
        )
        return None
    return _Shape("polygon", name, points, attributes, where)


def _mask_shape(segm, name, attributes, where, mask_dirs, report) -> _Shape | None:
    mask_name = (segm.findtext("mask") or "").strip()
    try:
        reader_relative_path(mask_name)
        found = [d / mask_name for d in mask_dirs if (d / mask_name).is_file()]
    except ValueError:  # empty, or leads out of the export
        found = []
    if not found:
        report.skipped("mask-missing", f"mask file {mask_name!r} is not in {MASKS_DIR}/", where)
        return None
    with Image.open(found[0]) as picture:
        pixels = np.asarray(picture)
    mask = pixels.any(axis=2) if pixels.ndim == 3 else pixels > 0
    if not mask.any():
        report.skipped("mask-empty", f"mask file {mask_name} has no pixel set", where)
        return None
    return _Shape("mask", name, mask, attributes, where)


def _image_size(annotation, shapes: list[_Shape], report: Report):
    """<imagesize> (ncols, nrows), else the masks' size; masks of another size are dropped."""
    width = _int((annotation.findtext("imagesize/ncols") or "").strip(), None)
    height = _int((annotation.findtext("imagesize/nrows") or "").strip(), None)
    masks = [s for s in shapes if s.kind == "mask"]
    if not (width and height) and masks:
        height, width = masks[0].data.shape
    for shape in masks:
        if shape.data.shape != (height, width):
            report.skipped(
                "mask-size",
                f"the mask is {shape.data.shape[1]}x{shape.data.shape[0]}, the image "
                f"{width}x{height}",
                shape.where,
            )
            shapes.remove(shape)
    return (width, height) if width and height else (None, None)


def _add(builder: DatasetBuilder, image_id: int, shape: _Shape) -> None:
    options = {"attributes": shape.attributes, "location": shape.where}
    if shape.kind == "box":
        builder.add_box(image_id, shape.name, *shape.data, **options)
    elif shape.kind == "polygon":
        builder.add_polygon(image_id, shape.name, [shape.data], **options)
    else:
        builder.add_mask(image_id, shape.name, shape.data, **options)


# --- CVAT's attribute text ------------------------------------------------------------------


def parse_attributes(text: str) -> dict:
    """`k=v, k2="12", flag` as CVAT (datumaro) writes it: `\\,` `\\=` `\\"` `\\\\` escape."""
    attributes = {}
    for token in _split_unescaped(text, ","):
        key, value = (_split_unescaped(token, "=", once=True) + [None])[:2]
        key = _unescape(key.strip())
        if key:
            attributes[key] = True if value is None else _value(value.strip())
    return attributes


def _split_unescaped(text: str, separator: str, once: bool = False) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == separator and not (once and parts):
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    return parts + ["".join(current)]


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _value(raw: str):
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if len(raw) > 1 and raw[0] == raw[-1] == '"':
        return _unescape(raw[1:-1])
    for kind in (int, float):
        try:
            if str(kind(raw)) == raw:
                return kind(raw)
        except ValueError:
            pass
    return _unescape(raw)
