"""DatasetBuilder: the checks every reader's output goes through."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cvat_kfp.components.common.dataset import Dataset
from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder


def _image(path, size, exif_orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGB", size, (10, 20, 30))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        picture.save(path, exif=exif)
    else:
        picture.save(path)
    return path


def test_classes_follow_first_mention_and_every_shape_kind_lands(tmp_path):
    builder = DatasetBuilder()
    builder.category("zebra")  # declared by a label map, before any shape
    image = builder.add_image(
        _image(tmp_path / "src/a.png", (40, 30)), "a.png", width=40, height=30
    )
    builder.add_box(image, "cat", 1, 2, 10, 5, attributes={"occluded": True})
    builder.add_polygon(image, "dog", [[0, 0, 10, 0, 10, 10], [20, 20, 30, 20, 30, 28]])
    mask = np.zeros((30, 40), bool)
    mask[5:15, 10:30] = True
    builder.add_mask(image, "cat", mask, iscrowd=1)
    builder.add_rle(image, "dog", {"size": [30, 40], "counts": [0, 1200]})

    dataset = builder.build(tmp_path / "out")

    assert dataset.label_map.names == ("zebra", "cat", "dog")
    box, polygon, crowd, rle = dataset.annotations
    assert box["bbox"] == [1, 2, 10, 5] and box["area"] == 50
    assert box["attributes"] == {"occluded": True} and box["segmentation"] == []
    assert polygon["bbox"] == [0, 0, 30, 28] and polygon["area"] == 50 + 40
    assert crowd["iscrowd"] == 1 and crowd["area"] == 200 and crowd["bbox"] == [10, 5, 20, 10]
    assert rle["area"] == 1200 and isinstance(rle["segmentation"]["counts"], str)
    assert Dataset.load(tmp_path / "out").metadata()["num_annotations"] == 4


def test_size_from_the_file_when_the_format_has_none(tmp_path):
    builder = DatasetBuilder()
    builder.category("cat")
    builder.add_image(_image(tmp_path / "a.jpg", (64, 48)), "a.jpg")
    dataset = builder.build(tmp_path / "out")
    assert (dataset.images[0]["width"], dataset.images[0]["height"]) == (64, 48)


def test_exif_rotated_file_matches_the_displayed_size(tmp_path):
    builder = DatasetBuilder()
    builder.category("cat")
    # stored 60x40, orientation 6 shows 40x60: CVAT annotates the displayed image
    path = _image(tmp_path / "a.jpg", (60, 40), exif_orientation=6)
    builder.add_image(path, "a.jpg", width=40, height=60)
    dataset = builder.build(tmp_path / "out")
    assert (dataset.images[0]["width"], dataset.images[0]["height"]) == (40, 60)
    assert not builder.report.entries


def test_resized_image_with_same_aspect_rescales_annotations(tmp_path):
    builder = DatasetBuilder()
    image = builder.add_image(_image(tmp_path / "a.png", (200, 100)), "a.png", width=100, height=50)
    builder.add_box(image, "cat", 10, 10, 20, 10)
    builder.add_polygon(image, "cat", [[0, 0, 10, 0, 10, 10]])
    mask = np.zeros((50, 100), bool)
    mask[10:20, 10:30] = True
    builder.add_mask(image, "cat", mask)

    dataset = builder.build(tmp_path / "out")

    box, polygon, masked = dataset.annotations
    assert dataset.images[0]["width"] == 200 and dataset.images[0]["height"] == 100
    assert box["bbox"] == [20, 20, 40, 20] and box["area"] == 800
    assert polygon["segmentation"] == [[0, 0, 20, 0, 20, 20]] and polygon["area"] == 200
    assert masked["segmentation"]["size"] == [100, 200] and masked["area"] == 800
    assert masked["bbox"] == [20, 20, 40, 20]
    [entry] = builder.report.entries
    assert (
        entry.code == "image-rescaled" and "100x50" in entry.message and "200x100" in entry.message
    )


@pytest.mark.parametrize(
    ("problem", "code", "words"),
    [
        ("missing", "image-missing", "gone.jpg"),
        ("corrupt", "image-corrupt", "cannot be read"),
        ("aspect", "size-mismatch", "another aspect ratio"),
    ],
)
def test_bad_images_are_refused_by_name_and_nothing_is_written(tmp_path, problem, code, words):
    builder = DatasetBuilder()
    if problem == "missing":
        source = tmp_path / "gone.jpg"
    elif problem == "corrupt":
        source = tmp_path / "broken.jpg"
        source.write_bytes(_image(tmp_path / "ok.jpg", (50, 50)).read_bytes()[:200])
    else:
        source = _image(tmp_path / "square.png", (50, 50))
    image = builder.add_image(source, "x.jpg", width=100, height=50, location="task 3 frame 7")
    builder.add_box(image, "cat", 1, 1, 5, 5)

    with pytest.raises(ReportError) as error:
        builder.build(tmp_path / "out")

    assert "task 3 frame 7" in str(error.value) and words in str(error.value)
    assert [e.code for e in builder.report.refusals] == [code]
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_skip_bad_images_drops_them_with_their_annotations_counted(tmp_path):
    builder = DatasetBuilder()
    good = builder.add_image(_image(tmp_path / "a.png", (20, 20)), "a.png")
    builder.add_box(good, "cat", 1, 1, 5, 5)
    bad = builder.add_image(tmp_path / "missing.png", "b.png")
    builder.add_box(bad, "cat", 1, 1, 5, 5)
    builder.add_box(bad, "dog", 1, 1, 5, 5)

    dataset = builder.build(tmp_path / "out", skip_bad_images=True)

    assert [im["file_name"] for im in dataset.images] == ["a.png"]
    assert [a["image_id"] for a in dataset.annotations] == [1]
    assert dataset.label_map.names == ("cat", "dog")  # classes are kept even when unused
    [entry] = builder.report.entries
    assert entry.action == "skipped" and "2 annotation(s)" in entry.message


def test_clashing_file_names_are_renamed_and_reported(tmp_path):
    builder = DatasetBuilder()
    builder.category("cat")
    builder.file_prefix = "task-1"
    builder.add_image(_image(tmp_path / "t1/a.png", (10, 10)), "a.png")
    builder.add_image(_image(tmp_path / "t2/a.png", (12, 12)), "a.png")
    builder.add_image(_image(tmp_path / "t3/a.png", (14, 14)), ".\\a.png")  # Windows-made

    dataset = builder.build(tmp_path / "out")

    names = [im["file_name"] for im in dataset.images]
    assert names == ["task-1/a.png", "task-1/a_2.png", "task-1/a_3.png"]
    assert [e.code for e in builder.report.entries] == ["file-renamed", "file-renamed"]
    sizes = [Image.open(tmp_path / "out/images" / n).size for n in names]
    assert sizes == [(10, 10), (12, 12), (14, 14)]


def test_a_file_name_leading_out_of_images_is_a_readers_bug_named_by_location(tmp_path):
    builder = DatasetBuilder()
    with pytest.raises(ValueError) as error:
        builder.add_image(_image(tmp_path / "a.png", (10, 10)), "../../a.png", location="x.json")
    assert str(error.value) == "x.json: image file name '../../a.png' contains a '..' segment"


def test_groups_and_subsets_are_recorded(tmp_path):
    builder = DatasetBuilder()
    builder.category("cat")
    builder.default_group = "task-7"
    builder.add_image(_image(tmp_path / "a.png", (10, 10)), "a.png", subset="Train")
    builder.add_image(_image(tmp_path / "b.png", (10, 10)), "b.png", group="track-2")
    dataset = builder.build(tmp_path / "out")
    assert dataset.images[0]["group"] == "task-7" and dataset.images[0]["subset"] == "Train"
    assert dataset.images[1]["group"] == "track-2"


def test_output_is_deterministic(tmp_path):
    def build(out):
        builder = DatasetBuilder()
        image = builder.add_image(_image(tmp_path / "a.png", (30, 20)), "a.png")
        builder.add_polygon(image, "b", [[1.5, 1.25, 9, 1, 9, 9.75]])
        builder.add_mask(image, "a", np.eye(20, 30, dtype=bool))
        builder.build(out)
        return (out / "annotations.json").read_bytes()

    first, second = build(tmp_path / "one"), build(tmp_path / "two")
    assert first == second
    rle = json.loads(first)["annotations"][1]["segmentation"]
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.sum() == 20


def test_invalid_polygon_is_a_clear_error(tmp_path):
    builder = DatasetBuilder()
    image = builder.add_image(tmp_path / "a.png", "a.png")
    with pytest.raises(ValueError, match="at least 3 points"):
        builder.add_polygon(image, "cat", [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="class name is empty"):
        builder.category("  ")
