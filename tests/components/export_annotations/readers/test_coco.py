"""COCO 1.0 reader: hand-made exports for every rule, and conformance on the COCO fixtures."""

import json
import os
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.readers import coco

from ._coco_cvat_helpers import read_into, write_image

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _write_json(path, images, annotations=(), categories=CATEGORIES):
    path.parent.mkdir(parents=True, exist_ok=True)
    coco_json = {"images": images, "annotations": list(annotations), "categories": categories}
    path.write_text(json.dumps(coco_json))
    return path


def _image(image_id, file_name, width=20, height=10):
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def _box(ann_id, image_id, category_id=1, bbox=(1, 2, 3, 4), **extra):
    box = list(bbox) if bbox else None
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": box,
            "segmentation": [], "iscrowd": 0, **extra}  # fmt: skip


def _codes(report, action=None):
    return [e.code for e in report.entries if action in (None, e.action)]


@pytest.fixture()
def cvat_export(tmp_path):
    """CVAT's COCO 1.0 layout: annotations/instances_<subset>.json, images/<subset>/."""
    root = tmp_path / "export"
    write_image(root / "images/Train/a.jpg", 20, 10)
    write_image(root / "images/Validation/a.jpg", 20, 10)
    _write_json(root / "annotations/instances_Train.json", [_image(1, "a.jpg")], [_box(1, 1)])
    _write_json(root / "annotations/instances_Validation.json", [_image(1, "a.jpg")])
    return root


# --- detect ----------------------------------------------------------------------------------


def test_detect_finds_the_cvat_plain_and_roboflow_layouts(cvat_export, tmp_path):
    assert coco.detect(cvat_export) == ["COCO 1.0"]
    plain = tmp_path / "plain"
    _write_json(plain / "trainval.json", [])
    assert coco.detect(plain) == ["COCO 1.0"]
    roboflow = tmp_path / "roboflow"
    _write_json(roboflow / "train/_annotations.coco.json", [])
    assert coco.detect(roboflow) == ["COCO 1.0"]


