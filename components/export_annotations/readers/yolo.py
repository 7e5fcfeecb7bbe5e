"""YOLO 1.1 (CVAT's Darknet layout): `obj.names`, `obj.data`, `<subset>.txt` image lists and
`obj_<subset>_data/` holding each image with a `.txt` beside it, one `class cx cy w h` line per
box (class: 0-based line of obj.names; coordinates normalized to the image size).

The annotation holds no image size: it is taken from the image file (as displayed, EXIF applied,
as CVAT shows it). So the boxes of a missing or unreadable image are skipped with a report line
(the builder refuses the image itself, by name). Subsets come from obj.data's list files
(`train = data/train.txt`; darknet's `data/` prefix is dropped) and from any `obj_<subset>_data/`
folder not listed there. Malformed lines and class indexes outside obj.names are refused with
file:line. An image without a `.txt` is kept without boxes (a note says so).
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

from PIL import Image

from ...common.image_file import ORIENTATION_TAG, ImageProbe
from ...common.report import Report
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder
from .text import read_text

FORMATS = ("YOLO 1.1",)

NAMES_FILE = "obj.names"
DATA_FILE = "obj.data"
NOT_SUBSETS = ("classes", "names", "backup")  # obj.data keys that name no image list


def detect(root: Path) -> list[str]:
    root = Path(root)
    if (root / NAMES_FILE).is_file() or (root / DATA_FILE).is_file():
        return list(FORMATS)
    return []


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    config = _config(root / DATA_FILE)
    names = _class_names(root, config, builder.report)
    for name in names:
        builder.category(name)
    items = _items(root, config, builder.report)
    if not items:
        raise ValueError(f"{root}: no images or annotation files in obj_<subset>_data/ folders")
    for stem, (subset, image) in items.items():
        _read_item(root, stem, image, subset, names, builder)


def _config(path: Path) -> dict[str, str]:
    """obj.data's `key = value` lines."""
    if not path.is_file():
        return {}
    config = {}
    for line in read_text(path, DATA_FILE).splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            config[key.strip()] = value.strip()
    return config


def _localize(path: str) -> str:
    """A darknet path (`data/obj_train_data/a.jpg`) as a path inside the export; ValueError,
    saying why, when it leads out of the export."""
    path = path.strip().replace("\\", "/")
    path = path[len("data/") :] if path.startswith("data/") else path
    return reader_relative_path(path).as_posix()


def _class_names(root: Path, config: dict[str, str], report: Report) -> list[str]:
    try:
        path = root / _localize(config.get("names", NAMES_FILE))
    except ValueError:  # leads out of the export: CVAT's own place is the only one read
        path = root / NAMES_FILE
    if not path.is_file():
        path = root / NAMES_FILE
    if not path.is_file():
        raise ValueError(f"{root}: no {NAMES_FILE}: YOLO 1.1 needs its class names")
    text = read_text(path, path.relative_to(root).as_posix())
    names = [line.strip() for line in text.splitlines()]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"{path}: no class names")
    declared = config.get("classes", "").strip()
    if declared and declared != str(len(names)):
        report.note(
            "class-count-differs",
            f"obj.data says classes = {declared}, {path.name} names {len(names)}; the names count",
            DATA_FILE,
        )
    indexes_of: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        indexes_of.setdefault(name, []).append(index)
    for name, indexes in indexes_of.items():
        if len(indexes) > 1:
            message = f"class {name!r} has indexes {indexes}: merged into one class"
            report.fixed("category-merged", message, path.relative_to(root).as_posix())
    return names


def _items(root: Path, config: dict[str, str], report: Report) -> dict[str, list]:
    """{path without suffix: [subset, the image's path or None when only its .txt is known]}."""
    items: dict[str, list] = {}
    for subset, value in config.items():
        if subset in NOT_SUBSETS or not value.strip():
            continue
        try:
            list_file = root / _localize(value)
        except ValueError as e:
            message = (
                f"{subset} = {value!r} is no file inside the export (it {e}): not read; the "
                f"obj_{subset}_data/ folder still is"
            )
            report.note("path-escapes", message, DATA_FILE)
            continue
        if not list_file.is_file():
            continue
        text = read_text(list_file, list_file.relative_to(root).as_posix())
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                image = _localize(line)
            except ValueError as e:
                where = f"{list_file.relative_to(root).as_posix()}:{line_no}"
                message = f"{line.strip()!r} is no file inside the export: it {e}"
                report.refused("path-escapes", message, where)
                continue
            items.setdefault(str(PurePosixPath(image).with_suffix("")), [subset, image])
    for folder in sorted(root.glob("obj_*_data")):
        subset = folder.name[len("obj_") : -len("_data")]
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                relative = path.relative_to(root).as_posix()
                entry = items.setdefault(
                    str(PurePosixPath(relative).with_suffix("")), [subset, None]
                )
                if path.suffix != ".txt" and entry[1] is None:
                    entry[1] = relative
    return items


def _read_item(root, stem: str, image: str | None, subset: str, names, builder) -> None:
    report = builder.report
    label_file = root / f"{stem}.txt"
    location = f"{stem}.txt"
    image_path = root / (image or stem)  # an unknown image: the builder names it missing
    image_id = builder.add_image(
        image_path, image or stem, subset=subset, location=image or location
    )
    if not label_file.is_file():
        report.note("labels-missing", f"no {location}: the image is kept without boxes", image)
        return
    boxes = _parse_labels(label_file, location, names, report)
    if not boxes:
        return
    size = _displayed_size(image_path) if image else None
    if size is None:
        report.skipped(
            "boxes-without-image",
            f"{len(boxes)} box(es) skipped: the image {image or stem + '.*'} is missing or "
            "unreadable, and YOLO's normalized coordinates need its size",
            location,
        )
        return
    width, height = size
    for name, (cx, cy, w, h), where in boxes:
        x, y = (cx - w / 2) * width, (cy - h / 2) * height
        builder.add_box(image_id, name, x, y, w * width, h * height, location=where)


def _displayed_size(path: Path) -> tuple[int, int] | None:
    """The size CVAT shows (EXIF applied), from the header only: `build` decodes the file."""
    try:
        with Image.open(path) as picture:
            orientation = picture.getexif().get(ORIENTATION_TAG, 1)
            return ImageProbe(picture.width, picture.height, orientation, None).displayed_size
    except Exception:  # missing or unreadable (PIL raises many kinds); the builder says which
        return None


def _parse_labels(path: Path, location: str, names: list[str], report: Report) -> list:
    """[(class name, (cx, cy, w, h), file:line)] for the well-formed lines; refuses the rest."""
    boxes = []
    for line_no, line in enumerate(read_text(path, location).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{location}:{line_no}"
        try:
            index, box = _parse_line(line)
        except ValueError as e:
            report.refused("yolo-line-malformed", f"{line.strip()!r}: {e}", where)
            continue
        if not 0 <= index < len(names):
            message = f"class index {index} is outside obj.names' 0..{len(names) - 1}"
            report.refused("class-out-of-range", message, where)
            continue
        boxes.append((names[index], box, where))
    return boxes


def _parse_line(line: str) -> tuple[int, tuple]:
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"{len(fields)} field(s); expected `class cx cy w h`")
    try:
        index = int(fields[0])
        box = tuple(float(v) for v in fields[1:])
    except ValueError:
        raise ValueError("the class must be an integer and the coordinates numbers") from None
    if not all(map(math.isfinite, box)) or box[2] < 0 or box[3] < 0:
        raise ValueError("coordinates must be finite, width and height not negative")
    return index, box
