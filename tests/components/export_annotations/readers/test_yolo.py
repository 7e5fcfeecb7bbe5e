"""YOLO 1.1 reader: CVAT's Darknet layout, sizes from the image files, strict lines."""

import pytest

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.readers import yolo

from ._formats_helpers import (
    build,
    entries,
    instances_per_class,
    locations,
    read,
    write,
    write_image,
)

NAMES = "cat\ndog\nbird\n"


def _export(root, boxes="0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n", size=(40, 30)):
    """A CVAT-like YOLO export: train subset with one image, its boxes given as text."""
    write(root / "obj.names", NAMES)
    write(root / "obj.data", "classes = 3\ntrain = data/train.txt\nnames = data/obj.names\n")
    write(root / "train.txt", "data/obj_train_data/a.jpg\n")
    write_image(root / "obj_train_data/a.jpg", size)
    write(root / "obj_train_data/a.txt", boxes)
    return root


def test_boxes_are_scaled_by_the_image_file_and_classes_follow_obj_names(tmp_path):
    builder = read(yolo, _export(tmp_path / "export"))
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("cat", "dog", "bird")  # bird: declared, no instance
    (image,) = dataset.images
    assert image == {
        "id": 1,
        "file_name": "obj_train_data/a.jpg",
        "width": 40,
        "height": 30,
        "subset": "train",
    }
    boxes = [(a["category_id"], a["bbox"]) for a in dataset.annotations]
    assert boxes == [(1, [10, 7.5, 20, 15]), (2, [8, 4.5, 4, 6])]


def test_subsets_come_from_lists_and_from_unlisted_folders(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "obj.data", "classes = 3\ntrain = data/train.txt\nvalid = data/valid.txt\n")
    write(root / "valid.txt", "data/obj_valid_data/b.png\n")
    write_image(root / "obj_valid_data/b.png")
    write(root / "obj_valid_data/b.txt", "2 0.5 0.5 1 1\n")
    write_image(root / "obj_test_data/c.jpg")  # a folder no list names, an image without .txt
    builder = read(yolo, root)
    dataset = build(builder, tmp_path)

    subsets = {i["file_name"]: i["subset"] for i in dataset.images}
    assert subsets == {
        "obj_train_data/a.jpg": "train",
        "obj_valid_data/b.png": "valid",
        "obj_test_data/c.jpg": "test",
    }
    assert locations(builder, "labels-missing") == ["obj_test_data/c.jpg"]


def test_displayed_size_of_an_exif_rotated_image_scales_the_boxes(tmp_path):
    root = _export(tmp_path / "export", boxes="0 0.5 0.5 0.5 0.5\n")
    write_image(root / "obj_train_data/a.jpg", (40, 20), exif_orientation=6)  # shown as 20x40
    dataset = build(read(yolo, root), tmp_path)

    assert (dataset.images[0]["width"], dataset.images[0]["height"]) == (20, 40)
    assert dataset.annotations[0]["bbox"] == [5, 10, 10, 20]


def test_a_missing_image_is_refused_by_name_and_its_boxes_named_in_the_report(tmp_path):
    root = _export(tmp_path / "export")
    (root / "obj_train_data/a.jpg").unlink()
    builder = read(yolo, root)

    with pytest.raises(ReportError, match="a.jpg"):
        build(builder, tmp_path)
    (skipped,) = entries(builder, "boxes-without-image")
    assert skipped.location == "obj_train_data/a.txt" and "2 box(es)" in skipped.message
    assert len(build(read(yolo, root), tmp_path, skip_bad_images=True).images) == 0


