"""Segmentation mask 1.1 reader: colour PNGs to one instance per object."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.formats import detect_format, read_export
from cvat_kfp.components.export_annotations.readers import segmentation_mask as segmask
from cvat_kfp.components.export_annotations.readers.segmentation_mask import VOC_PALETTE

from ._formats_helpers import (
    build,
    entries,
    instances_per_class,
    locations,
    read,
    write,
    write_image,
)

LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:255,0,0::\ndog:0,0,255::\n"
CAT, DOG, BLACK, VOID = (255, 0, 0), (0, 0, 255), (0, 0, 0), (224, 224, 192)


def _png(path, colors):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(colors, np.uint8)).save(path)


def _maps():
    """A 30x40 class map and instance map: two cats and a dog, a void border around one cat."""
    classes = np.zeros((30, 40, 3), np.uint8)
    instances = np.zeros((30, 40, 3), np.uint8)
    for index, (color, rows, cols) in enumerate(
        [
            (CAT, slice(2, 8), slice(2, 12)),
            (CAT, slice(2, 8), slice(12, 20)),
            (DOG, slice(15, 25), slice(5, 35)),
        ],
        start=1,
    ):
        classes[rows, cols], instances[rows, cols] = color, VOC_PALETTE[index]
    classes[1, 2:12] = instances[1, 2:12] = VOID
    return classes, instances


def _export(root, labelmap=LABELMAP, with_objects=True):
    classes, instances = _maps()
    if labelmap is not None:
        write(root / "labelmap.txt", labelmap)
    _png(root / "SegmentationClass/a.png", classes)
    if with_objects:
        _png(root / "SegmentationObject/a.png", instances)
    write_image(root / "JPEGImages/a.jpg")
    write(root / "ImageSets/Segmentation/train.txt", "a\n")
    return root


def test_one_instance_per_object_colour_with_its_class(tmp_path):
    root = _export(tmp_path / "export")
    assert segmask.detect(root) == ["Segmentation mask 1.1"]
    builder = read(segmask, root)
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("cat", "dog")
    assert dataset.images[0]["subset"] == "train"
    areas = [(a["category_id"], a["area"], a["bbox"]) for a in dataset.annotations]
    assert areas == [(1, 60, [2, 2, 10, 6]), (1, 48, [12, 2, 8, 6]), (2, 300, [5, 15, 30, 10])]
    assert builder.report.entries == []


def test_without_instances_each_class_region_is_one_instance(tmp_path):
    builder = read(segmask, _export(tmp_path / "export", with_objects=False))
    dataset = build(builder, tmp_path)
    assert [a["area"] for a in dataset.annotations] == [108, 300]  # the two cats merged
    assert locations(builder, "instances-merged-by-class") == ["SegmentationClass/a.png"]


def test_an_instance_takes_the_majority_class_under_it(tmp_path):
    root = _export(tmp_path / "export")
    classes, _ = _maps()
    classes[2:4, 2:12] = DOG  # 20 dog pixels under the first cat's 60
    _png(root / "SegmentationClass/a.png", classes)
    builder = read(segmask, root)
    assert instances_per_class(build(builder, tmp_path)) == {"cat": 2, "dog": 1}
    (note,) = entries(builder, "instance-several-classes")
    assert note.location == "SegmentationObject/a.png" and "'cat' (40 of 60" in note.message


def test_an_instance_on_background_only_is_skipped(tmp_path):
    root = _export(tmp_path / "export")
    classes, _ = _maps()
    classes[15:25, 5:35] = BLACK
    _png(root / "SegmentationClass/a.png", classes)
    builder = read(segmask, root)
    assert instances_per_class(build(builder, tmp_path)) == {"cat": 2}
    (skipped,) = entries(builder, "instance-without-class")
    assert "instance 3" in skipped.message


@pytest.mark.parametrize("folder", ["SegmentationClass", "SegmentationObject"])
def test_an_unknown_colour_is_refused_with_its_file_and_colour(tmp_path, folder):
    root = _export(tmp_path / "export")
    colors = np.asarray(Image.open(root / folder / "a.png")).copy()
    colors[0, 0] = (1, 2, 3)
    _png(root / folder / "a.png", colors)
    builder = read(segmask, root)
    with pytest.raises(ReportError, match=rf"{folder}/a.png: colour\(s\) \(1, 2, 3\)"):
        build(builder, tmp_path)


def test_without_a_label_map_the_voc_palette_names_the_classes(tmp_path):
    root = tmp_path / "export"
    indices = np.zeros((30, 40), np.uint8)
    indices[2:8, 2:12], indices[15:25, 5:35], indices[0, :] = 8, 12, 255  # cat, dog, void
    picture = Image.fromarray(indices, "P")
    picture.putpalette([c for color in VOC_PALETTE for c in color])  # a palette PNG, as VOC's
    (root / "SegmentationClass").mkdir(parents=True)
    picture.save(root / "SegmentationClass/a.png")
    write_image(root / "JPEGImages/a.png")
    dataset = build(read(segmask, root), tmp_path)
    assert instances_per_class(dataset) == {"cat": 1, "dog": 1}
    assert dataset.images[0].get("subset") is None


def test_a_listed_image_without_masks_is_kept_without_objects(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "ImageSets/Segmentation/val.txt", "b\n")
    write_image(root / "JPEGImages/b.png")
    dataset = build(read(segmask, root), tmp_path)
    assert {i["file_name"]: i["subset"] for i in dataset.images} == {
        "a.jpg": "train",
        "b.png": "val",
    }
    assert len(dataset.annotations) == 3


def test_instances_without_a_class_map_are_refused(tmp_path):
    root = _export(tmp_path / "export")
    (root / "SegmentationClass/a.png").unlink()
    builder = read(segmask, root)
    assert locations(builder, "class-map-missing") == ["SegmentationObject/a.png"]


def test_list_ids_that_leave_the_export_are_refused(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "ImageSets/Segmentation/train.txt", "a\n../../b\n")
    builder = read(segmask, root)
    assert locations(builder, "path-escapes") == ["ImageSets/Segmentation/train.txt"]


def test_detect_leaves_voc_exports_to_the_voc_reader(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "Annotations/a.xml", "<annotation/>")
    assert segmask.detect(root) == []
    assert segmask.detect(tmp_path / "nothing") == []


def test_the_empty_annotations_folder_cvat_leaves_does_not_hide_the_masks(tmp_path):
    root = _export(tmp_path / "export")
    (root / "Annotations").mkdir()  # CVAT's Segmentation mask 1.1 writer leaves it empty
    assert detect_format(root) == "Segmentation mask 1.1"
    builder = DatasetBuilder()
    assert read_export(root, builder) == "Segmentation mask 1.1"
    assert len(build(builder, tmp_path).annotations) == 3


def _recoloured(colors, mapping):
    out = np.array(colors)
    for old, new in mapping.items():
        out[(np.asarray(colors) == old).all(axis=-1)] = new
    return out


def test_a_label_map_without_colours_gives_each_label_the_voc_colour_of_its_index(tmp_path):
    root = _export(tmp_path / "export", labelmap="# label:color_rgb:parts:actions\n"
                   "background:::\ncat:::\ndog:::\nignored:::\n")  # fmt: skip
    classes, _ = _maps()
    # index 0 background (black), 1 cat, 2 dog; `ignored` is VOC's void, index 255
    palette = {CAT: VOC_PALETTE[1], DOG: VOC_PALETTE[2]}
    _png(root / "SegmentationClass/a.png", _recoloured(classes, palette))
    builder = read(segmask, root)
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("cat", "dog")
    assert [a["category_id"] for a in dataset.annotations] == [1, 1, 2]
    assert builder.report.entries == []


def test_a_latin1_label_map_is_named_with_what_to_do(tmp_path):
    root = _export(tmp_path / "export")
    latin1 = "background:0,0,0::\nchat_\xe9t\xe9:255,0,0::\n".encode("latin-1")
    (root / "labelmap.txt").write_bytes(latin1)
    with pytest.raises(ValueError, match=r"^labelmap.txt is not UTF-8 text: byte 0xe9 on line 2 "):
        read(segmask, root)


def test_a_bad_label_map_is_refused(tmp_path):
    with pytest.raises(ValueError, match="colour '1,2' is not"):
        read(segmask, _export(tmp_path / "a", labelmap="cat:1,2::\n"))
    with pytest.raises(ValueError, match="given to both 'cat' and 'dog'"):
        read(segmask, _export(tmp_path / "b", labelmap="cat:1,2,3::\ndog:1,2,3::\n"))


# --- conformance ----------------------------------------------------------------------------


def _indices(path):
    """Palette indices of a mask PNG, independently of the reader: RGB through VOC's palette."""
    picture = Image.open(path)
    if picture.mode == "P":
        return np.asarray(picture)
    lookup = {color: index for index, color in enumerate(VOC_PALETTE)}
    rgb = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    return np.array([lookup[tuple(c)] for c in rgb]).reshape(picture.height, picture.width)


