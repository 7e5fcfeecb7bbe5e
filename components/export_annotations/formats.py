"""Which reader reads an export: by the format name a user gives, or detected from the files."""

from __future__ import annotations

from pathlib import Path

from .builder import DatasetBuilder
from .readers import coco, cvat_xml, labelme, mot, safe_xml, segmentation_mask, tfrecord, voc, yolo

READERS = (coco, cvat_xml, yolo, voc, labelme, segmentation_mask, mot, tfrecord)
FORMATS = {name: reader for reader in READERS for name in reader.FORMATS}
AUTO = "auto"
# When nothing is detected, this many XML files (top level and two folders down, where the
# readers look) are read whole to say which of them cannot be read.
XML_FILES_CHECKED = 50

# Short names people type, beside CVAT's display names (matched case-insensitively).
ALIASES = {
    "coco": "COCO 1.0",
    "cvat": "CVAT for images 1.1",
    "cvat_images": "CVAT for images 1.1",
    "cvat_video": "CVAT for video 1.1",
    "yolo": "YOLO 1.1",
    "voc": "PASCAL VOC 1.1",
    "pascal_voc": "PASCAL VOC 1.1",
    "labelme": "LabelMe 3.0",
    "segmentation_mask": "Segmentation mask 1.1",
    "mot": "MOT 1.1",
    "tfrecord": "TFRecord 1.0",
    "tf_detection_api": "TFRecord 1.0",
}


def resolve_format(name: str) -> str:
    """CVAT's display name for `name` (a display name or an alias, any case)."""
    wanted = name.strip().lower().replace("-", "_")
    for display in FORMATS:
        if display.lower() == name.strip().lower():
            return display
    if wanted in ALIASES:
        return ALIASES[wanted]
    raise ValueError(
        f"unknown annotation format {name!r}; use {AUTO!r} or one of: "
        + ", ".join(f"{display!r}" for display in FORMATS)
        + f" (short names: {', '.join(ALIASES)})"
    )


def detect_format(root: Path) -> str:
    """The one format the export at `root` looks like; a clear error for none or several."""
    candidates = [name for reader in READERS for name in reader.detect(root)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        listing = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:20]
        unreadable = _unreadable_xml(root)
        raise ValueError(
            f"{root}: no known CVAT export format found (top level holds {listing}). "
            + (f"XML that cannot be read: {'; '.join(unreadable)}. " if unreadable else "")
            + f"Supported: {', '.join(FORMATS)}. Pass the format explicitly if it is one of them."
        )
    raise ValueError(
        f"{root}: the export looks like several formats ({', '.join(candidates)}); "
        "pass the format explicitly"
    )


def _unreadable_xml(root: Path) -> list[str]:
    """Why each of the first XML files that cannot be read cannot (malformed, DTD, ...)."""
    paths = [p for pattern in ("*.xml", "*/*.xml", "*/*/*.xml") for p in sorted(root.glob(pattern))]
    problems = (
        safe_xml.problem(p, p.relative_to(root).as_posix()) for p in paths[:XML_FILES_CHECKED]
    )
    return [problem for problem in problems if problem][:5]


def read_export(root: Path, builder: DatasetBuilder, format_name: str = AUTO) -> str:
    """Fill `builder` from the export at `root`; returns the format it was read as."""
    auto = format_name.strip().lower() == AUTO
    name = detect_format(root) if auto else resolve_format(format_name)
    FORMATS[name].read(root, builder, name)
    return name
