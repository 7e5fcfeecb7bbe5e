"""Helpers for the reader tests: tiny exports written in tmp_path, and views of the result."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from PIL import Image

from cvat_kfp.components.export_annotations.builder import DatasetBuilder

_out_dirs = itertools.count()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_image(path: Path, size=(40, 30), exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGB", size, (90, 120, 150))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        picture.save(path, exif=exif)
    else:
        picture.save(path)
    return path


def read(module, root: Path, builder: DatasetBuilder | None = None) -> DatasetBuilder:
    builder = builder or DatasetBuilder()
    module.read(root, builder)
    return builder


def build(builder: DatasetBuilder, tmp_path: Path, **options):
    return builder.build(tmp_path / f"out{next(_out_dirs)}", **options)


def entries(builder: DatasetBuilder, code: str) -> list:
    return [e for e in builder.report.entries if e.code == code]


def locations(builder: DatasetBuilder, code: str) -> list[str]:
    return [e.location for e in entries(builder, code)]


def shape_lines(builder: DatasetBuilder) -> list:
    """The report's skipped and refused lines about shapes (not about whole images)."""
    whole_images = ("image-missing", "image-corrupt", "size-mismatch")
    return [
        e
        for e in builder.report.entries
        if e.action in ("skipped", "refused") and e.code not in whole_images
    ]


def instances_per_class(dataset) -> Counter:
    names = dict(enumerate(dataset.label_map.names, start=1))
    return Counter(names[a["category_id"]] for a in dataset.annotations)


class RecordingBuilder(DatasetBuilder):
    """A DatasetBuilder that also keeps what a reader gave it, for when `build` refuses."""

    def __init__(self):
        super().__init__()
        self.sources: list[Path] = []
        self.shapes: list[tuple[str, str]] = []  # (class name, location)

    def add_image(self, source, file_name, **kwargs) -> int:
        self.sources.append(Path(source))
        return super().add_image(source, file_name, **kwargs)

    def _record(self, label, kwargs):
        self.shapes.append((label, kwargs.get("location", "")))

    def add_box(self, image_id, label, *args, **kwargs) -> int:
        self._record(label, kwargs)
        return super().add_box(image_id, label, *args, **kwargs)

    def add_polygon(self, image_id, label, *args, **kwargs) -> int:
        self._record(label, kwargs)
        return super().add_polygon(image_id, label, *args, **kwargs)

    def add_mask(self, image_id, label, *args, **kwargs) -> int:
        self._record(label, kwargs)
        return super().add_mask(image_id, label, *args, **kwargs)
