"""Benchmark: peak memory of export-annotations on exports that declare sizes their files lack.

Each case is a tiny export (a 64x48 or 64x64 PNG and a few hundred bytes of annotations) whose
annotations declare a huge image or mask. It is read and built in its own subprocess; the figure
is that process's peak RSS growth (`ru_maxrss`) over its RSS once everything is imported, beside
the bound the tests hold it to. Memory must follow the real data (the file), not the declaration.

    .venv/bin/python bench/hostile_inputs.py

The benchmark reports; it does not fail.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BOUND_MB = 150  # what tests/components/export_annotations/test_hostile_sizes.py allows
HUGE = 20000

CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><id>1</id><mode>annotation</mode>
<labels><label><name>cat</name><type>any</type></label></labels></task></meta>
{image}</annotations>"""


def _png(path: Path, size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


def _cvat_export(root: Path, file_size, declared, mask_box, runs, polygon="") -> Path:
    """With `polygon` (CVAT points), a polygon in the mask's group: drawn with it, one instance."""
    _png(root / "images" / "a.png", file_size)
    left, top, width, height = mask_box
    group = ' group_id="1"' if polygon else ""
    mask = (f'<mask label="cat" source="manual" occluded="0" rle="{runs}" left="{left}" '
            f'top="{top}" width="{width}" height="{height}"{group}></mask>')  # fmt: skip
    if polygon:
        mask += (f'<polygon label="cat" source="manual" occluded="0" points="{polygon}" '
                 f'z_order="0"{group}></polygon>')  # fmt: skip
    image = (f'<image id="0" name="a.png" width="{declared[0]}" height="{declared[1]}">'
             f"{mask}</image>")  # fmt: skip
    (root / "annotations.xml").write_text(CVAT_XML.format(image=image), encoding="utf-8")
    return root


def _coco_export(root: Path, file_size, declared, rle_size) -> Path:
    _png(root / "images" / "a.png", file_size)
    height, width = rle_size
    rle = {
        "size": [height, width],
        "counts": [height * 10 + 10, 10, height * width - height * 10 - 20],
    }
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": declared[0], "height": declared[1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle,
                         "bbox": [10, 10, 1, 10], "area": 10, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat", "supercategory": ""}],
    }  # fmt: skip
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(coco))
    return root


CASES = {
    # name: (reader module, maker)
    "cvat-image-20000x15000-over-64x48": (
        "cvat_xml",
        lambda root: _cvat_export(root, (64, 48), (HUGE, 15000), (10, 10, 4, 3), "2,8,2"),
    ),
    "cvat-mask-20000x20000-on-64x48": (
        "cvat_xml",
        lambda root: _cvat_export(root, (64, 48), (64, 48), (0, 0, HUGE, HUGE), f"0,{HUGE**2}"),
    ),
    "cvat-polygon-3e6-wide-in-mask-group-on-64x48": (
        "cvat_xml",
        lambda root: _cvat_export(
            root, (64, 48), (64, 48), (10, 10, 4, 3), "2,8,2", "10,10;3e6,10;3e6,3e6;10,40"
        ),
    ),
    "coco-image-and-rle-20000x20000-over-64x64": (
        "coco",
        lambda root: _coco_export(root, (64, 64), (HUGE, HUGE), (HUGE, HUGE)),
    ),
    "coco-rle-20000x20000-on-64x48": (
        "coco",
        lambda root: _coco_export(root, (64, 48), (64, 48), (HUGE, HUGE)),
    ),
    # Accepted: a file 8 times smaller per side is a resized copy (real CVAT exports have them);
    # its masks are drawn at the file's size from their runs, never at the declared one.
    "cvat-full-mask-5120x3840-over-640x480": (
        "cvat_xml",
        lambda root: _cvat_export(root, (640, 480), (5120, 3840), (0, 0, 5120, 3840), "0,19660800"),
    ),
    "coco-rle-5120x3840-over-640x480": (
        "coco",
        lambda root: _coco_export(root, (640, 480), (5120, 3840), (3840, 5120)),
    ),
}

CHILD = """
import importlib, resource, sys
from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
reader = importlib.import_module("cvat_kfp.components.export_annotations.readers." + sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
builder = DatasetBuilder()
try:
    reader.read(sys.argv[2], builder)
    builder.build(sys.argv[3], skip_bad_images=False)
except ReportError:
    pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - before) // 1024)
for entry in builder.report.entries:
    print(entry.action, entry.code, entry.message)
"""


def peak_growth_mb(reader: str, root: Path, out: Path) -> tuple[int, list[str]]:
    """(peak RSS growth in MB, the report's lines) of reading and building one export."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, reader, str(root), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    growth, *lines = result.stdout.splitlines()
    return int(growth), lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(f"{'case':44} {'peak RSS growth':>16}  (bound {BOUND_MB} MB)  report")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (reader, make) in CASES.items():
            root = make(Path(tmp) / name)
            growth, lines = peak_growth_mb(reader, root, Path(tmp) / f"{name}-out")
            print(f"{name:44} {growth:>13} MB  {'ok' if growth < BOUND_MB else 'OVER':>16}  "
                  f"{lines[0] if lines else '(nothing reported)'}")  # fmt: skip
            for line in lines[1:]:
                print(f"{'':84}{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