def test_an_annotation_file_without_any_image_is_refused(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "obj_train_data/orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    builder = read(yolo, root)

    with pytest.raises(ReportError, match="orphan"):
        build(builder, tmp_path)
    assert locations(builder, "boxes-without-image") == ["obj_train_data/orphan.txt"]


@pytest.mark.parametrize(
    "line, code",
    [
        ("3 0.5 0.5 0.1 0.1", "class-out-of-range"),
        ("-1 0.5 0.5 0.1 0.1", "class-out-of-range"),
        ("0 0.5 0.5 0.1", "yolo-line-malformed"),
        ("cat 0.5 0.5 0.1 0.1", "yolo-line-malformed"),
        ("0 0.5 0.5 -0.1 0.1", "yolo-line-malformed"),
        ("0 0.5 nan 0.1 0.1", "yolo-line-malformed"),
    ],
)
def test_bad_lines_are_refused_with_file_and_line(tmp_path, line, code):
    builder = read(yolo, _export(tmp_path / "export", boxes=f"0 0.5 0.5 0.2 0.2\n\n{line}\n"))

    assert locations(builder, code) == ["obj_train_data/a.txt:3"]
    with pytest.raises(ReportError, match=r"obj_train_data/a.txt:3"):
        build(builder, tmp_path)


def test_obj_names_is_required_and_a_class_count_mismatch_noted(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "obj.data", "classes = 5\ntrain = data/train.txt\n")
    assert [e.code for e in read(yolo, root).report.entries] == ["class-count-differs"]
    (root / "obj.names").unlink()
    with pytest.raises(ValueError, match="obj.names"):
        read(yolo, root)


def test_duplicate_class_names_are_merged_with_a_report_line(tmp_path):
    root = _export(tmp_path / "export", boxes="0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n")
    write(root / "obj.names", "car\ncar\nbus\n")
    builder = read(yolo, root)
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("car", "bus")
    assert instances_per_class(dataset) == {"car": 2}
    assert [(e.action, e.code, e.location, e.message) for e in builder.report.entries] == [
        ("fixed", "category-merged", "obj.names",
         "class 'car' has indexes [0, 1]: merged into one class"),
    ]  # fmt: skip


def test_a_latin1_obj_names_is_named_with_what_to_do(tmp_path):
    root = _export(tmp_path / "export")
    (root / "obj.names").write_bytes("cat\nb\xe9b\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError) as error:
        read(yolo, root)
    assert str(error.value) == (
        "obj.names is not UTF-8 text: byte 0xe9 on line 2 cannot be decoded (a Latin-1 or "
        "Windows code page file?). CVAT writes UTF-8: save the file as UTF-8 (e.g. `iconv -f "
        "latin1 -t utf-8`) and try again"
    )


def test_paths_that_leave_the_export_are_refused(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "train.txt", "data/obj_train_data/a.jpg\n/etc/hosts\ndata/../../x.jpg\n")
    builder = read(yolo, root)
    assert locations(builder, "path-escapes") == ["train.txt:2", "train.txt:3"]


def test_detect(tmp_path):
    assert yolo.detect(_export(tmp_path / "export")) == ["YOLO 1.1"]
    assert yolo.detect(tmp_path / "nothing") == []


# --- conformance on CVAT's fixture ----------------------------------------------------------


def test_cvat_yolo_fixture(shared_test_data, tmp_path):
    root = shared_test_data / "datumaro_cvat-ai/tests/assets/yolo_dataset/yolo"
    names = [n for n in (root / "obj.names").read_text().splitlines() if n.strip()]
    listed = [n for n in (root / "train.txt").read_text().splitlines() if n.strip()]
    lines = [
        line.split()
        for path in sorted((root / "obj_train_data").glob("*.txt"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]

    assert yolo.detect(root) == ["YOLO 1.1"]
    builder = read(yolo, root)
    dataset = build(builder, tmp_path)

    assert len(dataset.images) == len(listed) == 1
    assert dataset.label_map.names == tuple(names) and len(names) == 10
    expected = {names[int(fields[0])]: 0 for fields in lines}
    for fields in lines:
        expected[names[int(fields[0])]] += 1
    assert instances_per_class(dataset) == expected and len(dataset.annotations) == len(lines)
    assert builder.report.entries == []
    # datumaro's own expectation for this fixture: Bbox(0, 2, 4, 2, label=2), Bbox(3, 3, 2, 3, 4)
    assert [a["bbox"] for a in dataset.annotations] == [[0, 2, 4, 2], [3, 3, 2, 3]]


def test_ultralytics_fixtures_are_not_yolo_1_1(shared_test_data):
    fixtures = shared_test_data / "labelformat_fixtures/tests/fixtures"
    for root in (fixtures / "object_detection/YOLOv8", fixtures / "instance_segmentation/YOLOv8"):
        assert root.is_dir() and yolo.detect(root) == []
