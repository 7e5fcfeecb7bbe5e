"""COCO 1.0: CVAT's export (`annotations/instances_<subset>.json` with `images/<subset>/` or, older,
`images/`), a plain COCO file beside its images, or Roboflow's `<subset>/_annotations.coco.json`.

Kept: boxes, polygons (several per instance), RLE masks (compressed or not), `iscrowd`, the
`attributes` CVAT writes, images without annotations. Category ids become 1..N in id order; a
category named like the background at id 0 that nothing uses is dropped; categories sharing a
name merge. Annotations naming an unknown category or image are refused with their ids.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ...common.dataset import compressed_rle_counts, is_number
from ...common.storage import reader_relative_path
from ..builder import DatasetBuilder

FORMATS = ("COCO 1.0",)
PEEK_BYTES = 1 << 20
# CVAT writes other COCO tasks in the same layout; they are not instances.
OTHER_TASK_PREFIXES = ("person_keypoints_", "captions_", "image_info_", "panoptic_", "labels_")
BACKGROUND_NAMES = ("_background_", "__background__", "background")
MAX_LISTED_IDS = 30


def detect(root: Path) -> list[str]:
    """["COCO 1.0"] when `root` holds a COCO instances file where CVAT or Roboflow put it."""
    return list(FORMATS) if _annotation_files(Path(root)) else []


def read(root: Path, builder: DatasetBuilder, format_name: str | None = None) -> None:
    root = Path(root)
    files = _annotation_files(root)
    if not files:
        raise ValueError(
            f"{root}: no COCO annotation file: expected annotations/instances_<subset>.json "
            "(CVAT's COCO 1.0 export) or a *.json holding `images`, `annotations`, `categories`"
        )
    for path, subset in files:
        _read_file(_Context(root, path, subset, builder))


def _annotation_files(root: Path) -> list[tuple[Path, str | None]]:
    """(JSON file, subset) pairs: CVAT's layout first, then plain COCO, then Roboflow's."""
    instances = sorted((root / "annotations").glob("instances_*.json"))
    if instances:  # CVAT's own names: read them, and say so when one is broken
        return [(p, p.stem.removeprefix("instances_")) for p in instances]
    plain = sorted((root / "annotations").glob("*.json")) + sorted(root.glob("*.json"))
    plain = [p for p in plain if not p.name.startswith(OTHER_TASK_PREFIXES) and _looks_like_coco(p)]
    if plain:
        return [(p, None) for p in plain]
    roboflow = sorted(root.glob("*/_annotations.coco.json"))
    return [(p, p.parent.name) for p in roboflow if _looks_like_coco(p)]


def _looks_like_coco(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(PEEK_BYTES)
    except OSError:
        return False
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") or b'"images"' not in head:
        return False
    return b'"annotations"' in head or b'"categories"' in head or len(head) == PEEK_BYTES


@dataclass
class _Context:
    root: Path
    path: Path
    subset: str | None
    builder: DatasetBuilder

    @property
    def where(self) -> str:
        return self.path.relative_to(self.root).as_posix()

    @property
    def report(self):
        return self.builder.report


def _read_file(ctx: _Context) -> None:
    coco = _load(ctx)
    annotations = coco.get("annotations", [])
    names = _read_categories(ctx, coco.get("categories", []), annotations)
    images, ambiguous = _read_images(ctx, coco["images"], annotations)
    _read_annotations(ctx, annotations, names, images, ambiguous)


def _load(ctx: _Context) -> dict:
    try:
        coco = json.loads(ctx.path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{ctx.where}: not a readable UTF-8 JSON file ({e})") from None
    except RecursionError:
        raise ValueError(
            f"{ctx.where}: its JSON nests arrays or objects too deeply to read (COCO needs at most "
            "four levels: the file is damaged or not COCO); export it from CVAT again"
        ) from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{ctx.where}: not COCO: the top level must be an object with `images`")
    for key in ("annotations", "categories"):
        if not isinstance(coco.get(key, []), list):
            raise ValueError(f"{ctx.where}: `{key}` must be a list")
    return coco


# --- categories ------------------------------------------------------------------------------


def _read_categories(ctx: _Context, categories: list, annotations: list) -> dict[int, str]:
    """Declare the classes in id order; returns the source category id -> class name."""
    names: dict[int, str] = {}
    conflicting: set[int] = set()
    for index, category in enumerate(categories):
        category_id = category.get("id") if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        name = name.strip() if isinstance(name, str) else ""
        if not _is_int(category_id) or not name:
            ctx.report.refused(
                "category-invalid",
                f"categories[{index}] {category!r}: a category needs an integer id and a name",
                ctx.where,
            )
        elif names.setdefault(category_id, name) != name:
            conflicting.add(category_id)
    for category_id in sorted(conflicting):
        ctx.report.refused(
            "category-id-duplicate",
            f"category id {category_id} is given to several names "
            f"({', '.join(repr(c.get('name')) for c in categories if c.get('id') == category_id)})"
            ": its annotations cannot be given a class",
            ctx.where,
        )
        del names[category_id]
    _drop_unused_background(ctx, names, annotations)
    _report_merged_names(ctx, names)
    remapped = []
    for category_id, name in sorted(names.items()):
        class_id = ctx.builder.category(name)
        if class_id != category_id:
            remapped.append(f"{category_id} ({name}) -> {class_id}")
    if remapped:
        ctx.report.fixed(
            "category-ids-remapped",
            "class ids must be 1..N with no gaps (0 is the background): category ids renumbered "
            "in id order: " + ", ".join(remapped),
            ctx.where,
        )
    return names


def _drop_unused_background(ctx: _Context, names: dict[int, str], annotations: list) -> None:
    if names.get(0, "").lower() not in BACKGROUND_NAMES:
        return
    if any(isinstance(a, dict) and a.get("category_id") == 0 for a in annotations):
        return
    ctx.report.skipped(
        "category-background",
        f"category id 0 {names.pop(0)!r} is the background, not a class (no annotation uses it)",
        ctx.where,
    )


def _report_merged_names(ctx: _Context, names: dict[int, str]) -> None:
    ids_of: dict[str, list[int]] = {}
    for category_id, name in sorted(names.items()):
        ids_of.setdefault(name, []).append(category_id)
    for name, ids in ids_of.items():
        if len(ids) > 1:
            message = f"category {name!r} has ids {ids}: merged into one class"
            ctx.report.fixed("category-merged", message, ctx.where)


# --- images ----------------------------------------------------------------------------------


def _read_images(ctx: _Context, images: list, annotations: list) -> tuple[dict[int, int], set]:
    """Register every image; returns source id -> builder id, and the ids several images share."""
    counts = Counter(image.get("id") for image in images if isinstance(image, dict))
    shared = {i for i, n in counts.items() if _is_int(i) and n > 1}
    if shared:
        ctx.report.fixed(
            "image-id-duplicate",
            f"image ids {_listed(sorted(shared))} are used by several images: renumbered (their "
            "annotations, if any, cannot be placed and are refused)",
            ctx.where,
        )
    rle_sizes = _rle_sizes(annotations)
    finder = _ImageFinder(ctx)
    ids: dict[int, int] = {}
    for index, image in enumerate(images):
        file_name = image.get("file_name") if isinstance(image, dict) else None
        named = isinstance(file_name, str) and file_name.strip()
        if not _is_int(image.get("id") if isinstance(image, dict) else None) or not named:
            ctx.report.refused(
                "image-invalid",
                f"images[{index}] {str(image)[:200]}: an image needs an integer id and a file_name",
                ctx.where,
            )
            continue
        try:
            relative = reader_relative_path(file_name).as_posix()
        except ValueError as e:
            message = f"image id {image['id']} file_name {file_name!r} is no file inside the export"
            ctx.report.refused("path-escapes", f"{message}: it {e}", ctx.where)
            continue
        source, name = finder.find(relative)
        width, height = _positive(image.get("width")), _positive(image.get("height"))
        if width is None or height is None:  # then the RLE says what size the annotator saw
            height, width = rle_sizes.get(image["id"], (None, None))
        new_id = ctx.builder.add_image(
            source,
            name,
            width=width,
            height=height,
            # `subset` and `group` beside COCO's fields: our own Dataset artifact read back
            subset=_text(image.get("subset")) or ctx.subset,
            group=_text(image.get("group")),
            location=f"{ctx.where}: image id {image['id']} {file_name!r}",
        )
        if image["id"] not in shared:
            ids[image["id"]] = new_id
    return ids, shared


def _rle_sizes(annotations: list) -> dict[int, tuple[int, int]]:
    sizes = {}
    for ann in annotations:
        segmentation = ann.get("segmentation") if isinstance(ann, dict) else None
        if isinstance(segmentation, dict) and _is_size(segmentation.get("size")):
            if _is_int(ann.get("image_id")):
                sizes.setdefault(ann["image_id"], tuple(segmentation["size"]))
    return sizes


class _ImageFinder:
    """Where an image file is: images/<subset>/, images/, beside the JSON, or in a folder there."""

    def __init__(self, ctx: _Context):
        self.root = ctx.root
        self.images = ctx.root / "images"
        beside = ctx.path.parent
        bases = [self.images / ctx.subset] if ctx.subset else []
        bases += [self.images, beside, *sorted(d for d in beside.iterdir() if d.is_dir())]
        bases.append(ctx.root)
        self.bases = list(dict.fromkeys(bases))

    def find(self, relative: str) -> tuple[Path, str]:
        """The file, or where it should be (the builder refuses it by name); its Dataset name:
        its path inside images/, or else inside the export."""
        base = next((b for b in self.bases if (b / relative).is_file()), self.bases[0])
        path = base / relative
        inside = self.images if path.is_relative_to(self.images) else self.root
        return path, path.relative_to(inside).as_posix()


# --- annotations -----------------------------------------------------------------------------


def _read_annotations(ctx, annotations, names, images, ambiguous) -> None:
    ids = Counter(a.get("id") for a in annotations if isinstance(a, dict))
    repeated = sorted(str(i) for i, n in ids.items() if n > 1)
    if repeated:
        ctx.report.fixed(
            "annotation-id-duplicate",
            f"annotation ids {_listed(repeated)} are used more than once: renumbered",
            ctx.where,
        )
    unknown_category, unknown_image, ambiguous_image = [], [], []
    crowd = 0
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            message = f"annotations[{index}] is not an object"
            ctx.report.refused("annotation-invalid", message, ctx.where)
            continue
        ann_id = ann.get("id", f"#{index}")
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if _is_int(image_id) and image_id in ambiguous:
            ambiguous_image.append(ann_id)
        elif not _is_int(image_id) or image_id not in images:
            unknown_image.append(ann_id)
        elif not _is_int(category_id) or category_id not in names:
            unknown_category.append(ann_id)
        else:
            location = f"{ctx.where}: annotation id {ann_id} (image id {image_id})"
            crowd += _add_annotation(ctx, ann, images[image_id], names[category_id], location)
    _refuse_ids(ctx, "annotation-category-unknown", unknown_category, "name no known category")
    _refuse_ids(ctx, "annotation-image-unknown", unknown_image, "name no image")
    shared = "name an image id that several images share"
    _refuse_ids(ctx, "annotation-image-ambiguous", ambiguous_image, shared)
    if crowd:
        ctx.report.note(
            "crowd-kept",
            f"{crowd} annotation(s) have iscrowd=1: kept as crowd regions, which training and "
            "evaluation ignore. CVAT's COCO 1.0 export writes every mask as a crowd RLE (unless "
            "the shape has an is_crowd=false attribute); export as 'CVAT for images 1.1' to keep "
            "masks as instances",
            ctx.where,
        )  # fmt: skip


def _refuse_ids(ctx: _Context, code: str, ann_ids: list, why: str) -> None:
    if ann_ids:
        ctx.report.refused(code, f"annotation ids {_listed(ann_ids)} {why}", ctx.where)


def _add_annotation(ctx: _Context, ann: dict, image_id: int, label: str, location: str) -> int:
    """Add one annotation; returns 1 when it went in as a crowd region."""
    iscrowd = 1 if ann.get("iscrowd") in (1, True, "1") else 0
    attributes = ann.get("attributes") if isinstance(ann.get("attributes"), dict) else None
    options = {"iscrowd": iscrowd, "attributes": attributes, "location": location}
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        added = _add_rle(ctx, image_id, label, segmentation, options)
    elif isinstance(segmentation, list) and segmentation:
        added = _add_polygons(ctx, image_id, label, segmentation, ann.get("bbox"), options)
    elif segmentation not in (None, [], ""):
        ctx.report.refused("segmentation-invalid", "segmentation must be polygons or RLE", location)
        added = False
    elif _is_box(ann.get("bbox")):
        ctx.builder.add_box(image_id, label, *ann["bbox"], **options)
        added = True
    else:
        message = f"no segmentation and no valid bbox (bbox {ann.get('bbox')!r})"
        ctx.report.skipped("annotation-no-geometry", message, location)
        added = False
    return int(added and iscrowd)


def _add_polygons(ctx, image_id, label, polygons, bbox, options) -> bool:
    location = options["location"]
    usable = [p for p in polygons if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
              and all(is_number(v) for v in p)]  # fmt: skip
    if usable and len(usable) < len(polygons):
        ctx.report.fixed(
            "polygon-degenerate",
            f"{len(polygons) - len(usable)} of its {len(polygons)} polygons have fewer than 3 "
            "points or bad coordinates: left out",
            location,
        )
    if usable:
        ctx.builder.add_polygon(image_id, label, usable, **options)
        return True
    if _is_box(bbox):
        ctx.report.fixed(
            "polygon-degenerate", "no polygon with 3 or more points: kept as its bbox", location
        )
        ctx.builder.add_box(image_id, label, *bbox, **options)
        return True
    ctx.report.skipped("polygon-degenerate", "no polygon with 3 or more points, no bbox", location)
    return False


def _add_rle(ctx, image_id, label, rle, options) -> bool:
    location = options["location"]
    size, counts = rle.get("size"), rle.get("counts")
    width, height = ctx.builder.image_size(image_id)
    problem = _rle_problem(size, counts)
    if problem is None and width is not None and list(size) != [height, width]:
        problem = f"its size {list(size)} (height, width) is not the image's [{height}, {width}]"
    if problem:
        ctx.report.refused("rle-invalid", f"unusable RLE: {problem}", location)
        return False
    ctx.builder.add_rle(image_id, label, {"size": list(size), "counts": counts}, **options)
    return True


def _rle_problem(size, counts) -> str | None:
    if not _is_size(size):
        return f"size {size!r} must be [height, width]"
    if isinstance(counts, str):
        try:
            counts = compressed_rle_counts(counts)
        except (IndexError, ValueError):
            return "its compressed counts string is truncated or not RLE"
    elif not (isinstance(counts, list) and all(_is_int(c) for c in counts)):
        return "counts must be a compressed string or a list of integers"
    if any(c < 0 for c in counts) or sum(counts) != size[0] * size[1]:
        return f"its runs cover {sum(counts)} pixels, not the {size[0]}x{size[1]} of its size"
    return None


# --- small checks ----------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)


def _is_box(value) -> bool:
    return (isinstance(value, list) and len(value) == 4 and all(is_number(v) for v in value)
            and value[2] >= 0 and value[3] >= 0)  # fmt: skip


def _positive(value) -> int | None:
    return value if _is_int(value) and value > 0 else None


def _listed(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_LISTED_IDS])
    more = len(ids) - MAX_LISTED_IDS
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


def _text(value) -> str | None:
    return str(value) if value not in (None, "") else None