def test_detect_ignores_other_json_and_other_coco_tasks(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/person_keypoints_default.json").write_text('{"images": []}')
    (tmp_path / "annotations/default.json").write_text('{"items": [], "categories": {}}')
    (tmp_path / "broken.json").write_text("not json")
    assert coco.detect(tmp_path) == []
    with pytest.raises(ValueError, match="no COCO annotation file"):
        coco.read(tmp_path, DatasetBuilder())


# --- layout, subsets, images -----------------------------------------------------------------


def test_subsets_come_from_the_file_names_and_keep_same_named_images_apart(cvat_export, tmp_path):
    dataset, report = read_into(coco, cvat_export, tmp_path / "out")
    assert [(i["file_name"], i["subset"]) for i in dataset.images] == [
        ("Train/a.jpg", "Train"),
        ("Validation/a.jpg", "Validation"),
    ]
    assert len(dataset.annotations) == 1 and report.entries == []


def test_images_are_found_in_the_older_layout_and_beside_the_json(tmp_path):
    write_image(tmp_path / "images/old.jpg", 20, 10)
    write_image(tmp_path / "annotations/JPEGImages/sub/x y.png", 20, 10)
    images = [_image(1, "old.jpg"), _image(2, "JPEGImages\\sub\\x y.png")]
    _write_json(tmp_path / "annotations/instances_default.json", images)
    dataset, _ = read_into(coco, tmp_path, tmp_path / "out")
    assert [i["file_name"] for i in dataset.images] == [
        "old.jpg",
        "annotations/JPEGImages/sub/x y.png",
    ]


def test_a_missing_image_is_refused_with_its_name(tmp_path):
    _write_json(tmp_path / "annotations/instances_default.json", [_image(7, "gone.jpg")])
    builder = DatasetBuilder()
    coco.read(tmp_path, builder)
    with pytest.raises(ReportError, match=r"image id 7 'gone.jpg'.*gone.jpg is not in the export"):
        builder.build(tmp_path / "out")


def test_sizes_missing_from_the_json_come_from_the_file_or_the_rle(tmp_path):
    write_image(tmp_path / "images/a.png", 6, 4)
    write_image(tmp_path / "images/b.png", 6, 4)
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png", "width": 0}]
    rle = {"size": [4, 6], "counts": [0, 24]}
    _write_json(tmp_path / "c.json", images, [_box(1, 2, segmentation=rle)])
    dataset, _ = read_into(coco, tmp_path, tmp_path / "out")
    assert [(i["width"], i["height"]) for i in dataset.images] == [(6, 4), (6, 4)]
    assert dataset.annotations[0]["area"] == 24


# --- categories ------------------------------------------------------------------------------


def test_category_ids_with_zero_and_gaps_are_remapped_in_id_order(tmp_path):
    write_image(tmp_path / "images/a.jpg", 20, 10)
    categories = [{"id": 7, "name": "z"}, {"id": 0, "name": "y"}, {"id": 3, "name": "x"}]
    _write_json(tmp_path / "c.json", [_image(1, "a.jpg")], [_box(1, 1, 7)], categories)
    dataset, report = read_into(coco, tmp_path, tmp_path / "out")
    assert dataset.label_map.names == ("y", "x", "z")
    assert dataset.annotations[0]["category_id"] == 3
    assert _codes(report) == ["category-ids-remapped"]
    assert "0 (y) -> 1, 3 (x) -> 2, 7 (z) -> 3" in report.entries[0].message


def test_an_unused_background_category_zero_is_dropped(tmp_path):
    write_image(tmp_path / "images/a.jpg", 20, 10)
    categories = [{"id": 0, "name": "_background_"}, *CATEGORIES]
    _write_json(tmp_path / "c.json", [_image(1, "a.jpg")], [_box(1, 1, 2)], categories)
    dataset, report = read_into(coco, tmp_path, tmp_path / "out")
    assert dataset.label_map.names == ("cat", "dog")
    assert _codes(report) == ["category-background"]


def test_duplicate_category_names_merge_and_duplicate_ids_are_refused(tmp_path):
    write_image(tmp_path / "images/a.jpg", 20, 10)
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "dog"},
                  {"id": 3, "name": "fox"}]  # fmt: skip
    annotations = [_box(1, 1, 1), _box(2, 1, 2), _box(3, 1, 3)]
    _write_json(tmp_path / "c.json", [_image(1, "a.jpg")], annotations, categories)
    builder = DatasetBuilder()
    coco.read(tmp_path, builder)
    assert builder.class_names == ["cat"]
    assert _codes(builder.report) == [
        "category-id-duplicate",
        "category-merged",
        "category-ids-remapped",
        "annotation-category-unknown",
    ]
    assert builder.report.entries[2].message.endswith("2 (cat) -> 1")
    assert "annotation ids [3] name no known category" in builder.report.entries[3].message


def test_annotations_of_unknown_categories_and_images_are_refused_with_their_ids(tmp_path):
    write_image(tmp_path / "images/a.jpg", 20, 10)
    annotations = [_box(10, 1, 9), _box(11, 1, 1), _box(12, 1, 5), _box(13, 4)]
    _write_json(tmp_path / "c.json", [_image(1, "a.jpg")], annotations)
    builder = DatasetBuilder()
    coco.read(tmp_path, builder)
    with pytest.raises(ReportError) as error:
        builder.build(tmp_path / "out")
    assert "c.json: annotation ids [10, 12] name no known category" in str(error.value)
    assert "c.json: annotation ids [13] name no image" in str(error.value)
    assert not (tmp_path / "out").exists()


# --- ids -------------------------------------------------------------------------------------


def test_duplicate_annotation_and_image_ids_are_renumbered(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "images" / name, 20, 10)
    images = [_image(1, "a.jpg"), _image(1, "b.jpg"), _image(2, "c.jpg")]
    annotations = [_box(5, 2), _box(5, 2), _box(6, 1)]
    _write_json(tmp_path / "c.json", images, annotations)
    builder = DatasetBuilder()
    coco.read(tmp_path, builder)
    report = builder.report
    assert _codes(report) == [
        "image-id-duplicate",
        "annotation-id-duplicate",
        "annotation-image-ambiguous",
    ]
    assert "annotation ids [6] name an image id that several images share" in str(report.entries)
    builder = DatasetBuilder()
    _write_json(tmp_path / "c.json", images, annotations[:2])
    coco.read(tmp_path, builder)
    dataset = builder.build(tmp_path / "out")
    assert [i["id"] for i in dataset.images] == [1, 2, 3]
    assert [a["id"] for a in dataset.annotations] == [1, 2]


