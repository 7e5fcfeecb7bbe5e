"""The synthetic shapes Dataset: deterministic, valid, and geometrically sound."""

from collections import Counter

import pytest
from PIL import Image

from cvat_kfp.components.common.dataset import ANNOTATIONS_FILE, IMAGES_DIR, Dataset
from cvat_kfp.components.common.synthetic import (
    SHAPES,
    make_shapes_dataset,
    polygon_area,
    shape_polygon,
)


def files(root):
    """Every file under root, relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_gives_byte_identical_datasets(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", num_images=5, seed=7, num_groups=2)
    b = make_shapes_dataset(tmp_path / "b", num_images=5, seed=7, num_groups=2)
    assert a == tmp_path / "a"
    contents = files(a)
    assert ANNOTATIONS_FILE in contents
    assert len([k for k in contents if k.startswith(IMAGES_DIR + "/")]) == 5
    assert files(b) == contents


def test_another_seed_gives_another_dataset(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", num_images=3, seed=1)
    b = make_shapes_dataset(tmp_path / "b", num_images=3, seed=2)
    assert (a / ANNOTATIONS_FILE).read_bytes() != (b / ANNOTATIONS_FILE).read_bytes()
    assert (a / IMAGES_DIR / "shapes_00001.jpg").read_bytes() != (
        b / IMAGES_DIR / "shapes_00001.jpg"
    ).read_bytes()


def test_it_is_a_valid_dataset(tmp_path):
    root = make_shapes_dataset(tmp_path / "ds", num_images=6, image_size=(80, 60), max_shapes=4)
    dataset = Dataset.load(root)
    assert dataset.validate() == []
    assert dataset.label_map.names == SHAPES
    assert [c["supercategory"] for c in dataset.categories] == ["shape"] * 3
    assert [im["id"] for im in dataset.images] == [1, 2, 3, 4, 5, 6]
    assert [a["id"] for a in dataset.annotations] == list(range(1, len(dataset.annotations) + 1))
    per_image = Counter(a["image_id"] for a in dataset.annotations)
    assert all(1 <= per_image[im["id"]] <= 4 for im in dataset.images)
    for image in dataset.images:
        assert (image["width"], image["height"]) == (80, 60)
        with Image.open(dataset.image_path(image)) as picture:
            assert picture.format == "JPEG"
            assert picture.size == (80, 60)
            assert picture.mode == "RGB"
        assert "group" not in image


def test_chosen_classes_only(tmp_path):
    root = make_shapes_dataset(tmp_path / "ds", num_images=5, classes=("triangle", "circle"))
    dataset = Dataset.load(root)
    assert dataset.label_map.names == ("triangle", "circle")
    assert set(dataset.instance_counts()) <= {1, 2}
    for ann in dataset.annotations:  # a triangle has 3 corners, a circle 24
        corners = len(ann["segmentation"][0]) // 2
        assert corners == {1: 3, 2: 24}[ann["category_id"]]


def test_unknown_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown shape class\(es\) \['hexagon'\]"):
        make_shapes_dataset(tmp_path / "ds", classes=("circle", "hexagon"))


def test_groups_are_assigned_round_robin(tmp_path):
    root = make_shapes_dataset(tmp_path / "ds", num_images=7, num_groups=3)
    images = Dataset.load(root).images
    groups = [im["group"] for im in images]
    assert all(isinstance(g, str) for g in groups)
    assert len(set(groups)) == 3
    assert sorted(Counter(groups).values()) == [2, 2, 3]
    assert groups[0:3] == groups[3:6]  # round robin: every third image shares a group


def test_polygons_and_boxes_lie_within_the_image(tmp_path):
    width, height = 50, 40
    root = make_shapes_dataset(
        tmp_path / "ds", num_images=40, image_size=(width, height), max_shapes=5, seed=11
    )
    dataset = Dataset.load(root)
    assert len(dataset.annotations) > 60
    for ann in dataset.annotations:
        (polygon,) = ann["segmentation"]
        xs, ys = polygon[0::2], polygon[1::2]
        assert all(0 <= x <= width for x in xs), ann
        assert all(0 <= y <= height for y in ys), ann
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0, ann
        assert x + w <= width + 0.01 and y + h <= height + 0.01, ann  # 2-decimal rounding
        # the box is the polygon's extent
        assert x == pytest.approx(min(xs), abs=0.01)
        assert x + w == pytest.approx(max(xs), abs=0.02)
        assert y + h == pytest.approx(max(ys), abs=0.02)
        assert 0 < ann["area"] <= w * h + 0.1
        assert ann["iscrowd"] == 0


def test_shape_polygon_and_area():
    square = shape_polygon("square", 10, 10, 5, 0)
    assert len(square) == 8
    # a square with circumradius 5 has side 5*sqrt(2), so area 50
    assert polygon_area(square) == pytest.approx(50, abs=0.01)
    assert polygon_area([0, 0, 4, 0, 4, 3]) == 6
    assert polygon_area([0, 0, 0, 3, 4, 0]) == 6  # orientation does not matter
    circle = shape_polygon("circle", 0, 0, 10, 0.3)
    assert len(circle) == 48
    assert polygon_area(circle) == pytest.approx(314.16, rel=0.02)
