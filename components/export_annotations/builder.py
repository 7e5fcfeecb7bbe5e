"""DatasetBuilder: what every reader fills in — classes by name, images, shapes — and the checks
that make the result a valid Dataset whatever the format was.

Readers call `category`, `add_image` and `add_box`/`add_polygon`/`add_rle`/`add_mask`; `build`
then checks every image against the file on disk (the file is the truth), rescales annotations
of resized images, and writes the Dataset directory. Everything fixed, skipped or refused goes
to the report with its source location.

Memory follows the files, not the sizes an export declares: a reader asks `drawable_size` (the
file's header against the declared size) before it draws a mask, and draws it at the file's size
within its own box; a rescaled RLE is resized from its runs; a declared size far beyond its file
is a size mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..common.dataset import (
    IMAGES_DIR,
    Dataset,
    DatasetError,
    box_mask_to_rle,
    link_or_copy,
    mask_to_rle,
    nearest_pixels,
    rle_pixels,
)
from ..common.image_file import ORIENTATION_TAG, ImageFileError, ImageProbe, probe_image
from ..common.report import Report
from ..common.storage import reader_relative_path

STAGE = "export-annotations"
# A resized image keeps its aspect ratio up to rounding: this many pixels on the scaled side.
ASPECT_TOLERANCE_PX = 1.0
# An image may be annotated this many times wider and higher than its file (a downscaled copy:
# CVAT tasks annotated at 4096x2304 are exported over 512x288 files); beyond, it is a mismatch.
MAX_DOWNSCALE = 8


@dataclass
class _PendingImage:
    record: dict  # the COCO image dict, as it will be written
    source: Path  # the file on disk
    location: str
    annotation_ids: list[int] = field(default_factory=list)
    looked_for: str = ""  # where the reader looked for a missing file, for the message
    undrawn: int = 0  # annotations a reader did not draw because the file rules the image out
    header: ImageProbe | None = None  # the file's header, once a reader asked to draw on it


class DatasetBuilder:
    """Collects one Dataset from one or several exports (categories are merged by name)."""

    def __init__(self, report: Report | None = None):
        self.report = report or Report(STAGE)
        self.default_group: str | None = None  # set per source when merging several exports
        self.file_prefix: str = ""  # likewise, keeps file names of several exports apart
        self._category_ids: dict[str, int] = {}
        self._images: dict[int, _PendingImage] = {}
        self._annotations: dict[int, dict] = {}
        self._file_names: set[str] = set()

    # --- classes ----------------------------------------------------------------------------

    def category(self, name: str) -> int:
        """The id of the class `name` (1-based, in order of first mention), declaring it if new."""
        name = str(name).strip() if name is not None else ""
        if not name:
            raise ValueError("a class name is empty")
        if name not in self._category_ids:
            self._category_ids[name] = len(self._category_ids) + 1
        return self._category_ids[name]

    @property
    def class_names(self) -> list[str]:
        return list(self._category_ids)

    # --- images -----------------------------------------------------------------------------

    def add_image(
        self,
        source: str | Path,
        file_name: str,
        *,
        width: int | None = None,
        height: int | None = None,
        subset: str | None = None,
        group: str | None = None,
        frame: int | None = None,
        location: str = "",
        looked_for: str = "",
    ) -> int:
        """Register an image file; returns its id. `width`/`height` are the annotation's view of
        the image (None: take them from the file); `file_name` is its name inside the Dataset;
        `looked_for` says where the reader looked when `source` is not there; `frame` is the
        image's CVAT frame number, when the export says it."""
        image_id = len(self._images) + 1
        record = {
            "id": image_id,
            "file_name": self._unique_file_name(file_name, location),
            "width": width,
            "height": height,
        }
        if subset:
            record["subset"] = str(subset)
        group = group if group not in (None, "") else self.default_group
        if group not in (None, ""):
            record["group"] = str(group)
        if frame is not None:
            record["frame"] = int(frame)
        pending = _PendingImage(record, Path(source), location or file_name, looked_for=looked_for)
        self._images[image_id] = pending
        return image_id

    def _unique_file_name(self, file_name: str, location: str) -> str:
        try:
            relative = reader_relative_path(str(file_name))
        except ValueError as e:  # the readers refuse such names first: a reader's bug
            raise ValueError(
                f"{location or file_name}: image file name {file_name!r} {e}"
            ) from None
        name = str(PurePosixPath(self.file_prefix) / relative)
        if name not in self._file_names:
            self._file_names.add(name)
            return name
        path = PurePosixPath(name)
        n = 2
        while (
            candidate := str(path.with_name(f"{path.stem}_{n}{path.suffix}"))
        ) in self._file_names:
            n += 1
        self._file_names.add(candidate)
        self.report.fixed(
            "file-renamed",
            f"two images are named {name}; this one is stored as {candidate}",
            location or name,
        )
        return candidate

    def image_size(self, image_id: int) -> tuple[int | None, int | None]:
        record = self._images[image_id].record
        return record["width"], record["height"]

    def drawable_size(self, image_id: int) -> tuple[int, int] | None:
        """The (width, height) to draw this image's masks at, for `add_mask(left=, top=)`: the
        file's, once its header agrees with the declared size (equal, or a copy resized within
        MAX_DOWNSCALE: then draw the declared shapes resized, as `nearest_pixels` maps them).
        None when the build will refuse or skip the image (no file, unreadable, or sized unlike
        its file, which `build` reports): then draw nothing, and call `count_undrawn`. Reads
        the header only, once."""
        pending = self._images[image_id]
        if pending.header is None:
            try:
                pending.header = _probe_header(pending.source)
            except Exception:  # PIL raises many kinds for broken files; `build` names them
                return None
        declared = (pending.record["width"], pending.record["height"])
        if None in declared:
            return pending.header.displayed_size
        target, _ = _fit(declared, pending.header)
        return target

    def count_undrawn(self, image_id: int) -> None:
        """An annotation left undrawn because `drawable_size` said None: counted when the build
        skips the image with its annotations."""
        self._images[image_id].undrawn += 1

    # --- shapes -----------------------------------------------------------------------------

    def add_box(self, image_id: int, label: str, x: float, y: float, w: float, h: float,
                **kwargs) -> int:  # fmt: skip
        """An axis-aligned box in pixels (top-left corner, width, height)."""
        return self._add(image_id, label, [x, y, w, h], None, w * h, **kwargs)

    def add_polygon(self, image_id: int, label: str, polygons: list[list[float]], **kwargs) -> int:
        """One instance made of one or more polygons, each a flat [x1, y1, x2, y2, ...] list."""
        polygons = [[float(v) for v in polygon] for polygon in polygons]
        if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError(
                f"a polygon needs at least 3 points (6 coordinates, an even count), got "
                f"{[len(p) for p in polygons]} coordinates"
            )
        xs = [v for p in polygons for v in p[0::2]]
        ys = [v for p in polygons for v in p[1::2]]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        return self._add(image_id, label, bbox, polygons, None, **kwargs)

    def add_rle(self, image_id: int, label: str, rle: dict, **kwargs) -> int:
        """A COCO RLE (counts as a compressed string or an uncompressed list) of the full image."""
        height, width = rle["size"]
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        return self._add(image_id, label, None, _jsonable_rle(rle), None, **kwargs)

    def add_mask(self, image_id: int, label: str, mask: np.ndarray, *, left: int | None = None,
                 top: int | None = None, **kwargs) -> int:  # fmt: skip
        """A binary full-image mask (height x width, 0/1); or, given `left` and `top`, the mask of
        a box of the image drawn at its `drawable_size`, with its top-left pixel there: then only
        the box's columns are allocated, never the whole image."""
        if left is None and top is None:
            rle = mask_to_rle(mask)
        else:
            size = self.drawable_size(image_id)
            if size is None:
                raise ValueError("no mask can be drawn on this image: see drawable_size")
            rle = box_mask_to_rle(mask, left or 0, top or 0, *size)
        return self._add(image_id, label, None, rle, None, **kwargs)

    def _add(self, image_id, label, bbox, segmentation, area, *, iscrowd: int = 0,
             attributes: dict | None = None, source: str = "",
             location: str = "") -> int:  # fmt: skip
        if isinstance(segmentation, dict):
            encoded = _encoded_rle(segmentation)
            bbox = [float(v) for v in mask_utils.toBbox(encoded)]
            area = float(mask_utils.area(encoded))
        elif segmentation is not None:
            area = _polygon_area(segmentation)
        annotation_id = len(self._annotations) + 1
        annotation = {
            "id": annotation_id,
            "image_id": image_id,
            "category_id": self.category(label),
            "bbox": [round(float(v), 3) for v in bbox],
            "area": round(float(area), 3),
            "segmentation": segmentation if segmentation is not None else [],
            "iscrowd": int(bool(iscrowd)),
        }
        if attributes:
            annotation["attributes"] = attributes
        if source:
            annotation["source"] = source
        self._annotations[annotation_id] = annotation
        self._images[image_id].annotation_ids.append(annotation_id)
        return annotation_id

    # --- build ------------------------------------------------------------------------------

    def build(self, out_dir: str | Path, *, skip_bad_images: bool = False) -> Dataset:
        """Check every image against its file, then write the Dataset to `out_dir`.

        A missing, corrupt or incompatibly sized image is refused, or skipped with its
        annotations when `skip_bad_images`. Raises ReportError, writing nothing, when the report
        holds any refusal (a reader's too).
        """
        kept, images, annotations = [], [], []
        for pending in self._images.values():
            if not self._settle_image(pending, skip_bad_images):
                continue
            kept.append(pending)
            images.append(pending.record)
            annotations += [self._annotations[i] for i in pending.annotation_ids]
        self.report.raise_if_refused("annotation or image")  # before anything is written
        self._renumber(images, annotations)
        categories = [{"id": i, "name": name, "supercategory": ""}
                      for name, i in self._category_ids.items()]  # fmt: skip
        dataset = Dataset(images, annotations, categories)
        problems = dataset.validate(check_files=False)
        if problems:
            raise DatasetError("export-annotations result", problems)
        out_dir = Path(out_dir)
        for pending in kept:
            destination = out_dir / IMAGES_DIR / pending.record["file_name"]
            destination.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(pending.source, destination)
        dataset.save(out_dir)
        dataset.root = out_dir
        return dataset

    def _settle_image(self, pending: _PendingImage, skip_bad_images: bool) -> bool:
        """Make the record agree with the file on disk; False when the image cannot be used."""
        record, where = pending.record, pending.location
        act = self.report.skipped if skip_bad_images else self.report.refused
        n = len(pending.annotation_ids) + pending.undrawn
        lost = f" ({n} annotation(s) skipped with it)" if skip_bad_images and n else ""
        if not pending.source.is_file():
            looked = f" ({pending.looked_for})" if pending.looked_for else ""
            act(
                "image-missing",
                f"image file {pending.source.name} is not in the export{looked}{lost}",
                where,
            )
            return False
        try:
            probe = probe_image(pending.source)
        except ImageFileError as e:
            act("image-corrupt", f"{e}{lost}", where)
            return False
        declared = (record["width"], record["height"])
        if None in declared:
            record["width"], record["height"] = probe.displayed_size
            return True
        if declared in (probe.displayed_size, probe.stored_size):
            return True
        target, problem = _fit(declared, probe)
        if target is None:
            message = (
                f"the annotation says {declared[0]}x{declared[1]} but the file is "
                f"{probe.displayed_size[0]}x{probe.displayed_size[1]}, {problem}: the annotations "
                f"cannot be mapped onto it. Re-export the task with its original images{lost}"
            )
            act("size-mismatch", message, where)
            return False
        scale = _uniform_scale(declared, target)
        for annotation_id in pending.annotation_ids:
            _rescale(self._annotations[annotation_id], declared, target)
        record["width"], record["height"] = target
        self.report.fixed(
            "image-rescaled",
            f"the annotation says {declared[0]}x{declared[1]} but the file is "
            f"{target[0]}x{target[1]} (same aspect ratio): annotations rescaled by {scale:.4g}",
            where,
        )
        return True

    @staticmethod
    def _renumber(images: list[dict], annotations: list[dict]) -> None:
        """Ids 1..N in order after skips, so the Dataset does not depend on what was skipped."""
        new_image_ids = {}
        for new_id, image in enumerate(images, start=1):
            new_image_ids[image["id"]] = new_id
            image["id"] = new_id
        for new_id, annotation in enumerate(annotations, start=1):
            annotation["id"] = new_id
            annotation["image_id"] = new_image_ids[annotation["image_id"]]


