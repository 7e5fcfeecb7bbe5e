"""Mask RLE helpers: box_mask_to_rle (the RLE of a whole-image mask, made from the box that holds
its pixels), compressed_rle_counts (the runs of a compressed RLE string) and polygons_to_rle
(polygons rasterized at a cost bounded by the image)."""

import random
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cvat_kfp.components.common import dataset as dataset_module
from cvat_kfp.components.common.dataset import (
    box_mask_to_rle,
    compressed_rle_counts,
    mask_to_rle,
    polygons_to_rle,
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


def _random_polygon(generator, width, height, reach):
    """A polygon of 3 to 7 vertices spread `reach` image sizes beyond each side."""
    count = generator.integers(3, 8)
    xs = generator.uniform(-reach * width, (1 + reach) * width, count)
    ys = generator.uniform(-reach * height, (1 + reach) * height, count)
    return [float(v) for v in np.column_stack([xs, ys]).ravel()]


def test_polygons_within_an_image_size_outside_rasterize_exactly_as_pycocotools():
    generator = np.random.default_rng(0)
    for _ in range(300):
        width, height = (int(v) for v in generator.integers(8, 90, 2))
        polygons = [_random_polygon(generator, width, height, 1.0) for _ in range(2)]
        expected = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        assert polygons_to_rle(polygons, height, width) == expected


def test_far_reaching_polygons_are_clipped_keeping_every_pixel_but_cut_edges():
    """Vertices up to 8 image sizes away (self-crossing too): the same region; a pixel may differ
    only beside the boundary of pycocotools' own drawing of the uncut polygon."""
    generator = np.random.default_rng(1)
    changed = 0
    for _ in range(300):
        width, height = (int(v) for v in generator.integers(8, 90, 2))
        polygon = _random_polygon(generator, width, height, 8.0)
        expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], height,
                                                                             width)))  # fmt: skip
        clipped = mask_utils.decode(polygons_to_rle([polygon], height, width))
        differ = clipped != expected
        assert not (differ & ~_boundary(expected)).any()
        changed += differ.sum()
    assert changed < 0.001 * 300 * 50 * 50  # a few pixels in all


def _boundary(mask):
    """Pixels with one of their 8 neighbours on the other side of the mask's boundary, or outside
    the image (where the polygon's edge may run too)."""
    padded = np.pad(mask.astype(np.int8), 1, constant_values=-1)
    height, width = mask.shape
    windows = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.any([w != mask for w in windows], axis=0)


def test_a_polygon_around_the_image_covers_it_and_one_beyond_it_is_empty():
    around = [-3e6, -3e6, 3e6, -3e6, 3e6, 3e6, -3e6, 3e6]
    assert mask_utils.area(polygons_to_rle([around], 48, 64)) == 48 * 64
    beyond = [1e6, 1e6, 2e6, 1e6, 2e6, 2e6]
    assert mask_utils.area(polygons_to_rle([beyond], 48, 64)) == 0


def test_a_polygon_millions_of_pixels_across_costs_memory_of_the_image_not_of_its_outline():
    """pycocotools alone peaks ~340 MB above its start on this 4-point polygon of a 64x48 image."""
    child = (
        "import resource\n"
        "from cvat_kfp.components.common.dataset import polygons_to_rle\n"
        "from pycocotools import mask\n"
        "start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rle = polygons_to_rle([[10, 10, 3e6, 10, 3e6, 3e6, 10, 3e6]], 48, 64)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) // 1024,"
        " mask.area(rle))\n"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    growth_mb, area = (int(v) for v in result.stdout.split())
    assert area == (64 - 10) * (48 - 10)
    assert growth_mb < 20
