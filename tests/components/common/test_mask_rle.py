"""box_mask_to_rle: the RLE of a whole-image mask, made from the box that holds its pixels."""

import numpy as np
import pytest

from cvat_kfp.components.common.dataset import box_mask_to_rle, mask_to_rle


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
