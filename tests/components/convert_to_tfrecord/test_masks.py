"""Masks from RLE: pixel-identical to pycocotools' full-image decode; PNGs every reader reads."""

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cvat_kfp.components.convert_to_tfrecord.masks import (
    MaskRows,
    encode_mask_png,
    mask_rows,
    rle_counts,
)


def full_mask(rle: dict) -> np.ndarray:
    """mask_rows' answer as a full-image 0/1 array."""
    height, width = rle["size"]
    mask = np.zeros((height, width), dtype=np.uint8)
    rows = mask_rows(rle)
    if rows is not None:
        band = np.unpackbits(rows.packed, axis=1, count=width)
        mask[rows.top : rows.top + len(band)] = band
    return mask


def pycocotools_polygons(polygons, height, width) -> tuple[dict, np.ndarray]:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return rle, mask_utils.decode(rle)


def random_polygon(rng: random.Random, height: int, width: int, kind: str) -> list[float]:
    """3 to 14 random points: all inside the image, spread past its border, within a sliver
    thinner than a pixel, or around a point anywhere. Coordinates as CVAT and others write
    them: floats, rounded to 0, 1 or 2 decimals, or integers."""
    decimals = rng.choice([None, 0, 1, 2])
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    points = []
    for _ in range(rng.randint(3, 14)):
        if kind == "inside":
            x, y = rng.uniform(0, width), rng.uniform(0, height)
        elif kind == "crossing":
            x, y = rng.uniform(-0.3, 1.3) * width, rng.uniform(-0.3, 1.3) * height
        elif kind == "sliver":
            x, y = cx + rng.uniform(-0.4, 0.4), cy + rng.uniform(-30, 30)
        else:
            x, y = cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3)
        points += [x, y] if decimals is None else [round(x, decimals), round(y, decimals)]
    return points


def test_polygon_masks_equal_pycocotools_full_image_decode():
    rng = random.Random(20240611)
    sizes = [(600, 800), (37, 53), (64, 64), (1, 9), (9, 1), (100, 63), (33, 65)]
    with_pixels = 0
    for case in range(3000):
        height, width = sizes[case % len(sizes)]
        kinds = rng.choices(["inside", "crossing", "sliver", "small"], k=rng.choice([1, 1, 2, 3]))
        polygons = [random_polygon(rng, height, width, kind) for kind in kinds]
        rle, expected = pycocotools_polygons(polygons, height, width)
        np.testing.assert_array_equal(full_mask(rle), expected, err_msg=str(polygons))
        with_pixels += expected.any()
    assert with_pixels > 2500  # the empty mask is checked too, but rarely


@pytest.mark.parametrize(
    "polygon",
    [
        [0, 0, 80, 0, 80, 60, 0, 60],  # the whole image: runs go on into the next column
        [10, -5, 12, -5, 12, 70, 10, 70],  # as high as the image: bottom of one, top of next
        [-5, -5, 85, -5, 85, 65, -5, 65],  # past every border
        [10.1, 120.1, 50.3, 100.7, 30.9, 110.3],  # entirely below the image: no pixel
        [40, 30, 40.2, 30.1, 40.1, 30.3],  # smaller than a pixel
        [79.6, 59.6, 80, 59.6, 80, 60],  # the last pixel's corner
    ],
)
def test_border_and_degenerate_polygons(polygon):
    rle, expected = pycocotools_polygons([polygon], 60, 80)
    np.testing.assert_array_equal(full_mask(rle), expected)
    assert (mask_rows(rle) is None) == (not expected.any())


def test_rows_are_the_band_the_mask_covers():
    rle, _ = pycocotools_polygons([[10, 20, 30, 20, 30, 25, 10, 25]], 60, 80)
    rows = mask_rows(rle)
    assert rows.top == 20 and rows.packed.shape == (5, 10)


def test_rle_masks_from_random_pixels_decode_exactly():
    rng = np.random.default_rng(7)
    for _ in range(500):
        height, width = rng.integers(1, 70, size=2)
        mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))
        np.testing.assert_array_equal(full_mask(rle), mask)