def _probe_header(path: Path) -> ImageProbe:
    """probe_image without the decode: size and EXIF orientation from the file's header."""
    with Image.open(path) as picture:
        orientation = picture.getexif().get(ORIENTATION_TAG, 1)
        return ImageProbe(
            picture.width,
            picture.height,
            orientation if orientation in range(1, 9) else 1,
            picture.format,
        )


def _fit(declared, probe: ImageProbe) -> tuple[tuple[int, int] | None, str | None]:
    """The file size the declared size maps onto (itself, or a uniformly resized copy no more
    than MAX_DOWNSCALE times smaller), or None and what is wrong."""
    if declared in (probe.displayed_size, probe.stored_size):
        return declared, None
    target = next(
        (size for size in (probe.displayed_size, probe.stored_size)
         if _uniform_scale(declared, size)),
        None,
    )  # fmt: skip
    if target is None:
        return None, "another aspect ratio"
    if declared[0] > MAX_DOWNSCALE * target[0] or declared[1] > MAX_DOWNSCALE * target[1]:
        return None, (
            f"over {MAX_DOWNSCALE} times smaller on each side (not a resized copy of the "
            "annotated image)"
        )
    return target, None


def _uniform_scale(declared, actual) -> float | None:
    """The factor that maps `declared` onto `actual` when both sides scale alike."""
    (dw, dh), (aw, ah) = declared, actual
    if min(dw, dh, aw, ah) <= 0:
        return None
    scale = aw / dw
    if (
        abs(dh * scale - ah) <= ASPECT_TOLERANCE_PX
        and abs(dw * (ah / dh) - aw) <= ASPECT_TOLERANCE_PX
    ):
        return scale
    return None