def _instances_in(object_png, class_png):
    """Counter of VOC class names over the instances of one image."""
    objects, classes = _indices(object_png), _indices(class_png)
    names = Counter()
    for index in set(np.unique(objects)) - {0, 255}:
        values, counts = np.unique(classes[objects == index], return_counts=True)
        majority = max((c, v) for v, c in zip(values, counts) if v not in (0, 255))[1]
        names[segmask.VOC_CLASSES[majority]] += 1
    return names


def test_labelme_voc_instance_segmentation(shared_test_data, tmp_path):
    """labelme's VOC-style output: palette PNGs, void 255 borders, no label map, no lists."""
    root = shared_test_data / "labelme_examples/examples/instance_segmentation/data_dataset_voc"
    expected = Counter()
    for png in sorted((root / "SegmentationObject").glob("*.png")):
        expected += _instances_in(png, root / "SegmentationClass" / png.name)
    builder = read(segmask, root)
    dataset = build(builder, tmp_path)

    assert len(dataset.images) == 3
    assert instances_per_class(dataset) == expected and sum(expected.values()) == 12
    assert [e.code for e in builder.report.entries] == []


def test_labelformat_class_masks_in_a_subfolder(shared_test_data, tmp_path):
    root = shared_test_data / "labelformat_fixtures/tests/fixtures/semantic_segmentation/pascalvoc"
    expected = Counter()
    for png in sorted((root / "SegmentationClass").rglob("*.png")):
        expected += Counter(
            segmask.VOC_CLASSES[v] for v in set(np.unique(_indices(png))) - {0, 255}
        )
    builder = read(segmask, root)
    dataset = build(builder, tmp_path)

    assert sorted(i["file_name"] for i in dataset.images) == [
        "2007_000032.jpg",
        "subdir/2007_000033.jpg",
    ]
    assert instances_per_class(dataset) == expected == {"aeroplane": 2, "person": 1}
    assert len(entries(builder, "instances-merged-by-class")) == 2


def test_cvat_voc_fixture_masks(shared_test_data, tmp_path):
    root = shared_test_data / "datumaro_cvat-ai/tests/assets/voc_dataset/voc_dataset1"
    expected = _instances_in(
        root / "SegmentationObject/2007_000001.png", root / "SegmentationClass/2007_000001.png"
    )
    builder = read(segmask, root)  # no label map: VOC's; (0,128,0) is bicycle
    dataset = build(builder, tmp_path)

    assert instances_per_class(dataset) == expected == {"bicycle": 1}
    assert [(i["file_name"], i["subset"]) for i in dataset.images] == [
        ("2007_000001.jpg", "train"),
        ("2007_000002.jpg", "test"),  # listed in ImageSets/Segmentation, no masks
    ]
    assert builder.report.entries == []