@pytest.mark.parametrize(
    "counts",
    [
        [0, 12],  # all ones, no leading zeros
        [12],  # all zeros
        [2, 3, 0, 4, 3],  # an empty run of 0s: the 1s either side join
        [5, 0, 3, 4],  # an empty run of 1s
        [0, 0, 0, 5, 7],  # empty runs first
        [2, 3, 7, 0],  # an empty last run
    ],
)
def test_hand_made_uncompressed_counts_with_empty_runs(counts):
    rle = mask_utils.frPyObjects({"size": [3, 4], "counts": counts}, 3, 4)
    np.testing.assert_array_equal(full_mask(rle), mask_utils.decode(rle))


def test_counts_decode_to_the_runs_pycocotools_encoded():
    counts = [0, 1, 31, 32, 1000, 5, 3, 40000, 2, 1, 900000, 7]  # small, large, falling
    total = sum(counts)
    rle = mask_utils.frPyObjects({"size": [total, 1], "counts": counts}, total, 1)
    assert rle_counts(rle["counts"], total).tolist() == counts


@pytest.mark.parametrize(
    "counts, problem",
    [
        (b"", "empty"),
        (b"4 5", "outside"),
        (b"4\x7f", "outside"),
        (b"4a", "ends inside a count"),  # 'a' carries the more-follows bit
        (b"4" + b"o" * 12 + b"0", "over 12 characters"),
        (b"44", "cover the 12 pixels"),
        (b"4<4", "cover the 12 pixels"),
    ],
)
def test_malformed_counts_are_refused(counts, problem):
    with pytest.raises(ValueError, match=problem):
        rle_counts(counts, 12)


def test_a_negative_run_is_refused():
    # '0' then a count of -3 ('=' is 13: sign bit set, 5-bit two's complement of -3)
    with pytest.raises(ValueError, match="non-negative"):
        rle_counts(b"=?", 12)


def idat(png: bytes) -> bytes:
    """The PNG's zlib stream, the IDAT chunks' data together, each chunk's CRC checked."""
    data, position = b"", 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        data += body if kind == b"IDAT" else b""
        position += 12 + length
    return data


@pytest.mark.parametrize(
    "top, band_rows, height, width",
    [(0, 5, 5, 8), (3, 4, 10, 13), (0, 3, 9, 70), (6, 3, 9, 1), (2, 1, 3, 64)],
)
def test_mask_png_decodes_to_the_mask_with_pil_zlib_and_tensorflow(top, band_rows, height, width):
    import tensorflow as tf

    rng = np.random.default_rng(top * 100 + width)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top : top + band_rows] = rng.integers(0, 2, size=(band_rows, width))
    rows = MaskRows(top, np.packbits(mask[top : top + band_rows], axis=1))
    png = encode_mask_png(rows, height, width)

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), mask)
    scanlines = np.frombuffer(zlib.decompress(idat(png)), dtype=np.uint8)  # checks the Adler-32
    assert scanlines.size == height * (1 + (width + 7) // 8)
    np.testing.assert_array_equal(tf.io.decode_png(png, channels=1).numpy()[..., 0], mask)


def test_real_polygon_pngs_match_pycocotools_pixels():
    rng = random.Random(5)
    for _ in range(100):
        polygons = [random_polygon(rng, 60, 80, kind) for kind in ("inside", "crossing")]
        rle, expected = pycocotools_polygons(polygons, 60, 80)
        rows = mask_rows(rle)
        if rows is not None:
            png = encode_mask_png(rows, 60, 80)
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


def test_shifting_polygons_to_their_band_would_not_be_exact():
    """Why masks are cut from the full-image RLE: pycocotools rasterizing a polygon moved up by
    an integer (to its band of rows) rounds y differently, here by whole pixels."""
    polygon, top = [10, 101, 200, 120.1, 100, 300], 99
    _, full = pycocotools_polygons([polygon], 600, 800)
    shifted = [v - top if i % 2 else v for i, v in enumerate(polygon)]
    _, band = pycocotools_polygons([shifted], 600 - top, 800)
    assert not np.array_equal(full[top:], band)