# --- geometry --------------------------------------------------------------------------------


def test_boxes_polygons_rle_and_crowd_are_kept(tmp_path):
    write_image(tmp_path / "images/a.png", 6, 4)
    write_image(tmp_path / "images/empty.png", 6, 4)
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode()
    polygons = [[0, 0, 2, 0, 2, 2], [3, 3, 5, 3, 5, 4, 3, 4]]
    annotations = [
        _box(1, 1, attributes={"occluded": True, "track_id": 3}),
        _box(2, 1, segmentation=polygons),
        _box(3, 1, segmentation=compressed, iscrowd=1),
        _box(4, 1, segmentation={"size": [4, 6], "counts": [8, 4, 12]}),
        _box(5, 1, segmentation=[[0, 0, 4, 0, 4, 3]], iscrowd=1),
    ]
    images = [_image(1, "a.png", 6, 4), _image(2, "empty.png", 6, 4)]
    _write_json(tmp_path / "c.json", images, annotations)
    dataset, report = read_into(coco, tmp_path, tmp_path / "out")
    box, polygon, rle, plain_rle, crowd_polygon = dataset.annotations
    assert box["bbox"] == [1, 2, 3, 4] and box["attributes"] == {"occluded": True, "track_id": 3}
    assert polygon["segmentation"] == polygons and polygon["iscrowd"] == 0
    decoded = mask_utils.decode({"size": [4, 6], "counts": rle["segmentation"]["counts"].encode()})
    assert (decoded == mask).all() and rle["iscrowd"] == 1
    assert plain_rle["bbox"] == [2, 0, 1, 4] and plain_rle["area"] == 4
    assert crowd_polygon["iscrowd"] == 1 and crowd_polygon["segmentation"] == [[0, 0, 4, 0, 4, 3]]
    assert len(dataset.images) == 2  # the image without annotations stays
    assert _codes(report) == ["crowd-kept"] and "2 annotation(s)" in report.entries[0].message


def test_unusable_rle_is_refused(tmp_path):
    write_image(tmp_path / "images/a.png", 6, 4)
    annotations = [
        _box(1, 1, segmentation={"size": [4, 6], "counts": [0, 23]}),
        _box(2, 1, segmentation={"size": [6, 4], "counts": [0, 24]}),
        _box(3, 1, segmentation={"size": [4, 6], "counts": "0d0n0!"}),
        _box(4, 1, segmentation={"size": [4, 6], "counts": "1"}),
        _box(5, 1, segmentation="polygon please"),
    ]
    _write_json(tmp_path / "c.json", [_image(1, "a.png", 6, 4)], annotations)
    builder = DatasetBuilder()
    coco.read(tmp_path, builder)
    assert _codes(builder.report, "refused") == ["rle-invalid"] * 4 + ["segmentation-invalid"]
    messages = [e.message for e in builder.report.entries]
    assert "cover 23 pixels" in messages[0] and "[6, 4] (height, width)" in messages[1]
    assert "not RLE" in messages[2]


def test_degenerate_polygons_are_dropped_or_fall_back_to_the_box(tmp_path):
    write_image(tmp_path / "images/a.png", 20, 10)
    annotations = [
        _box(1, 1, segmentation=[[0, 0, 5, 5], [0, 0, 4, 0, 4, 4]]),
        _box(2, 1, segmentation=[[0, 0, 5, 5]]),
        _box(3, 1, segmentation=[[1, 1]], bbox=None),
        {"id": 4, "image_id": 1, "category_id": 2},
    ]
    _write_json(tmp_path / "c.json", [_image(1, "a.png")], annotations)
    dataset, report = read_into(coco, tmp_path, tmp_path / "out")
    assert [a["segmentation"] for a in dataset.annotations] == [[[0, 0, 4, 0, 4, 4]], []]
    assert dataset.annotations[1]["bbox"] == [1, 2, 3, 4]
    assert [(e.action, e.code, e.location.split(": ")[1]) for e in report.entries] == [
        ("fixed", "polygon-degenerate", "annotation id 1 (image id 1)"),
        ("fixed", "polygon-degenerate", "annotation id 2 (image id 1)"),
        ("skipped", "polygon-degenerate", "annotation id 3 (image id 1)"),
        ("skipped", "annotation-no-geometry", "annotation id 4 (image id 1)"),
    ]


