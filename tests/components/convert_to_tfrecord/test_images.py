"""Image bytes: pass-through, format conversion, EXIF orientation, size checks, corrupt files."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from cvat_kfp.components.common.report import Report
from cvat_kfp.components.convert_to_tfrecord.images import (
    ORIENTATION_TAG,
    check_jpeg_complete,
    prepare_image,
)

from .conftest import encode, gradient_image


@pytest.fixture()
def prepare(tmp_path):
    """prepare(data, width, height, policy="apply") -> (PreparedImage or None, Report)."""

    def run(data, width, height, policy="apply"):
        path = tmp_path / "pic.img"
        path.write_bytes(data)
        report = Report("test")
        image = {"id": 1, "file_name": "pic.img", "width": width, "height": height}
        return prepare_image(path, image, policy, report), report

    return run


def pixels(data: bytes, mode="RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode), dtype=np.int16)


def lines(report):
    return [(e.action, e.code) for e in report.entries]


def with_orientation(picture: Image.Image, orientation: int, fmt="JPEG") -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return encode(picture, fmt, exif=exif, quality=95)


@pytest.mark.parametrize(
    "fmt, mode, out_format",
    [("JPEG", "RGB", "jpeg"), ("JPEG", "L", "jpeg"), ("PNG", "RGBA", "png"), ("PNG", "P", "png")],
)
def test_jpeg_and_png_pass_through_byte_identical(prepare, fmt, mode, out_format):
    data = encode(gradient_image(24, 16, mode), fmt)
    prepared, report = prepare(data, 24, 16)
    assert prepared.encoded == data and prepared.format == out_format
    assert (prepared.width, prepared.height) == (24, 16)
    assert report.entries == []


@pytest.mark.parametrize(
    "fmt, options",
    [("BMP", {}), ("WEBP", {"lossless": True}), ("GIF", {}), ("TIFF", {"compression": "raw"})],
)
def test_formats_tensorflow_cannot_decode_are_converted_to_png_losslessly(prepare, fmt, options):
    source = gradient_image(24, 16).quantize(256) if fmt == "GIF" else gradient_image(24, 16)
    data = encode(source, fmt, **options)
    prepared, report = prepare(data, 24, 16)
    assert prepared.format == "png"
    assert Image.open(io.BytesIO(prepared.encoded)).format == "PNG"
    np.testing.assert_array_equal(pixels(prepared.encoded), pixels(data))
    assert lines(report) == [("fixed", "image-converted")]
    assert fmt in report.entries[0].message and report.entries[0].location == "pic.img"


def test_cmyk_jpeg_is_converted_to_an_rgb_jpeg(prepare):
    data = encode(gradient_image(24, 16, "CMYK"), "JPEG", quality=95)
    prepared, report = prepare(data, 24, 16)
    converted = Image.open(io.BytesIO(prepared.encoded))
    assert prepared.format == "jpeg" and (converted.format, converted.mode) == ("JPEG", "RGB")
    assert np.abs(pixels(prepared.encoded) - pixels(data)).mean() < 3
    assert lines(report) == [("fixed", "image-converted")]


def test_exif_rotation_applied_when_the_annotation_is_drawn_on_the_rotated_image(prepare):
    data = with_orientation(gradient_image(40, 20), 6)
    prepared, report = prepare(data, 20, 40)  # CVAT shows it 20 wide, 40 high
    out = Image.open(io.BytesIO(prepared.encoded))
    assert out.size == (20, 40) and (prepared.width, prepared.height) == (20, 40)
    assert out.getexif().get(ORIENTATION_TAG, 1) == 1  # no viewer rotates it twice
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))), dtype=np.int16)
    assert np.abs(pixels(prepared.encoded) - shown).mean() < 3
    assert lines(report) == [("fixed", "exif-applied")]


def test_half_turn_applied_or_refused_by_policy(prepare):
    data = with_orientation(gradient_image(30, 20), 3)
    prepared, report = prepare(data, 30, 20, "apply")
    upside_down = pixels(encode(gradient_image(30, 20).rotate(180), "PNG"))
    assert np.abs(pixels(prepared.encoded) - upside_down).mean() < 3

    prepared, report = prepare(data, 30, 20, "refuse")
    assert prepared is None and lines(report) == [("refused", "exif-orientation")]


def test_exif_ignored_passes_the_bytes_through(prepare):
    data = with_orientation(gradient_image(40, 20), 6)
    prepared, report = prepare(data, 40, 20, "ignore")
    assert prepared.encoded == data
    assert lines(report) == [("note", "exif-ignored")]


@pytest.mark.parametrize("policy", ["apply", "refuse"])
def test_quarter_turn_follows_the_annotation_size_drawn_on_stored_pixels(prepare, policy):
    data = with_orientation(gradient_image(40, 20), 6)
    prepared, report = prepare(data, 40, 20, policy)
    assert prepared.encoded == data and (prepared.width, prepared.height) == (40, 20)
    assert lines(report) == [("fixed", "exif-by-size")]


def test_quarter_turn_follows_the_annotation_size_drawn_on_rotated_image(prepare):
    data = with_orientation(gradient_image(40, 20), 8)
    prepared, report = prepare(data, 20, 40, "ignore")
    assert Image.open(io.BytesIO(prepared.encoded)).size == (20, 40)
    assert lines(report) == [("fixed", "exif-by-size")]


def test_quarter_turn_with_a_size_matching_neither_is_refused(prepare):
    data = with_orientation(gradient_image(40, 20), 6)
    prepared, report = prepare(data, 30, 30)
    assert prepared is None
    [refusal] = report.refusals
    assert refusal.code == "size-mismatch" and refusal.location == "pic.img"
    for size in ("30x30", "40x20", "20x40"):
        assert size in refusal.message


def test_size_differing_from_the_annotation_is_refused(prepare):
    prepared, report = prepare(encode(gradient_image(40, 20), "PNG"), 80, 40)
    assert prepared is None
    [refusal] = report.refusals
    assert refusal.code == "size-mismatch" and refusal.location == "pic.img"
    assert "80x40" in refusal.message and "40x20" in refusal.message


def test_rotation_and_conversion_happen_in_one_encoding(prepare):
    data = with_orientation(gradient_image(40, 20), 6, fmt="WEBP")
    prepared, report = prepare(data, 20, 40)
    assert prepared.format == "png" and Image.open(io.BytesIO(prepared.encoded)).size == (20, 40)
    assert sorted(lines(report)) == [("fixed", "exif-applied"), ("fixed", "image-converted")]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_images_are_refused_by_name(prepare, damage):
    data = encode(gradient_image(64, 48), "JPEG")
    data = {"truncated": data[: len(data) // 2], "garbage": b"\x00GIF89" * 9, "empty": b""}[damage]
    prepared, report = prepare(data, 64, 48)
    assert prepared is None
    assert [(e.code, e.location) for e in report.refusals] == [("image-unreadable", "pic.img")]


def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = b"camera \xff\xd9 maker"  # Make, holding an end-of-image marker's bytes
    data = exif.tobytes()
    assert b"\xff\xd9" in data
    return data


@pytest.mark.parametrize(
    "options",
    [
        {"progressive": True},  # ten scans, tables between them
        {"restart_marker_blocks": 1},  # restart markers inside the scan
        {"comment": b"an end-of-image marker \xff\xd9 inside a segment"},
        {"exif": camera_exif()},  # an APP1 segment
    ],
)
def test_complete_jpegs_of_every_structure_pass_through(prepare, options):
    data = encode(gradient_image(64, 48), "JPEG", **options)
    prepared, report = prepare(data, 64, 48)
    assert prepared.encoded == data and report.entries == []


def test_bytes_after_the_end_of_image_marker_are_left_alone(prepare):
    data = encode(gradient_image(64, 48), "JPEG") + b"\x00\x00 trailing \xff\xd8 data"
    prepared, report = prepare(data, 64, 48)
    assert prepared.encoded == data and report.entries == []


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_anywhere_is_refused(prepare, progressive):
    data = encode(gradient_image(32, 24), "JPEG", progressive=progressive)
    for cut in range(len(data)):
        prepared, report = prepare(data[:cut], 32, 24)
        assert prepared is None, f"cut at {cut} of {len(data)}"
        assert [e.code for e in report.refusals] == ["image-unreadable"]


def jpeg_parts() -> tuple[bytes, bytes, bytes]:
    """A small baseline JPEG as (headers up to its scan, the scan, the end-of-image marker)."""
    data = encode(gradient_image(32, 24), "JPEG")
    scan = data.index(b"\xff\xda")
    return data[:scan], data[scan:-2], data[-2:]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda head, scan, end: b"", "not a JPEG"),
        (lambda head, scan, end: head[2:] + scan + end, "not a JPEG"),
        (lambda head, scan, end: head + scan, "end-of-image"),
        (lambda head, scan, end: head + scan[:7], "inside a segment"),
        (lambda head, scan, end: head + end, "no scan"),
        (lambda head, scan, end: head[:2] + scan + end, "before any frame header"),
    ],
)
def test_jpeg_structure_problems_are_named(damage, problem):
    with pytest.raises(ValueError, match=problem):
        check_jpeg_complete(damage(*jpeg_parts()))


def test_jpeg_structure_check_accepts_fill_bytes_and_stray_bytes_between_segments():
    head, scan, end = jpeg_parts()
    check_jpeg_complete(head + scan + end)
    check_jpeg_complete(head + scan + b"\xff\xff\xff" + end)  # 0xFF fill before a marker
    check_jpeg_complete(head[:2] + b"junk" + head[2:] + scan + end)  # libjpeg skips, warns
