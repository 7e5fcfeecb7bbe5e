"""PASCAL VOC 1.1: `Annotations/<id>.xml` boxes, `JPEGImages/`, `ImageSets/Main/<subset>.txt`,
and CVAT's `labelmap.txt` (`name:r,g,b:parts:actions`).

- Boxes: VOC's `xmin..xmax` are read as CVAT writes them: x = xmin, width = xmax - xmin (CVAT's
  exporter writes xmin = x, xmax = x + width, with no 1-based shift; BCCD follows the same).
- Kept as attributes: `difficult`, `truncated`, `occluded` (booleans), `pose`, the `<actions>`
  flags and CVAT's `<attributes>`.
- Parts (`<part>`, e.g. a person's head) become instances of their own class with the attribute
  `part_of` = the 1-based index of their object in the XML.
- Classes: the label map's labels (all of them, in its order, then part names), its background
  label excluded; an object of an unknown class is refused, one of the background label is
  skipped. Without `labelmap.txt` the classes are every name in the XMLs, sorted by name.
- Masks: when `SegmentationObject/<id>.png` holds exactly one instance per XML object, in order,
  of the object's class (VOC's convention: palette index i is object i), each object becomes its
  mask. Otherwise the boxes are kept and a note says the masks were not used (CVAT writes boxes
  and masks as separate shapes; read such an export as "Segmentation mask 1.1" for the masks).
- Per-class lists (`ImageSets/Main/<class>_<subset>.txt`) hold image-level tags, not shapes: not
  kept (a note says so when they mark an image). XMLs without an Annotations/ folder (CVAT also
  imports that flat layout) are read beside their images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ...common.report import Report
from ...common.storage import reader_relative_path
from ..builder import STAGE, DatasetBuilder
from . import safe_xml
from .segmentation_mask import (
    CLASS_DIR,
    IMAGES_DIR,
    LABELMAP_FILE,
    OBJECT_DIR,
    ClassColors,
    background_entry,
    find_image,
    instance_masks,
    is_void,
    load_colors,
    read_labelmap,
    read_subset_lists,
)
from .text import read_text

FORMATS = ("PASCAL VOC 1.1",)

ANNOTATIONS_DIR = "Annotations"
MAIN_LISTS = Path("ImageSets") / "Main"
FLAGS = ("difficult", "truncated", "occluded")
COORDINATES = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _Object:
    index: int  # 1-based, among all <object> elements of the file
    name: str
    box: tuple[float, float, float, float]
    attributes: dict
    parts: list[tuple[str, tuple]] = field(default_factory=list)


@dataclass
class _Item:
    xml: Path
    location: str
    filename: str
    width: int | None
    height: int | None
    count: int  # <object> elements, kept or not
    objects: list[_Object]


# --- detection ------------------------------------------------------------------------------


def detect(root: Path) -> list[str]:
    root = Path(root)
    annotations = root / ANNOTATIONS_DIR
    if annotations.is_dir() and next(annotations.rglob("*.xml"), None) is not None:
        markers = ("ImageSets", IMAGES_DIR, LABELMAP_FILE)
        if any((root / m).exists() for m in markers):
            return list(FORMATS)
    folder = annotations if annotations.is_dir() else root
    return list(FORMATS) if any(map(_has_voc_box, sorted(folder.glob("*.xml"))[:5])) else []


def _has_voc_box(path: Path) -> bool:
    try:
        annotation = safe_xml.parse(path)
    except safe_xml.XmlFileError:
        return False
    return annotation.tag == "annotation" and annotation.find("object/bndbox") is not None


# --- reading --------------------------------------------------------------------------------


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    report = builder.report
    entries = read_labelmap(root / LABELMAP_FILE) if (root / LABELMAP_FILE).is_file() else None
    xml_files = _annotation_files(root)
    subsets = read_subset_lists(root, MAIN_LISTS, report)
    _note_class_lists(root / MAIN_LISTS, report)
    if not xml_files and not subsets:
        raise ValueError(f"{root}: no {ANNOTATIONS_DIR}/*.xml: not a PASCAL VOC export")
    items = {item_id: _parse_file(path, root, report) for item_id, path in xml_files.items()}
    known, no_class = _declare_classes(entries, items.values(), builder)
    colors = ClassColors.from_labelmap(entries, LABELMAP_FILE) if entries else None
    for item_id, item in items.items():
        if item is not None:
            _add_item(root, item_id, item, subsets.get(item_id), known, no_class, colors, builder)
    for item_id in [i for i in subsets if i not in xml_files]:
        _add_unannotated(root, item_id, subsets[item_id], builder)


def _annotation_files(root: Path) -> dict[str, Path]:
    """Item id (the path under Annotations/, no suffix) -> XML; the flat layout takes any XML."""
    folder = root / ANNOTATIONS_DIR
    if folder.is_dir():
        paths = sorted(folder.rglob("*.xml"))
    else:
        folder = root
        paths = [p for p in sorted(root.rglob("*.xml")) if _root_tag(p) in ("annotation", None)]
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in paths}


def _root_tag(path: Path) -> str | None:
    """The root element's tag; None when the file cannot be read (_parse_file refuses it)."""
    try:
        return safe_xml.root_tag(path)
    except safe_xml.XmlFileError:
        return None


