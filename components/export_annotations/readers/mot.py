"""MOT 1.1: `gt/gt.txt` rows `frame,track_id,x,y,w,h,not_ignored,class_id,visibility`,
`gt/labels.txt` (class_id 1 is its first line), frames `img1/000001.jpg`... (1-based), and
optionally `seqinfo.ini` (frame count, size, image folder and extension).

Every frame becomes an image (annotated or not) and the whole sequence one group, so a split
never separates its frames. Kept as attributes: `track_id` (when positive; -1 is no track) and
`visibility` (with `occluded` = visibility 0, as CVAT writes an occluded box). Skipped with a
report line: rows with not_ignored = 0 (MOT's "ignore this box"; CVAT writes 0 only for shapes
whose `ignored` attribute is set) and rows without a class (class_id -1). Refused: malformed
rows, frames below 1 and class ids outside labels.txt, each with file:line. A folder holding
several sequences (`<seq>/gt/gt.txt`) is read as several groups. A group is named by
seqinfo.ini's `name`, else by its folder (for an archive, the archive's name: CVAT's MOT zips
have no seqinfo.ini).
"""

from __future__ import annotations

import configparser
import math
from pathlib import Path

from ...common.report import Report
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder
from .text import read_text

FORMATS = ("MOT 1.1",)

GT_FILE = Path("gt") / "gt.txt"
LABELS_FILE = Path("gt") / "labels.txt"
SEQINFO_FILE = "seqinfo.ini"
# MOT16's classes, for class ids when labels.txt is absent
MOT_CLASSES = (
    "pedestrian",
    "person on vehicle",
    "car",
    "bicycle",
    "motorbike",
    "non motorized vehicle",
    "static person",
    "distractor",
    "occluder",
    "occluder on the ground",
    "occluder full",
    "reflection",
)


def detect(root: Path) -> list[str]:
    root = Path(root)
    return list(FORMATS) if _sequences(root) else []


def _sequences(root: Path) -> list[Path]:
    if (root / GT_FILE).is_file():
        return [root]
    return sorted(p.parents[1] for p in root.glob(f"*/{GT_FILE.as_posix()}"))


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    sequences = _sequences(root)
    if not sequences:
        raise ValueError(
            f"{root}: no {GT_FILE.as_posix()}: a MOT 1.1 export holds gt/gt.txt, gt/labels.txt "
            "and img1/"
        )
    for sequence in sequences:
        _read_sequence(root, sequence, builder)


def _read_sequence(root: Path, sequence: Path, builder: DatasetBuilder) -> None:
    report = builder.report
    prefix = "" if sequence == root else sequence.relative_to(root).as_posix() + "/"
    labels = _labels(sequence, prefix, report)
    for name in labels:
        builder.category(name)
    info = _seqinfo(sequence / SEQINFO_FILE, prefix, report)
    image_dir = sequence / info.get("imdir", "img1")
    rows = _rows(sequence / GT_FILE, prefix + GT_FILE.as_posix(), labels, report)
    on_disk = _frames_on_disk(image_dir)
    frames = set(rows) | set(on_disk) | set(range(1, (info.get("seqlength") or 0) + 1))
    name = prefix.strip("/") or info.get("name") or sequence.name  # unique within the export
    group = None if builder.default_group else name
    for frame in sorted(frames):
        image = on_disk.get(frame) or _frame_image(image_dir, frame, info.get("imext"))
        image_id = builder.add_image(
            image,
            image.relative_to(root).as_posix(),
            width=info.get("imwidth"),
            height=info.get("imheight"),
            group=group,
            location=f"{prefix}{GT_FILE.as_posix()} frame {frame}",
        )
        for name, box, attributes, where in rows.get(frame, []):
            builder.add_box(image_id, name, *box, attributes=attributes, location=where)


def _labels(sequence: Path, prefix: str, report: Report) -> list[str]:
    path = sequence / LABELS_FILE
    if path.is_file():
        lines = read_text(path, prefix + LABELS_FILE.as_posix()).splitlines()
        labels = [line.strip() for line in lines if line.strip()]
        if labels:
            return labels
    report.note(
        "mot-standard-classes",
        f"no classes in {LABELS_FILE.as_posix()}: class ids are MOT16's {len(MOT_CLASSES)} classes",
        prefix + LABELS_FILE.as_posix(),
    )
    return list(MOT_CLASSES)


