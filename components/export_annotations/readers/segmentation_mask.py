"""Segmentation mask 1.1: CVAT's VOC-style colour PNGs, read as one instance per object.

Layout: `labelmap.txt` (`name:r,g,b:parts:actions`), `SegmentationClass/<id>.png` (a colour per
class), `SegmentationObject/<id>.png` (a colour per instance, from VOC's instance palette),
`JPEGImages/<id>.<ext>`, `ImageSets/Segmentation/<subset>.txt`.

Each instance colour becomes a full-image mask whose class is the majority class colour under it.
Without `SegmentationObject/<id>.png` every class region becomes one instance (a report note says
so: touching objects of a class are merged). The background label's colour and VOC's void colour
(224,224,192, the object borders) belong to no instance; any other unknown colour is refused.
Without `labelmap.txt` the VOC palette and its 20 classes apply, as in CVAT and datumaro.

The colour, label map and subset-list helpers here are shared with the PASCAL VOC reader.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ...common.report import Report
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder
from .text import read_text

FORMATS = ("Segmentation mask 1.1",)

CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
IMAGES_DIR = "JPEGImages"
LABELMAP_FILE = "labelmap.txt"
SUBSETS_DIR = Path("ImageSets") / "Segmentation"

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
BACKGROUND_COLOR = (0, 0, 0)
VOID_COLOR = (224, 224, 192)  # VOC palette index 255: object borders, "don't care"
VOID_LABEL = "ignored"  # datumaro's name for the void colour in the label maps it writes


def voc_palette(size: int = 256) -> list[tuple[int, int, int]]:
    """VOC's colour for each index (classes and instances alike): the bits of i spread over RGB."""
    palette = []
    for index in range(size):
        r = g = b = 0
        bits = index
        for shift in range(7, -1, -1):
            r |= (bits & 1) << shift
            g |= ((bits >> 1) & 1) << shift
            b |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette.append((r, g, b))
    return palette


VOC_PALETTE = voc_palette()


def pack(color) -> int:
    r, g, b = color
    return (int(r) << 16) | (int(g) << 8) | int(b)