def _note_class_lists(folder: Path, report: Report) -> None:
    """One note when VOC's per-class lists mark images: those are CVAT tags, not shapes."""
    stems = {p.stem for p in folder.glob("*.txt")} if folder.is_dir() else set()
    marked = 0
    for path in sorted(folder.glob("*_*.txt")) if stems else []:
        if path.stem.split("_", 1)[1] in stems:
            lines = read_text(path, (MAIN_LISTS / path.name).as_posix()).splitlines()
            marked += sum(1 for line in lines if line.split()[-1:] == ["1"])
    if marked:
        report.note(
            "image-tags-not-kept",
            f"{marked} image-level label(s) in the per-class lists (<class>_<subset>.txt: CVAT "
            "tags, not shapes) are not kept",
            MAIN_LISTS.as_posix(),
        )


def _parse_file(path: Path, root: Path, report: Report) -> _Item | None:
    location = path.relative_to(root).as_posix()
    try:
        annotation = safe_xml.parse(path, location)
    except safe_xml.XmlFileError as e:
        report.refused(e.code, e.reason, location)
        return None
    if annotation.tag != "annotation":
        report.refused(
            "xml-not-voc", f"root element <{annotation.tag}>, not <annotation>", location
        )
        return None
    filename = (annotation.findtext("filename") or "").strip()
    try:
        if filename:  # without one, the image is found by the XML's name
            reader_relative_path(filename)
    except ValueError as e:
        message = f"<filename> {filename!r} is no file inside the export: it {e}"
        report.refused("path-escapes", message, location)
        return None
    elements = annotation.findall("object")
    objects = [_parse_object(e, i, location, report) for i, e in enumerate(elements, start=1)]
    return _Item(
        path,
        location,
        filename,
        _positive_int(annotation.findtext("size/width")),
        _positive_int(annotation.findtext("size/height")),
        len(elements),
        [o for o in objects if o is not None],
    )


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(float(text))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _parse_object(element, index: int, location: str, report: Report) -> _Object | None:
    where = f"{location} object {index}"
    name = (element.findtext("name") or "").strip()
    if not name:
        report.skipped("label-missing", "the object has no <name>", where)
        return None
    box = _box(element.find("bndbox"), where, report)
    if box is None:
        return None
    parts = []
    for k, part in enumerate(element.findall("part"), start=1):
        part_where = f"{where} part {k}"
        part_name = (part.findtext("name") or "").strip()
        part_box = _box(part.find("bndbox"), part_where, report) if part_name else None
        if not part_name:
            report.skipped("label-missing", "the part has no <name>", part_where)
        elif part_box is not None:
            parts.append((part_name, part_box))
    return _Object(index, name, box, _attributes(element), parts)


def _box(element, where: str, report: Report) -> tuple | None:
    if element is None:
        report.skipped("box-missing", "no <bndbox>", where)
        return None
    texts = [element.findtext(k) for k in COORDINATES]
    try:
        xmin, ymin, xmax, ymax = (float(t) for t in texts)
    except (TypeError, ValueError):
        values = dict(zip(COORDINATES, texts))
        report.refused("box-malformed", f"<bndbox> coordinates must be numbers: {values}", where)
        return None
    if not all(map(math.isfinite, (xmin, ymin, xmax, ymax))):
        report.refused("box-malformed", "<bndbox> holds a non-finite coordinate", where)
        return None
    if xmax < xmin or ymax < ymin:
        report.skipped("box-inverted", f"xmax/ymax below xmin/ymin: {texts}", where)
        return None
    return xmin, ymin, xmax - xmin, ymax - ymin


def _attributes(element) -> dict:
    attributes = {}
    for flag in FLAGS:
        text = (element.findtext(flag) or "").strip()
        if text:
            attributes[flag] = _flag(text)
    pose = (element.findtext("pose") or "").strip()
    if pose:
        attributes["pose"] = pose
    for action in element.find("actions") if element.find("actions") is not None else ():
        attributes[action.tag] = _flag((action.text or "").strip())
    for attribute in element.iterfind("attributes/attribute"):
        name = (attribute.findtext("name") or "").strip()
        if name:
            attributes[name] = attribute.findtext("value") or ""
    return attributes


def _flag(text: str):
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    return text