def test_nan_and_infinity_are_skipped_alike_under_the_files_own_ids(tmp_path):
    write_image(tmp_path / "images/a.png", 20, 10)
    annotations = [  # json.dumps writes NaN and Infinity, and json.loads reads them back
        _box(7, 1, bbox=(1, 2, float("inf"), 4)),
        _box(9, 1, bbox=(1, float("nan"), 3, 4)),
        _box(12, 1),
        _box(15, 1, segmentation=[[0, 0, 4, 0, float("-inf"), 4], [0, 0, 4, 0, 4, 4]]),
    ]
    _write_json(tmp_path / "c.json", [_image(1, "a.png")], annotations)
    dataset, report = read_into(coco, tmp_path, tmp_path / "out")

    assert [a["bbox"] for a in dataset.annotations] == [[1, 2, 3, 4], [0, 0, 4, 4]]
    assert [(e.action, e.code, e.location, e.message) for e in report.entries] == [
        ("skipped", "annotation-no-geometry", "c.json: annotation id 7 (image id 1)",
         "no segmentation and no valid bbox (bbox [1, 2, inf, 4])"),
        ("skipped", "annotation-no-geometry", "c.json: annotation id 9 (image id 1)",
         "no segmentation and no valid bbox (bbox [1, nan, 3, 4])"),
        ("fixed", "polygon-degenerate", "c.json: annotation id 15 (image id 1)",
         "1 of its 2 polygons have fewer than 3 points or bad coordinates: left out"),
    ]  # fmt: skip


def test_a_file_name_leading_out_of_the_export_is_refused_not_rewritten(tmp_path):
    write_image(tmp_path / "images/a.png", 20, 10)
    images = [_image(1, "..\\..\\a.png"), _image(2, "sub\\..\\..\\a.png"), _image(3, "a.png")]
    _write_json(tmp_path / "c.json", images)
    builder = DatasetBuilder()
    coco.read(tmp_path, builder)
    assert [(e.action, e.code, e.location, e.message) for e in builder.report.entries] == [
        ("refused", "path-escapes", "c.json",
         "image id 1 file_name '..\\\\..\\\\a.png' is no file inside the export: it contains "
         "a '..' segment"),
        ("refused", "path-escapes", "c.json",
         "image id 2 file_name 'sub\\\\..\\\\..\\\\a.png' is no file inside the export: it "
         "contains a '..' segment"),
    ]  # fmt: skip


def test_unreadable_json_names_the_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_default.json").write_text('{"images": [1, ')
    with pytest.raises(ValueError, match="annotations/instances_default.json: not a readable"):
        coco.read(tmp_path, DatasetBuilder())


def test_deeply_nested_json_names_the_file_and_what_to_do(tmp_path):
    (tmp_path / "annotations").mkdir()
    nested = "[" * 100_000 + "]" * 100_000
    (tmp_path / "annotations/instances_default.json").write_text(
        '{"images": [], "categories": [], "annotations": ' + nested + "}"
    )
    with pytest.raises(ValueError) as error:
        coco.read(tmp_path, DatasetBuilder())
    assert str(error.value) == (
        "annotations/instances_default.json: its JSON nests arrays or objects too deeply to read "
        "(COCO needs at most four levels: the file is damaged or not COCO); export it from CVAT "
        "again"
    )


# --- conformance on ../shared/test_data ------------------------------------------------------


def _expected(json_paths):
    """Images, instances per class name and class names, straight from the source files."""
    images, instances, names = 0, Counter(), []
    for path in json_paths:
        source = json.loads(path.read_text())
        name_of = {c["id"]: c["name"] for c in source["categories"]}
        used = {a["category_id"] for a in source["annotations"]}
        if name_of.get(0) == "_background_" and 0 not in used:
            del name_of[0]  # labelme's convention, not a class
        names += [name_of[i] for i in sorted(name_of) if name_of[i] not in names]
        images += len(source["images"])
        instances.update(name_of[a["category_id"]] for a in source["annotations"])
    return images, instances, names


