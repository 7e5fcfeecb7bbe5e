"""Helpers for the COCO and CVAT XML reader tests: image files, and a read-then-build call."""

from pathlib import Path

from PIL import Image

from cvat_kfp.components.export_annotations.builder import DatasetBuilder


def write_image(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A small plain picture; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128).save(path)
    return path


def read_into(reader, root: Path, out_dir: Path, format_name=None, **build_options):
    """Read the export at `root` with `reader`, build into `out_dir`: (Dataset, report)."""
    builder = DatasetBuilder()
    reader.read(root, builder, format_name)
    return builder.build(out_dir, **build_options), builder.report