def _declare_classes(entries, items, builder: DatasetBuilder):
    """Declare the classes; returns (the known names or None for any, the names of no class:
    the label map's background and void labels)."""
    if entries is None:
        names = {o.name for item in items if item for o in item.objects}
        names |= {p for item in items if item for o in item.objects for p, _ in o.parts}
        for name in sorted(names):
            builder.category(name)
        return None, set()
    background = background_entry(entries)
    no_class = {e.name for e in entries if e is background or is_void(e)}
    labels = [e.name for e in entries if e.name not in no_class]
    parts = sorted({p for e in entries for p in e.parts} - set(labels))
    for name in labels + parts:
        builder.category(name)
    return set(labels + parts), no_class


def _add_item(root, item_id, item: _Item, subset, known, no_class, colors, builder) -> None:
    report = builder.report
    masks, size = _object_masks(root, item_id, item, colors, report)
    image = _image_path(root, item, item_id)
    image_id = builder.add_image(
        image,
        _file_name(root, image),
        width=size[0],
        height=size[1],
        subset=subset,
        location=item.location,
    )
    for obj in item.objects:
        where = f"{item.location} object {obj.index}"
        options = {"attributes": obj.attributes, "location": where}
        if _usable_class(obj.name, known, no_class, where, report):
            if obj.index in masks:
                builder.add_mask(image_id, obj.name, masks[obj.index], **options)
            else:
                builder.add_box(image_id, obj.name, *obj.box, **options)
        for k, (name, box) in enumerate(obj.parts, start=1):
            part_where = f"{where} part {k}"
            if _usable_class(name, known, no_class, part_where, report):
                builder.add_box(
                    image_id, name, *box, attributes={"part_of": obj.index}, location=part_where
                )


def _usable_class(name, known, no_class, where: str, report: Report) -> bool:
    if name in no_class:
        message = f"class {name!r} is the label map's background (or void): no object"
        report.skipped("background-object", message, where)
        return False
    if known is not None and name not in known:
        report.refused("class-unknown", f"class {name!r} is not in {LABELMAP_FILE}", where)
        return False
    return True


def _image_path(root: Path, item: _Item, item_id: str) -> Path:
    images = root / IMAGES_DIR
    if not item.filename:
        return find_image(images, item_id)
    if images.is_dir() or (root / ANNOTATIONS_DIR).is_dir():
        return images / item.filename
    return item.xml.parent / item.filename  # the flat layout: images beside their XMLs


def _file_name(root: Path, image: Path) -> str:
    images = root / IMAGES_DIR
    base = images if image.is_relative_to(images) else root
    return image.relative_to(base).as_posix()


def _add_unannotated(root: Path, item_id: str, subset: str, builder: DatasetBuilder) -> None:
    image = find_image(root / IMAGES_DIR, item_id)
    builder.add_image(image, _file_name(root, image), subset=subset, location=item_id)
    builder.report.note(
        "annotation-missing",
        f"listed in {MAIN_LISTS.as_posix()}/{subset}.txt without {ANNOTATIONS_DIR}/{item_id}.xml: "
        "kept as an image without objects",
        item_id,
    )


def _object_masks(root, item_id, item: _Item, colors, report: Report):
    """({object index: mask} when the instance PNG matches the objects, else {}; the size)."""
    size = (item.width, item.height)
    object_path = root / OBJECT_DIR / f"{item_id}.png"
    if not object_path.is_file():
        return {}, size
    where = {"object": f"{OBJECT_DIR}/{item_id}.png", "class": f"{CLASS_DIR}/{item_id}.png"}
    scratch = Report(STAGE)  # problems with optional masks make a note, not a refusal
    object_map = load_colors(object_path)
    class_path = root / where["class"]
    class_map = load_colors(class_path) if class_path.is_file() else None
    instances = None
    if class_map is None or class_map.shape == object_map.shape:
        colors = colors or ClassColors.voc_default()
        instances = instance_masks(object_map, class_map, colors, where, scratch)
    mask_size = object_map.shape[::-1]
    if not _matched(instances, item, mask_size):
        reason = f" ({scratch.refusals[0].message})" if scratch.refusals else ""
        report.note(
            "masks-not-matched",
            f"its {len(instances or [])} instance(s) do not match the {item.count} object(s) of "
            f"{item.location} by order, class and size{reason}: the boxes are kept without "
            "masks (read the export as Segmentation mask 1.1 to use the masks)",
            where["object"],
        )
        return {}, size
    report.extend(scratch.entries)
    return {i: mask for i, _, mask in instances}, mask_size


def _matched(instances, item: _Item, mask_size) -> bool:
    """VOC's convention holds: instance i is object i, of its class, on an image of its size."""
    if instances is None or [i for i, _, _ in instances] != list(range(1, item.count + 1)):
        return False
    names = {o.index: o.name for o in item.objects}  # skipped objects match any class
    if any(name not in (None, names.get(i, name)) for i, name, _ in instances):
        return False
    return None in (item.width, item.height) or (item.width, item.height) == mask_size
