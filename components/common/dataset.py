"""The Dataset artifact: a directory holding `annotations.json` (COCO instances) and `images/`.

`annotations.json` has `images`, `annotations` and `categories`; category ids are 1..N with no
gaps (0 is background); `segmentation` holds polygons or RLE; `bbox` and `area` are in pixels.
Image fields we own beside COCO's: `subset` (the CVAT subset, if any), `group` (what must not be
split apart: a video, a track, a source task) and `frame` (the image's CVAT frame number, when the
export says it). Annotation fields we own: `source`, how the shape came to be as CVAT records it
("manual", "auto" for uploaded predictions, "semi-auto" for those a person then edited, "file",
...; CVAT XML exports carry it). Any other top-level key (`info`, `licenses`, ...) is carried
through untouched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .label_map import LabelMap, LabelMapError
from .storage import safe_relative_path

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
MAX_LISTED_PROBLEMS = 25
RLE_SAMPLE_CHUNK_PX = 1 << 20  # rle_pixels reads this many pixels at once (bounds its indexes)


class DatasetError(ValueError):
    """A Dataset that breaks the contract; the message names every problem and where it is."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{source}: {len(problems)} problem(s) in the dataset:\n{shown}{tail}")


@dataclass
class Dataset:
    """COCO instances in memory, plus the directory its image files live under (`root/images`)."""

    images: list[dict]
    annotations: list[dict]
    categories: list[dict]
    root: Path | None = None
    extra: dict = field(default_factory=dict)

    # --- loading and saving -----------------------------------------------------------------

    @classmethod
    def from_coco(cls, coco: dict, root: str | Path | None = None) -> Dataset:
        if not isinstance(coco, dict):
            raise DatasetError(ANNOTATIONS_FILE, ["the top level must be a JSON object"])
        missing = [k for k in ("images", "annotations", "categories") if k not in coco]
        if missing:
            raise DatasetError(ANNOTATIONS_FILE, [f"missing top-level key(s) {missing}"])
        bad = [k for k in ("images", "annotations", "categories") if not isinstance(coco[k], list)]
        if bad:
            raise DatasetError(ANNOTATIONS_FILE, [f"top-level key(s) {bad} must be lists"])
        extra = {k: v for k, v in coco.items() if k not in ("images", "annotations", "categories")}
        return cls(
            coco["images"],
            coco["annotations"],
            coco["categories"],
            Path(root) if root is not None else None,
            extra,
        )

    @classmethod
    def load(cls, root: str | Path, check_files: bool = True) -> Dataset:
        """Read and validate a Dataset directory; raises DatasetError listing every problem."""
        root = Path(root)
        path = root / ANNOTATIONS_FILE
        if not path.is_file():
            raise DatasetError(
                str(root),
                [f"no {ANNOTATIONS_FILE} here; a Dataset artifact is a directory holding "
                 f"{ANNOTATIONS_FILE} and {IMAGES_DIR}/ (made by export-annotations)"],
            )  # fmt: skip
        try:
            coco = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(str(path), [f"not valid UTF-8 JSON: {e}"]) from None
        dataset = cls.from_coco(coco, root)
        problems = dataset.validate(check_files=check_files)
        if problems:
            raise DatasetError(str(path), problems)
        return dataset

    def to_coco(self) -> dict:
        return {
            **self.extra,
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write this Dataset to `out_dir`: annotations.json plus its image files.

        Image files come from `self.root` and are hard-linked when the filesystem allows it,
        copied otherwise. The JSON is byte-identical for identical content (caching relies on it).
        """
        out_dir = Path(out_dir)
        out_images = out_dir / IMAGES_DIR
        out_images.mkdir(parents=True, exist_ok=True)
        for image in self.images:
            if not _is_file_inside(image.get("file_name")):
                raise DatasetError(
                    str(out_dir),
                    [f"image id {image.get('id')}: unsafe file_name {image.get('file_name')!r}"],
                )
            dst = out_images / image["file_name"]
            if self.root is not None:
                src = self.image_path(image)
                if src.resolve() != dst.resolve():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    link_or_copy(src, dst)
        text = json.dumps(self.to_coco(), ensure_ascii=False, separators=(",", ":"))
        tmp = out_dir / (ANNOTATIONS_FILE + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / ANNOTATIONS_FILE)
        return out_dir

    # --- views ------------------------------------------------------------------------------

    def image_path(self, image: dict) -> Path:
        if self.root is None:
            raise ValueError("this Dataset has no root directory to find image files in")
        return self.root / IMAGES_DIR / image["file_name"]

    @property
    def label_map(self) -> LabelMap:
        return LabelMap.from_categories(self.categories)

    def annotations_by_image(self) -> dict[int, list[dict]]:
        """Annotations per image id, every image present (possibly with an empty list)."""
        by_image: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for ann in self.annotations:
            by_image[ann["image_id"]].append(ann)
        return by_image

    def subset(self, image_ids) -> Dataset:
        """The images with these ids (in this Dataset's order), their annotations, all classes."""
        keep = set(image_ids)
        return Dataset(
            [im for im in self.images if im["id"] in keep],
            [a for a in self.annotations if a["image_id"] in keep],
            self.categories,
            self.root,
            self.extra,
        )

    def instance_counts(self) -> Counter:
        """Instances per category id."""
        return Counter(a["category_id"] for a in self.annotations)

    def image_counts(self) -> Counter:
        """Images containing at least one instance, per category id."""
        return Counter(c for _, c in {(a["image_id"], a["category_id"]) for a in self.annotations})

    def metadata(self) -> dict:
        """Counts and class names, for the KFP artifact metadata."""
        return {
            "num_images": len(self.images),
            "num_annotations": len(self.annotations),
            "num_classes": len(self.categories),
            "class_names": list(self.label_map.names),
        }

    # --- validation -------------------------------------------------------------------------

    def validate(self, check_files: bool = True) -> list[str]:
        """Every way this Dataset breaks the contract, each naming where; empty when valid."""
        problems: list[str] = []
        problems += [f"categories[{i}]: not an object"
                     for i, c in enumerate(self.categories) if not isinstance(c, dict)]  # fmt: skip
        if not problems:
            try:
                LabelMap.from_categories(self.categories)
            except LabelMapError as e:
                problems.append(str(e))
        category_ids = {c.get("id") for c in self.categories
                        if isinstance(c, dict) and _is_int(c.get("id"))}  # fmt: skip

        images_by_id: dict[int, dict] = {}
        image_id_of_file: dict[str, int] = {}
        for index, image in enumerate(self.images):
            where = f"images[{index}]"
            if not isinstance(image, dict):
                problems.append(f"{where}: not an object")
                continue
            image_id = image.get("id")
            if not _is_int(image_id) or image_id < 0:
                problems.append(f"{where}: id {image_id!r} must be a non-negative integer")
                continue
            where = f"image id {image_id}"
            if image_id in images_by_id:
                problems.append(f"{where}: the id is used by more than one image")
                continue
            images_by_id[image_id] = image
            problems += _image_problems(image, where)
            name = image.get("file_name")
            if isinstance(name, str) and image_id_of_file.setdefault(name, image_id) != image_id:
                problems.append(
                    f"{where}: file_name {name!r} is also used by image id {image_id_of_file[name]}"
                )
            if check_files and self.root is not None and _is_file_inside(name):
                if not self.image_path(image).is_file():
                    problems.append(
                        f"{where}: image file {IMAGES_DIR}/{image['file_name']} does not exist"
                    )

        seen_annotation_ids: set[int] = set()
        for index, ann in enumerate(self.annotations):
            where = f"annotations[{index}]"
            if not isinstance(ann, dict):
                problems.append(f"{where}: not an object")
                continue
            ann_id = ann.get("id")
            if not _is_int(ann_id):
                problems.append(f"{where}: id {ann_id!r} must be an integer")
            else:
                where = f"annotation id {ann_id}"
                if ann_id in seen_annotation_ids:
                    problems.append(f"{where}: the id is used by more than one annotation")
                seen_annotation_ids.add(ann_id)
            image_id = ann.get("image_id")
            image = images_by_id.get(image_id) if _is_int(image_id) else None
            if image is None:
                problems.append(f"{where}: image_id {image_id!r} names no image")
            else:
                where += f" (image {image.get('file_name')!r})"
            if not _is_int(ann.get("category_id")) or ann["category_id"] not in category_ids:
                problems.append(
                    f"{where}: category_id {ann.get('category_id')!r} names no category; "
                    f"valid ids are {sorted(i for i in category_ids if _is_int(i))}"
                )
            problems += _annotation_problems(ann, image, where)
        return problems


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A JSON number that is finite: NaN and +-Infinity (which Python's json reads) are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_file_inside(name) -> bool:
    """Whether `name` is a file name inside images/, by storage.safe_relative_path's rule."""
    if not isinstance(name, str):
        return False
    try:
        safe_relative_path(name)
    except ValueError:
        return False
    return True


def _image_problems(image: dict, where: str) -> list[str]:
    problems = []
    name = image.get("file_name")
    if not _is_file_inside(name):
        problems.append(
            f"{where}: file_name {name!r} must be a relative path inside {IMAGES_DIR}/ "
            "(no '..', no leading '/', forward slashes)"
        )
    for key in ("width", "height"):
        if not _is_int(image.get(key)) or image[key] <= 0:
            problems.append(f"{where}: {key} {image.get(key)!r} must be a positive integer")
    for key in ("subset", "group"):
        if key in image and image[key] is not None and not isinstance(image[key], str):
            problems.append(f"{where}: {key} {image[key]!r} must be a string")
    if "frame" in image and not (_is_int(image["frame"]) and image["frame"] >= 0):
        problems.append(f"{where}: frame {image['frame']!r} must be a non-negative integer")
    return problems


def _annotation_problems(ann: dict, image: dict | None, where: str) -> list[str]:
    problems = []
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        problems.append(f"{where}: bbox {bbox!r} must be [x, y, width, height] in pixels")
    elif bbox[2] < 0 or bbox[3] < 0:
        problems.append(f"{where}: bbox {bbox} has a negative width or height")
    if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
        problems.append(f"{where}: area {ann['area']!r} must be a non-negative number")
    if not (_is_int(ann.get("iscrowd", 0)) and ann.get("iscrowd", 0) in (0, 1)):
        problems.append(f"{where}: iscrowd {ann.get('iscrowd')!r} must be 0 or 1")
    if "source" in ann and not (isinstance(ann["source"], str) and ann["source"]):
        problems.append(f"{where}: source {ann['source']!r} must be a non-empty string")
    segmentation = ann.get("segmentation")
    if segmentation in (None, [], {}):
        return problems
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            problems.append(f"{where}: RLE size {size!r} must be [height, width]")
        elif image is not None and size != [image.get("height"), image.get("width")]:
            problems.append(
                f"{where}: RLE size {size} differs from the image's "
                f"[height, width] [{image.get('height')}, {image.get('width')}]"
            )
        if not (
            isinstance(counts, str) or (isinstance(counts, list) and all(map(_is_int, counts)))
        ):
            problems.append(f"{where}: RLE counts must be a string or a list of integers")
    elif isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            if not (isinstance(polygon, list) and all(is_number(v) for v in polygon)):
                problems.append(f"{where}: polygon {k} must be a flat list of numbers")
            elif len(polygon) < 6 or len(polygon) % 2:
                problems.append(
                    f"{where}: polygon {k} has {len(polygon)} coordinates; "
                    "a polygon needs an even count of at least 6 (3 points)"
                )
    else:
        problems.append(f"{where}: segmentation must be a list of polygons or an RLE object")
    return problems


def mask_to_rle(mask) -> dict:
    """A 0/1 (or boolean) [H, W] mask as COCO compressed RLE with str counts, ready for JSON."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))  # one copy, not two
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygons_to_rle(polygons, height: int, width: int) -> dict:
    """COCO polygons (flat [x1, y1, x2, y2, ...] lists, one instance) as one compressed RLE of
    the height x width image, with bytes counts as pycocotools gives it.

    pycocotools walks every edge in fifth-pixel steps, so an edge's cost follows its length, not
    the image: a vertex millions of pixels away costs gigabytes for a few pixels drawn. A polygon
    reaching more than the image's own size outside it is first clipped to that window
    (Sutherland-Hodgman: the region inside the window is kept, even-odd parity included). Within
    the window polygons are left as given, so every real shape rasterizes exactly as pycocotools
    draws it; a clipped one can differ from pycocotools' drawing of the unclipped one by single
    pixels along a cut edge, where the two roundings of its end points (to a fifth of a pixel)
    fall either side of a pixel's centre.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    window = (-width, -height, 2 * width, 2 * height)
    polygons = [_clip_to_window(list(map(float, p)), *window) for p in polygons]
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def _clip_to_window(polygon: list[float], left, top, right, bottom) -> list[float]:
    """The polygon clipped to the rectangle, or as given when it lies inside."""
    xs, ys = polygon[0::2], polygon[1::2]
    if min(xs) >= left and min(ys) >= top and max(xs) <= right and max(ys) <= bottom:
        return polygon
    points = list(zip(xs, ys))
    for axis, bound, keep_below in ((0, left, False), (0, right, True), (1, top, False),
                                    (1, bottom, True)):  # fmt: skip

        def inside(point, axis=axis, bound=bound, keep_below=keep_below):
            return point[axis] <= bound if keep_below else point[axis] >= bound

        clipped = []
        for k, current in enumerate(points):
            previous = points[k - 1]
            if inside(current) != inside(previous):  # the edge crosses the bound: cut it there
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                cut = [previous[0] + t * (current[0] - previous[0]),
                       previous[1] + t * (current[1] - previous[1])]  # fmt: skip
                cut[axis] = bound
                clipped.append(tuple(cut))
            if inside(current):
                clipped.append(current)
        points = clipped
    return [v for point in points for v in point]


def compressed_rle_counts(text: str) -> list[int]:
    """The runs of a compressed COCO RLE string, decoded as pycocotools' rleFrString does.

    Here because pycocotools decodes runs into the mask without bounds checks, and gives no
    runs back; raises ValueError or IndexError on a string that is not RLE or is truncated."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"character {text[position]!r} is not RLE")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_pixels(rle: dict, rows, columns):
    """The 0/1 pixels of a COCO RLE at these rows and columns (index arrays), as a [len(rows),
    len(columns)] Fortran-order uint8 array read from the runs: the whole mask is never decoded,
    so a window or a resized copy costs its own size, not the mask's."""
    import numpy as np

    height = rle["size"][0]
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    ends = np.cumsum(compressed_rle_counts(counts) if isinstance(counts, str) else counts)
    rows, columns = np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)
    pixels = np.zeros((len(rows), len(columns)), dtype=np.uint8, order="F")
    step = max(1, RLE_SAMPLE_CHUNK_PX // max(len(rows), 1))
    for start in range(0, len(columns), step):
        flat = columns[start : start + step, None] * height + rows[None, :]  # column-major
        # The runs alternate from 0s: a pixel's run is the number of runs ending at or before it.
        pixels[:, start : start + step] = (np.searchsorted(ends, flat, side="right") % 2).T
    return pixels


def nearest_pixels(size: int, target: int):
    """For each of `target` pixels, the one of `size` pixels that PIL's NEAREST resize takes:
    sampling a mask at these rows and columns is resizing it, exactly as PIL would."""
    import numpy as np
    from PIL import Image

    line = Image.fromarray(np.arange(size, dtype=np.int32).reshape(1, size))
    return np.asarray(line.resize((target, 1), Image.NEAREST), dtype=np.int64)[0]


def box_mask_to_rle(box, left: int, top: int, width: int, height: int) -> dict:
    """mask_to_rle of a width x height mask that is 0 outside `box` (a 0/1 [h, w] mask whose
    top-left pixel is at (left, top)), allocating the box's columns only, not the whole image."""
    import numpy as np
    from pycocotools import mask as mask_utils

    box_height, box_width = box.shape
    if min(left, top) < 0 or left + box_width > width or top + box_height > height:
        raise ValueError(
            f"a {box_width}x{box_height} mask at ({left}, {top}) does not fit a "
            f"{width}x{height} image"
        )
    columns = np.zeros((height, box_width), dtype=np.uint8, order="F")
    columns[top : top + box_height] = box
    flat = columns.ravel(order="F")
    if not flat.size:
        return mask_to_rle(np.zeros((height, width), dtype=np.uint8))
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    if flat[0]:
        counts.insert(0, 0)  # COCO runs start with the 0s
    counts[0] += left * height
    right = (width - left - box_width) * height
    if right and len(counts) % 2:  # the last run is 0s
        counts[-1] += right
    elif right:
        counts.append(right)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def group_key(image: dict) -> str:
    """What keeps images together in a split: their `group`, or the image alone."""
    group = image.get("group")
    return f"group:{group}" if group not in (None, "") else f"image:{image['id']}"