def _seqinfo(path: Path, prefix: str, report: Report) -> dict:
    """seqinfo.ini's [Sequence] keys, lower-cased; the numeric ones as ints."""
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(read_text(path, prefix + SEQINFO_FILE))
        info = dict(parser["Sequence"]) if parser.has_section("Sequence") else {}
        for key in ("seqlength", "imwidth", "imheight"):
            if key in info:
                info[key] = int(info[key]) if int(info[key]) > 0 else None
        if info.get("imdir"):
            try:
                reader_relative_path(info["imdir"])
            except ValueError as e:
                message = f"imDir {info['imdir']!r} is no folder inside the export: it {e}"
                raise ValueError(message) from None
    except (configparser.Error, ValueError) as e:
        report.refused("seqinfo-malformed", f"cannot read it: {e}", prefix + SEQINFO_FILE)
        return {}
    return info


def _rows(path: Path, location: str, labels: list[str], report: Report) -> dict[int, list]:
    """{frame: [(class name, (x, y, w, h), attributes, location)]} for the usable rows."""
    rows: dict[int, list] = {}
    for line_no, line in enumerate(read_text(path, location).splitlines(), start=1):
        if line.strip():
            where = f"{location}:{line_no}"
            row = _parse_row(line, labels, where, report)
            if row is not None:
                frame, *shape = row
                rows.setdefault(frame, []).append((*shape, where))
    return rows


def _parse_row(line: str, labels: list[str], where: str, report: Report):
    fields = [f.strip() for f in line.split(",")]
    try:
        if len(fields) < 6:
            raise ValueError(f"{len(fields)} field(s), at least 6 (frame, id, x, y, w, h) needed")
        frame, track = int(fields[0]), int(float(fields[1]))
        box = tuple(float(v) for v in fields[2:6])
        not_ignored = float(_field(fields, 6, "1"))
        class_id = int(float(_field(fields, 7, "-1")))
        visibility = float(_field(fields, 8, "1"))
        if not all(map(math.isfinite, (*box, not_ignored, visibility))):
            raise ValueError("a number is not finite")
    except ValueError as e:
        report.refused("mot-row-malformed", f"{line.strip()!r}: {e}", where)
        return None
    if frame < 1:
        report.refused("mot-frame-invalid", f"frame {frame}: MOT frames start at 1", where)
        return None
    if class_id != -1 and not 1 <= class_id <= len(labels):
        report.refused(
            "class-out-of-range", f"class_id {class_id} is outside 1..{len(labels)}", where
        )
        return None
    if not_ignored == 0:
        report.skipped("mot-ignored", "not_ignored is 0: MOT's mark for a box to ignore", where)
        return None
    if class_id == -1:
        report.skipped("label-missing", "class_id is -1: the box has no class", where)
        return None
    if box[2] < 0 or box[3] < 0:
        report.skipped("box-inverted", f"negative width or height {box[2:]}", where)
        return None
    attributes = {"visibility": visibility, "occluded": visibility == 0}
    if track > 0:
        attributes = {"track_id": track, **attributes}
    return frame, labels[class_id - 1], box, attributes


def _field(fields: list[str], index: int, default: str) -> str:
    return fields[index] if len(fields) > index and fields[index] else default


def _frames_on_disk(image_dir: Path) -> dict[int, Path]:
    """{frame: file} for the files named by a frame number (000001.jpg, 1.png)."""
    files = sorted(image_dir.iterdir()) if image_dir.is_dir() else []
    frames = {int(p.stem): p for p in files if p.is_file() and p.stem.isdigit()}
    return {frame: path for frame, path in frames.items() if frame > 0}


def _frame_image(image_dir: Path, frame: int, extension: str | None) -> Path:
    """Where a frame with no file should be, so that the builder names it as missing."""
    return image_dir / f"{frame:06d}{extension or '.jpg'}"