def _rescale(annotation: dict, declared, target) -> None:
    sx, sy = target[0] / declared[0], target[1] / declared[1]
    x, y, w, h = annotation["bbox"]
    annotation["bbox"] = [round(x * sx, 3), round(y * sy, 3), round(w * sx, 3), round(h * sy, 3)]
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, dict):
        already = segmentation["size"] == [target[1], target[0]]  # drawn at the file's size
        rle = segmentation if already else _resized_rle(segmentation, target)
        annotation["segmentation"] = rle
        annotation["bbox"] = [round(float(v), 3) for v in mask_utils.toBbox(_encoded_rle(rle))]
        annotation["area"] = float(mask_utils.area(_encoded_rle(rle)))
    else:
        annotation["segmentation"] = [
            [round(v * (sx if i % 2 == 0 else sy), 3) for i, v in enumerate(polygon)]
            for polygon in segmentation
        ]
        annotation["area"] = round(annotation["area"] * sx * sy, 3)


def _resized_rle(rle: dict, target) -> dict:
    """The RLE's mask resized to `target` (width, height) by nearest pixel, exactly as PIL's
    NEAREST resize of the decoded mask, but read from the runs: nothing of the declared size is
    allocated, only the target (the file's size)."""
    height, width = rle["size"]
    rows, columns = nearest_pixels(height, target[1]), nearest_pixels(width, target[0])
    return mask_to_rle(rle_pixels(rle, rows, columns))


def _polygon_area(polygons) -> float:
    """Shoelace area: exact for the polygon, cheap (rasterizing every polygon is not)."""
    total = 0.0
    for p in polygons:
        xs, ys = p[0::2], p[1::2]
        n = len(xs)
        total += abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2
    return total


def _jsonable_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}  # fmt: skip


def _encoded_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
