"""Mask RLE helpers: box_mask_to_rle (the RLE of a whole-image mask, made from the box that holds
its pixels) and compressed_rle_counts (the runs of a compressed RLE string)."""

import random

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cvat_kfp.components.common import dataset as dataset_module
from cvat_kfp.components.common.dataset import (
    box_mask_to_rle,
    compressed_rle_counts,
    mask_to_rle,
    rle_pixels,
)


def test_compressed_counts_decode_like_pycocotools():
    generator = random.Random(0)
    for _ in range(20):
        mask = np.array([[generator.random() < 0.3 for _ in range(23)] for _ in range(17)])
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        counts = compressed_rle_counts(encoded["counts"].decode())
        runs = np.repeat(np.arange(len(counts)) % 2, counts)
        assert (runs.reshape(23, 17).T == mask).all()


def _whole(box, left, top, width, height):
    whole = np.zeros((height, width), np.uint8)
    whole[top : top + box.shape[0], left : left + box.shape[1]] = box
    return whole


@pytest.mark.parametrize(
    ("box", "left", "top", "width", "height"),
    [
        (np.ones((3, 4), np.uint8), 0, 0, 4, 3),  # the whole image, set
        (np.ones((2, 2), bool), 0, 0, 5, 4),  # starts with a 1: the runs start with a 0-run
        (np.ones((2, 2), np.uint8), 3, 2, 5, 4),  # ends in the last pixel
        (np.zeros((2, 3), np.uint8), 1, 1, 6, 5),  # nothing set
        (np.zeros((0, 0), np.uint8), 2, 2, 6, 5),  # an empty box
        (np.array([[0, 1], [1, 0]], np.uint8), 4, 0, 6, 2),
    ],
)
def test_equals_the_whole_image_rle(box, left, top, width, height):
    assert box_mask_to_rle(box, left, top, width, height) == mask_to_rle(
        _whole(box, left, top, width, height)
    )


def test_equals_the_whole_image_rle_on_random_boxes():
    rng = np.random.default_rng(7)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(1, 15, 2))
        box_height, box_width = int(rng.integers(0, height + 1)), int(rng.integers(0, width + 1))
        top = int(rng.integers(0, height - box_height + 1))
        left = int(rng.integers(0, width - box_width + 1))
        box = (rng.random((box_height, box_width)) < rng.random()).astype(np.uint8)
        whole = _whole(box, left, top, width, height)
        assert box_mask_to_rle(box, left, top, width, height) == mask_to_rle(whole)


@pytest.mark.parametrize(("left", "top"), [(-1, 0), (0, -1), (4, 0), (0, 3)])
def test_a_box_outside_the_image_is_refused(left, top):
    with pytest.raises(ValueError, match="a 2x2 mask at .* does not fit a 5x4 image"):
        box_mask_to_rle(np.ones((2, 2), np.uint8), left, top, 5, 4)


@pytest.mark.parametrize("chunk_px", [1 << 20, 5], ids=["one-pass", "in-chunks"])
def test_rle_pixels_reads_any_window_or_sampling_of_the_mask(monkeypatch, chunk_px):
    monkeypatch.setattr(dataset_module, "RLE_SAMPLE_CHUNK_PX", chunk_px)
    generator = np.random.default_rng(11)
    for _ in range(100):
        height, width = (int(v) for v in generator.integers(1, 30, 2))
        mask = (generator.random((height, width)) < generator.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))  # bytes counts, as pycocotools gives
        rows = np.sort(generator.integers(0, height, int(generator.integers(0, 40))))
        columns = np.sort(generator.integers(0, width, int(generator.integers(0, 40))))
        expected = mask[np.ix_(rows, columns)]
        assert (rle_pixels(rle, rows, columns) == expected).all()
        assert (rle_pixels(mask_to_rle(mask), rows, columns) == expected).all()  # str counts
