"""Image bytes for a tf.Example: passed through when TensorFlow can use them as they are.

TensorFlow decodes JPEG and PNG and ignores EXIF orientation. CVAT shows images EXIF-rotated, so
annotations are drawn on the rotated image; the policy decides what to do with such images. Other
formats (BMP, GIF, WebP, TIFF, ...) and CMYK JPEGs are converted once. No TensorFlow here: this
runs in worker processes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from ..common.image_file import ORIENTATION_TAG, QUARTER_TURN_ORIENTATIONS
from ..common.report import Report

EXIF_POLICIES = ("apply", "ignore", "refuse")
JPEG_QUALITY = 95

# PIL format -> image/format; MPO (camera multi-picture JPEG) decodes as its first JPEG.
PASS_THROUGH_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png"}
JPEG_MODES_TF_DECODES = ("L", "RGB")
# JPEG marker codes (the byte after 0xFF): end of image, start of scan, the frame headers
# SOF0-SOF15 (C4, C8 and CC are DHT, JPG and DAC); TEM stands alone; after 0xFF, 0x00 (stuffing),
# restart markers and 0xFF (fill) are no marker that ends a scan.
JPEG_EOI, JPEG_SOS, JPEG_TEM = 0xD9, 0xDA, 0x01
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_NOT_MARKERS = frozenset([0x00, 0xFF, *range(0xD0, 0xD8)])
PNG_MODES = ("L", "LA", "RGB", "RGBA", "I;16")


@dataclass(frozen=True)
class PreparedImage:
    encoded: bytes
    format: str  # "jpeg" or "png"
    width: int
    height: int


def prepare_image(path: str | Path, image: dict, exif_policy: str, report: Report):
    """The bytes to store for the COCO `image`, aligned with its annotations; None if refused."""
    name = image["file_name"]
    expected = (image["width"], image["height"])
    try:
        data = Path(path).read_bytes()
        picture = Image.open(io.BytesIO(data))
        _check_complete(data, picture.format)
        orientation = picture.getexif().get(ORIENTATION_TAG, 1)
    except Exception as e:  # PIL raises many kinds for corrupt files
        report.refused("image-unreadable", f"the image file cannot be read: {e}", name)
        return None
    if orientation not in range(2, 9):
        orientation = 1

    rotate = _follow_exif(orientation, picture.size, expected, exif_policy, name, report)
    if rotate is None:
        return None
    out_format = PASS_THROUGH_FORMATS.get(picture.format)
    cmyk_jpeg = out_format == "jpeg" and picture.mode not in JPEG_MODES_TF_DECODES
    tf_decodes = out_format is not None and not cmyk_jpeg
    if tf_decodes and not rotate:
        return PreparedImage(data, out_format, *expected)

    source_format = picture.format
    if rotate:
        picture = ImageOps.exif_transpose(picture)
    if not tf_decodes:
        picture, out_format = _decodable(picture, source_format, name, report)
    out = io.BytesIO()
    if out_format == "jpeg":
        picture.save(out, "JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(out, "PNG")
    return PreparedImage(out.getvalue(), out_format, *expected)


def _check_complete(data: bytes, image_format: str | None) -> None:
    """Refuse a truncated or corrupt file here, not in training.

    A JPEG's markers are walked to its end (decoding it, even at 1/8 scale, was half of this
    stage's work); other formats are decoded whole once.
    """
    if image_format in ("JPEG", "MPO"):
        check_jpeg_complete(data)
    else:
        Image.open(io.BytesIO(data)).load()  # a fresh reader: the caller's is still in use


def check_jpeg_complete(data: bytes) -> None:
    """Raise ValueError unless `data` holds a whole JPEG: every segment as long as its header
    says, a frame header before the first scan, each scan's entropy-coded data ending in a marker,
    and an end-of-image marker after them (bytes after it are ignored, as decoders do).

    Truncation anywhere is caught (TensorFlow refuses a JPEG without its end-of-image marker).
    What only decoding finds is not: inconsistent tables or bit errors in the entropy-coded data,
    which libjpeg mostly decodes into wrong pixels with a warning rather than an error anyway.
    """
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG: no start-of-image marker")
    position, frame_seen, scans = 2, False, 0
    while True:
        marker, position = _next_jpeg_marker(data, position)
        if marker == JPEG_EOI:
            break
        if marker == JPEG_TEM:
            continue  # the only marker without a length that is not skipped as scan data
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2 or position + length > len(data):
            raise ValueError("the JPEG data ends inside a segment: the file is truncated")
        frame_seen = frame_seen or marker in JPEG_FRAME_MARKERS
        if marker == JPEG_SOS:
            if not frame_seen:
                raise ValueError("a JPEG scan comes before any frame header")
            scans += 1
        position += length
    if scans == 0:
        raise ValueError("the JPEG holds no image data (no scan)")


def _next_jpeg_marker(data: bytes, position: int) -> tuple[int, int]:
    """The next marker at or after `position`, and the position after it.

    Skipped on the way: entropy-coded scan data, in which 0xFF is followed by 0x00 (stuffing) or
    a restart marker; 0xFF fill before a marker; stray bytes between segments (libjpeg skips them
    with a warning).
    """
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            raise ValueError("the JPEG data ends before its end-of-image marker: truncated")
        marker = data[position + 1]
        if marker not in JPEG_NOT_MARKERS:
            return marker, position + 2
        position += 1


def _follow_exif(orientation, stored, expected, policy, name, report: Report) -> bool | None:
    """Whether to rotate the pixels as EXIF says; None when refused.

    A quarter turn (orientation 5-8) swaps width and height, so the annotation's size tells which
    pixels it was drawn on; it wins over the policy. Otherwise the policy decides.
    """
    rotated = stored[::-1] if orientation in QUARTER_TURN_ORIENTATIONS else stored
    size = f"{expected[0]}x{expected[1]}"
    if orientation == 1:
        rotate = False
    elif stored != rotated and expected in (stored, rotated):
        rotate = expected == rotated
        policy_agrees = (policy, rotate) in (("apply", True), ("ignore", False))
        if not policy_agrees:
            drawn_on = "EXIF-rotated image" if rotate else "stored pixels"
            report.fixed(
                "exif-by-size",
                f"EXIF orientation {orientation}, exif_policy={policy}, but the annotation's size "
                f"{size} matches only the {drawn_on}: following the size",
                name,
            )
    elif policy == "refuse":
        report.refused(
            "exif-orientation",
            f"EXIF orientation {orientation} with exif_policy=refuse: choose exif_policy 'apply' "
            "(annotations drawn on the image as CVAT shows it) or 'ignore' (drawn on the stored "
            "pixels), or rotate the file and its annotations",
            name,
        )
        return None
    else:
        rotate = policy == "apply"

    if (rotated if rotate else stored) != expected:
        if orientation in QUARTER_TURN_ORIENTATIONS:
            detail = (
                f"the file is {stored[0]}x{stored[1]} as stored and {rotated[0]}x{rotated[1]} "
                f"rotated by its EXIF orientation {orientation}; neither matches"
            )
        else:
            detail = f"the file is {stored[0]}x{stored[1]}"
        report.refused(
            "size-mismatch",
            f"the annotation says the image is {size} but {detail}. Fix width/height in "
            "annotations.json, or re-run export-annotations on these images (it rescales the "
            "annotations of resized images)",
            name,
        )
        return None
    if rotate and policy == "apply":
        report.fixed(
            "exif-applied",
            f"EXIF orientation {orientation}: pixels rotated to match the annotations (drawn on "
            "the image as CVAT shows it), re-encoded once",
            name,
        )
    elif orientation != 1 and not rotate and policy == "ignore":
        report.note(
            "exif-ignored",
            f"EXIF orientation {orientation} ignored (exif_policy=ignore): annotations are taken "
            "as drawn on the stored pixels, as TensorFlow decodes them",
            name,
        )
    return rotate


def _decodable(picture: Image.Image, source_format: str | None, name: str, report: Report):
    """`picture` in a mode and format TensorFlow decodes: RGB JPEG for CMYK JPEGs, else PNG."""
    if PASS_THROUGH_FORMATS.get(source_format) == "jpeg":
        report.fixed(
            "image-converted",
            f"{picture.mode} JPEG, which TensorFlow cannot decode to RGB: converted to RGB JPEG "
            f"quality {JPEG_QUALITY}",
            name,
        )
        return picture.convert("RGB"), "jpeg"
    frames = getattr(picture, "n_frames", 1)
    first_frame = f" (first of {frames} frames)" if frames > 1 else ""
    report.fixed(
        "image-converted",
        f"{source_format or 'this'} image{first_frame}, a format TensorFlow cannot decode: "
        "converted to PNG (lossless)",
        name,
    )
    if picture.mode in PNG_MODES:
        return picture, "png"
    if picture.mode == "1":
        return picture.convert("L"), "png"
    has_alpha = "A" in picture.getbands() or "transparency" in picture.info
    return picture.convert("RGBA" if has_alpha else "RGB"), "png"