def unpack(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


INSTANCE_OF_COLOR = {pack(color): index for index, color in enumerate(VOC_PALETTE)}


# --- label map ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelmapEntry:
    name: str
    color: tuple[int, int, int] | None
    parts: tuple[str, ...]
    line: int


def read_labelmap(path: Path) -> list[LabelmapEntry]:
    """`name:r,g,b:parts:actions` lines (CVAT and datumaro write them); `#` starts a comment.

    When no line gives a colour (`cat:::`), each label has VOC's palette colour of its index, as
    in datumaro; when some do, a label without one has no colour (as in datumaro).
    """
    entries, seen = [], set()
    for line_no, line in enumerate(read_text(path, path.name).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name} line {line_no}"
        fields = line.split(":")
        if len(fields) != 4:
            raise ValueError(f"{where}: expected `name:r,g,b:parts:actions`, got {line!r}")
        name = fields[0].strip()
        if not name or name in seen:
            raise ValueError(f"{where}: label name {name!r} is empty or given twice")
        seen.add(name)
        parts = tuple(p.strip() for p in fields[2].split(",") if p.strip())
        entries.append(LabelmapEntry(name, _color(fields[1], where), parts, line_no))
    if entries and all(entry.color is None for entry in entries):
        # datumaro's rule (make_voc_categories): with no colour given at all, the label at
        # index i (the first line is index 0, usually the background) has VOC's colour i;
        # the void label keeps VOC's void index, 255, as in datumaro's own VOC label map.
        entries = [
            replace(e, color=VOID_COLOR if e.name == VOID_LABEL else VOC_PALETTE[i])
            for i, e in enumerate(entries)
        ]
    return entries


def _color(text: str, where: str) -> tuple[int, int, int] | None:
    if not text.strip():
        return None
    try:
        color = tuple(int(c) for c in text.split(","))
    except ValueError:
        color = ()
    if len(color) != 3 or not all(0 <= c <= 255 for c in color):
        raise ValueError(f"{where}: colour {text!r} is not an `r,g,b` triplet of 0..255")
    return color


def background_entry(entries: list[LabelmapEntry]) -> LabelmapEntry | None:
    """The label that means "no object": the black one, else the one named background."""
    black = [e for e in entries if e.color == BACKGROUND_COLOR]
    named = [e for e in entries if e.name == VOC_CLASSES[0]]
    return (black or named or [None])[0]


def is_void(entry: LabelmapEntry) -> bool:
    return entry.name == VOID_LABEL and entry.color in (None, VOID_COLOR)


@dataclass
class ClassColors:
    """Which class each colour of a class map means."""

    classes: dict[int, str] = field(default_factory=dict)  # packed colour -> class name
    ignored: set[int] = field(default_factory=set)  # background and void: no instance
    declared: tuple[str, ...] = ()  # the label map's classes, in its order

    @classmethod
    def voc_default(cls) -> ClassColors:
        classes = {pack(VOC_PALETTE[i]): name for i, name in enumerate(VOC_CLASSES) if i}
        return cls(classes, {pack(BACKGROUND_COLOR), pack(VOID_COLOR)})

    @classmethod
    def from_labelmap(cls, entries: list[LabelmapEntry], source: str) -> ClassColors:
        background = background_entry(entries)
        colors = cls(ignored={pack(BACKGROUND_COLOR), pack(VOID_COLOR)})
        declared = []
        for entry in entries:
            if entry is background or is_void(entry):
                if entry.color is not None:
                    colors.ignored.add(pack(entry.color))
                continue
            declared.append(entry.name)
            if entry.color is None:
                continue
            key = pack(entry.color)
            if key in colors.classes:
                raise ValueError(
                    f"{source} line {entry.line}: colour {entry.color} is given to both "
                    f"{colors.classes[key]!r} and {entry.name!r}"
                )
            colors.classes[key] = entry.name
            colors.ignored.discard(key)
        colors.declared = tuple(declared)
        return colors


def class_colors(root: Path) -> ClassColors:
    path = root / LABELMAP_FILE
    if not path.is_file():
        return ClassColors.voc_default()
    return ClassColors.from_labelmap(read_labelmap(path), LABELMAP_FILE)


# --- masks ----------------------------------------------------------------------------------


def load_colors(path: Path) -> np.ndarray:
    """A mask PNG as one packed RGB integer per pixel; palette and index PNGs via their palette."""
    with Image.open(path) as picture:
        if picture.mode in ("L", "I", "I;16"):  # bare indices: VOC's palette gives their colours
            indices = np.asarray(picture).astype(np.int64)
            table = np.array([pack(c) for c in VOC_PALETTE], np.int64)
            return table[np.clip(indices, 0, 255)]
        rgb = np.asarray(picture.convert("RGB")).astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _colors_listed(keys) -> str:
    return ", ".join(str(unpack(int(k))) for k in list(keys)[:5]) + (
        " ..." if len(keys) > 5 else ""
    )


def known_classes(class_map: np.ndarray, colors: ClassColors, where: str, report: Report) -> bool:
    unknown = sorted(set(np.unique(class_map).tolist()) - set(colors.classes) - colors.ignored)
    if unknown:
        report.refused(
            "mask-color-unknown",
            f"colour(s) {_colors_listed(unknown)} are no class of the label map "
            f"({LABELMAP_FILE} or, without it, VOC's palette)",
            where,
        )
    return not unknown


def instance_masks(object_map, class_map, colors: ClassColors, where: dict, report: Report):
    """[(instance index, class name or None, mask)] in index order; None when refused.

    `where` names the two files: {"object": ..., "class": ...}. Without a class map the class is
    None (the caller decides); with one it is the majority class under the instance.
    """
    present = set(np.unique(object_map).tolist()) - {pack(BACKGROUND_COLOR), pack(VOID_COLOR)}
    unknown = sorted(k for k in present if k not in INSTANCE_OF_COLOR)
    if unknown:
        report.refused(
            "mask-color-unknown",
            f"colour(s) {_colors_listed(unknown)} are not in VOC's instance palette",
            where["object"],
        )
        return None
    if class_map is not None and not known_classes(class_map, colors, where["class"], report):
        return None
    out = []
    for key in sorted(present, key=INSTANCE_OF_COLOR.get):
        index, mask = INSTANCE_OF_COLOR[key], object_map == key
        name = None
        if class_map is not None:
            name = _majority_class(class_map[mask], colors, index, where["object"], report)
            if name is None:
                continue
        out.append((index, name, mask))
    return out


def _majority_class(values, colors: ClassColors, index: int, where: str, report: Report):
    keys, counts = np.unique(values, return_counts=True)
    ranked = sorted(
        ((int(n), int(k)) for k, n in zip(keys, counts) if int(k) in colors.classes), reverse=True
    )
    if not ranked:
        report.skipped(
            "instance-without-class",
            f"instance {index} lies on background or void only in its class map",
            where,
        )
        return None
    name = colors.classes[ranked[0][1]]
    if len(ranked) > 1:
        report.note(
            "instance-several-classes",
            f"instance {index} covers {len(ranked)} classes in its class map; it takes the "
            f"majority, {name!r} ({ranked[0][0]} of {sum(n for n, _ in ranked)} pixels)",
            where,
        )
    return name


def class_regions(class_map, colors: ClassColors, where: str, report: Report):
    """[(class name, mask)] per class colour present; None when refused."""
    if not known_classes(class_map, colors, where, report):
        return None
    present = set(np.unique(class_map).tolist())
    keys = [k for k in colors.classes if k in present]  # in the label map's (or palette's) order
    return [(colors.classes[k], class_map == k) for k in keys]


# --- lists and files ------------------------------------------------------------------------


def read_subset_lists(root: Path, lists_dir: Path, report: Report) -> dict[str, str]:
    """Item id -> subset from `<lists_dir>/<subset>.txt` (one id per line; blank, # lines skip).

    `<class>_<subset>.txt` files (VOC's per-class lists) are not subsets. VOC's `trainval.txt`
    (train and val together) is left out when both exist; an id in several lists keeps the
    first list by name, with a note.
    """
    folder = root / lists_dir
    lists = {p.stem: p for p in sorted(folder.glob("*.txt"))} if folder.is_dir() else {}
    lists = {s: p for s, p in lists.items() if "_" not in s or s.split("_", 1)[1] not in lists}
    if "train" in lists and "val" in lists:
        lists.pop("trainval", None)
    subsets: dict[str, str] = {}
    repeated = []
    for subset, path in lists.items():
        for line in read_text(path, path.relative_to(root).as_posix()).splitlines():
            item_id = line.strip()
            if not item_id or item_id.startswith("#"):
                continue
            try:
                reader_relative_path(item_id)
            except ValueError as e:
                where = path.relative_to(root).as_posix()
                message = f"id {item_id!r} is no file inside the export: it {e}"
                report.refused("path-escapes", message, where)
                continue
            if subsets.setdefault(item_id, subset) != subset:
                repeated.append(item_id)
    if repeated:
        report.note(
            "subset-repeated",
            f"{len(repeated)} id(s) are in several subset lists (e.g. {repeated[0]!r}); each "
            "keeps the first list by name",
            lists_dir.as_posix(),
        )
    return subsets


def find_image(folder: Path, item_id: str) -> Path:
    """`folder/<item_id>.<any extension>`; `.jpg` (reported missing later) when there is none."""
    if folder.is_dir():
        found = sorted(p for p in folder.glob(glob.escape(item_id) + ".*") if p.is_file())
        if found:
            return found[0]
    return folder / f"{item_id}.jpg"


# --- the reader -----------------------------------------------------------------------------


def detect(root: Path) -> list[str]:
    """Class or instance PNGs, and no VOC annotation XMLs (that is PASCAL VOC, masks and all).

    By content: CVAT's Segmentation mask export leaves an empty `Annotations/` folder (a zip of it
    drops the folder), so only XMLs in it make the export PASCAL VOC.
    """
    root = Path(root)
    annotations = root / "Annotations"
    if annotations.is_dir() and next(annotations.rglob("*.xml"), None) is not None:
        return []
    for name in (CLASS_DIR, OBJECT_DIR):
        folder = root / name
        if folder.is_dir() and next(folder.rglob("*.png"), None) is not None:
            return list(FORMATS)
    return []


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    colors = class_colors(root)
    for name in colors.declared:
        builder.category(name)
    subsets = read_subset_lists(root, SUBSETS_DIR, builder.report)
    item_ids = _item_ids(root, subsets)
    if not item_ids:
        raise ValueError(
            f"{root}: no masks in {CLASS_DIR}/ or {OBJECT_DIR}/ and no ids in {SUBSETS_DIR}/: "
            "not a Segmentation mask 1.1 export"
        )
    for item_id in item_ids:
        _read_item(root, item_id, subsets.get(item_id), colors, builder)


def _item_ids(root: Path, subsets: dict[str, str]) -> list[str]:
    found = set()
    for name in (CLASS_DIR, OBJECT_DIR):
        folder = root / name
        if folder.is_dir():
            found |= {
                p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.png")
            }
    return sorted(found | set(subsets))


def _read_item(root, item_id, subset, colors: ClassColors, builder: DatasetBuilder) -> None:
    report = builder.report
    where = {"class": f"{CLASS_DIR}/{item_id}.png", "object": f"{OBJECT_DIR}/{item_id}.png"}
    maps = {
        kind: load_colors(root / path) for kind, path in where.items() if (root / path).is_file()
    }
    if len({m.shape for m in maps.values()}) > 1:
        report.refused(
            "mask-size-mismatch",
            f"{where['class']} and {where['object']} differ in size",
            where["object"],
        )
        return
    height, width = next(iter(maps.values())).shape if maps else (None, None)
    image = find_image(root / IMAGES_DIR, item_id)
    image_id = builder.add_image(
        image,
        image.relative_to(root / IMAGES_DIR).as_posix(),
        width=width,
        height=height,
        subset=subset,
        location=image.relative_to(root).as_posix(),
    )
    if "object" in maps:
        if "class" not in maps:
            report.refused(
                "class-map-missing",
                f"the instances have no {where['class']} to take their classes from",
                where["object"],
            )
            return
        for index, name, mask in (
            instance_masks(maps["object"], maps["class"], colors, where, report) or []
        ):
            builder.add_mask(image_id, name, mask, location=f"{where['object']} instance {index}")
    elif "class" in maps:
        regions = class_regions(maps["class"], colors, where["class"], report) or []
        if regions:
            report.note(
                "instances-merged-by-class",
                f"no {where['object']}: each class region is one instance ({len(regions)}), "
                "so touching objects of one class are merged",
                where["class"],
            )
        for name, mask in regions:
            builder.add_mask(image_id, name, mask, location=f"{where['class']} class {name!r}")
