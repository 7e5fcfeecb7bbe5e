"""Benchmark: export-annotations reading speed, images/s.

- BCCD (../shared/test_data/bccd_voc, 364 real images, Pascal VOC): our VOC reader + Dataset build.
- A generated COCO export of N images (the fruits_nuts photos replicated by hard links, as in the
  convert benchmark), read by our COCO reader + build; beside it the reference floor: pycocotools'
  `COCO(annotation_file)`, which only parses and indexes the JSON (no image checks, no output).

Build = every image probed (size, EXIF, a 1/8-scale decode that catches corrupt files), files
hard-linked into the output, annotations.json written.

    .venv/bin/python bench/export_annotations.py                # BCCD + 10000-image COCO
    .venv/bin/python bench/export_annotations.py --sizes 1000   # smaller COCO export

The benchmark reports; it does not fail.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BCCD = REPO.parent / "shared" / "test_data" / "bccd_voc" / "BCCD"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert_to_tfrecord import FRUITS_NUTS, cached_dataset  # noqa: E402  (shared data generator)


def timed_export(source: Path, out: Path, format_name: str) -> tuple[float, float, int]:
    """(read seconds, build seconds, images) for one export read by our reader."""
    from cvat_kfp.components.export_annotations.builder import DatasetBuilder
    from cvat_kfp.components.export_annotations.formats import read_export

    shutil.rmtree(out, ignore_errors=True)
    builder = DatasetBuilder()
    start = time.perf_counter()
    read_export(source, builder, format_name)
    read_s = time.perf_counter() - start
    dataset = builder.build(out)
    build_s = time.perf_counter() - start - read_s
    shutil.rmtree(out, ignore_errors=True)
    return read_s, build_s, len(dataset.images)


def timed_pycocotools(annotation_file: Path) -> float:
    from pycocotools.coco import COCO

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        COCO(str(annotation_file))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="COCO export sizes (default %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args(argv)

    rows = []
    if BCCD.is_dir():
        read_s, build_s, n = timed_export(BCCD, args.out / "runs" / "bccd", "PASCAL VOC 1.1")
        rows.append(("BCCD (VOC)", n, read_s, build_s, None))
    else:
        print(f"BCCD not found at {BCCD}: skipped")
    for size in (int(s) for s in args.sizes.split(",")):
        kind = "fruits_nuts" if FRUITS_NUTS.is_dir() else "shapes"
        dataset_dir = cached_dataset(args.out / "data", kind, size)
        read_s, build_s, n = timed_export(dataset_dir, args.out / "runs" / "coco", "COCO 1.0")
        reference_s = timed_pycocotools(dataset_dir / "annotations.json")
        rows.append((f"COCO x{size}", n, read_s, build_s, reference_s))

    print(f"{'data':<14} {'images':>7} | {'read img/s':>10} {'build img/s':>11} "
          f"{'total img/s':>11} | {'pycocotools COCO() img/s':>24}")  # fmt: skip
    for name, n, read_s, build_s, reference_s in rows:
        reference = f"{n / reference_s:24.0f}" if reference_s else f"{'-':>24}"
        print(f"{name:<14} {n:>7} | {n / read_s:>10.0f} {n / build_s:>11.0f} "
              f"{n / (read_s + build_s):>11.0f} | {reference}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