def _check(dataset, report, json_paths):
    """Exact counts, and every source annotation is in the Dataset (none is skipped here)."""
    images, instances, names = _expected(json_paths)
    assert len(dataset.images) == images
    assert list(dataset.label_map.names) == names
    names_of = Counter(dataset.label_map.name_of(a["category_id"]) for a in dataset.annotations)
    assert names_of == instances
    assert report.refusals == []
    assert {e.code for e in report.of("skipped")} <= {"category-background"}


@pytest.mark.parametrize(
    "folder, files",
    [
        ("datumaro_cvat-ai/tests/assets/coco_dataset/coco_instances",
         ["annotations/instances_train.json", "annotations/instances_val.json"]),
        ("datumaro_openvino/tests/assets/coco_dataset/coco_roboflow",
         ["train/_annotations.coco.json", "val/_annotations.coco.json"]),
        ("fruits_nuts_coco/data", ["trainval.json"]),
        ("labelformat_fixtures/tests/fixtures/object_detection/COCO", ["train.json"]),
        ("labelme_examples/examples/instance_segmentation/data_dataset_coco", ["annotations.json"]),
    ],
)  # fmt: skip
def test_conformance(shared_test_data, folder, files, tmp_path):
    root = shared_test_data / folder
    assert coco.detect(root) == ["COCO 1.0"]
    dataset, report = read_into(coco, root, tmp_path / "out")
    _check(dataset, report, [root / f for f in files])


def test_conformance_counts_of_the_known_fixtures(shared_test_data, tmp_path):
    dataset, report = read_into(coco, shared_test_data / "fruits_nuts_coco/data", tmp_path / "out")
    assert (len(dataset.images), len(dataset.annotations), len(dataset.categories)) == (18, 165, 3)
    assert dataset.instance_counts() == {1: 71, 2: 41, 3: 53} and report.entries == []
    root = shared_test_data / "datumaro_cvat-ai/tests/assets/coco_dataset/coco_instances"
    dataset, report = read_into(coco, root, tmp_path / "out")
    assert [(i["file_name"], i["subset"]) for i in dataset.images] == [
        ("train/a.jpg", "train"),
        ("val/b.jpg", "val"),
    ]
    assert [a["iscrowd"] for a in dataset.annotations] == [0, 0, 1]
    assert dataset.annotations[2]["bbox"] == [0, 0, 2, 10]  # from the mask; the JSON says 1x9


@pytest.fixture()
def labelformat_instances(shared_test_data, tmp_path):
    """labelformat's COCO instance files beside images/ (its images sit in a YOLO folder)."""
    source = shared_test_data / "labelformat_fixtures/tests/fixtures/instance_segmentation"
    exports = {}
    for name in ("instances", "instances_with_binary_mask"):
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / f"{name}.json").symlink_to(source / f"COCO/{name}.json")
        for image in (source / "YOLOv8/images").iterdir():
            os.symlink(image, root / "images" / image.name)
        exports[name] = (root, root / f"{name}.json")
    return exports


def test_conformance_labelformat_instances(labelformat_instances, tmp_path):
    root, path = labelformat_instances["instances"]
    dataset, report = read_into(coco, root, tmp_path / "out")
    _check(dataset, report, [path])
    assert (len(dataset.images), len(dataset.annotations)) == (2, 3)
    assert "0 (kite) -> 1" in report.entries[0].message


def test_conformance_labelformat_missing_image_is_refused_by_name(labelformat_instances, tmp_path):
    root, path = labelformat_instances["instances_with_binary_mask"]
    builder = DatasetBuilder()
    coco.read(root, builder)
    with pytest.raises(ReportError, match="000000374545.jpg is not in the export"):
        builder.build(root / "out")
    dataset, report = read_into(coco, root, tmp_path / "out", skip_bad_images=True)
    assert (len(dataset.images), len(dataset.annotations)) == (2, 3)
    skipped = report.of("skipped")
    assert [e.code for e in skipped] == ["image-missing"]
    assert "(1 annotation(s) skipped with it)" in skipped[0].message
