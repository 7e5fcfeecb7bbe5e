"""MOT 1.1 reader: gt.txt rows to boxes of one sequence group, frames 1-based."""

import csv
import zipfile

import pytest

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.export import run_export_annotations
from cvat_kfp.components.export_annotations.readers import mot

from ._formats_helpers import (
    build,
    entries,
    instances_per_class,
    locations,
    read,
    shape_lines,
    write,
    write_image,
)

ROWS = """1,1,2,3,10,5,1,1,1.0
1,2,20,10,5,5,1,2,0.0
2,1,3,3,10,5,1,1,0.5
2,-1,0,0,4,4,1,2,1
"""


def _export(root, rows=ROWS, frames=3, labels="person\ncar\n"):
    write(root / "gt/gt.txt", rows)
    if labels is not None:
        write(root / "gt/labels.txt", labels)
    for frame in range(1, frames + 1):
        write_image(root / f"img1/{frame:06d}.jpg")
    return root


def test_rows_become_boxes_and_every_frame_an_image_of_one_group(tmp_path):
    root = _export(tmp_path / "seq")
    assert mot.detect(root) == ["MOT 1.1"]
    builder = read(mot, root)
    dataset = build(builder, tmp_path)

    assert [(i["file_name"], i["group"]) for i in dataset.images] == [
        ("img1/000001.jpg", "seq"),
        ("img1/000002.jpg", "seq"),
        ("img1/000003.jpg", "seq"),
    ]
    assert dataset.label_map.names == ("person", "car")
    rows = [
        (a["image_id"], a["category_id"], a["bbox"], a["attributes"]) for a in dataset.annotations
    ]
    assert rows == [
        (1, 1, [2, 3, 10, 5], {"track_id": 1, "visibility": 1.0, "occluded": False}),
        (1, 2, [20, 10, 5, 5], {"track_id": 2, "visibility": 0.0, "occluded": True}),
        (2, 1, [3, 3, 10, 5], {"track_id": 1, "visibility": 0.5, "occluded": False}),
        (2, 2, [0, 0, 4, 4], {"visibility": 1.0, "occluded": False}),  # -1: no track
    ]
    assert builder.report.entries == []


def test_a_merge_group_set_by_the_caller_wins(tmp_path):
    builder = DatasetBuilder()
    builder.default_group = "task 7"
    dataset = build(read(mot, _export(tmp_path / "seq"), builder), tmp_path)
    assert {i["group"] for i in dataset.images} == {"task 7"}


def test_ignored_and_classless_rows_are_skipped_bad_rows_refused(tmp_path):
    rows = ROWS + "3,4,1,1,2,2,0,1,1\n3,5,1,1,2,2,1,-1,1\n3,6,1,1,-2,2,1,1,1\n"
    rows += "3,7,1,1,2,2,1,3,1\n0,8,1,1,2,2,1,1,1\n3,9,a,1,2,2,1,1,1\n3,10,1,1\n"
    builder = read(mot, _export(tmp_path / "seq", rows))
    assert [(e.action, e.code, e.location) for e in shape_lines(builder)] == [
        ("skipped", "mot-ignored", "gt/gt.txt:5"),
        ("skipped", "label-missing", "gt/gt.txt:6"),
        ("skipped", "box-inverted", "gt/gt.txt:7"),
        ("refused", "class-out-of-range", "gt/gt.txt:8"),
        ("refused", "mot-frame-invalid", "gt/gt.txt:9"),
        ("refused", "mot-row-malformed", "gt/gt.txt:10"),
        ("refused", "mot-row-malformed", "gt/gt.txt:11"),
    ]
    with pytest.raises(ReportError, match="gt/gt.txt:8"):
        build(builder, tmp_path)


def test_seqinfo_gives_frames_size_and_extension_and_missing_frames_are_named(tmp_path):
    root = _export(tmp_path / "seq", frames=0, labels=None)
    write(
        root / "seqinfo.ini",
        "[Sequence]\nname=walk\nimDir=frames\nframeRate=10\n"
        "seqLength=2\nimWidth=40\nimHeight=30\nimExt=.png\n",
    )
    write_image(root / "frames/000001.png", (80, 60))  # twice the declared size: rescaled
    builder = read(mot, root)
    assert locations(builder, "mot-standard-classes") == ["gt/labels.txt"]
    with pytest.raises(ReportError, match="000002.png is not in the export"):
        build(builder, tmp_path)

    dataset = build(read(mot, root), tmp_path, skip_bad_images=True)
    assert [(i["file_name"], i["group"]) for i in dataset.images] == [("frames/000001.png", "walk")]
    assert dataset.annotations[0]["bbox"] == [4, 6, 20, 10]
    assert instances_per_class(dataset) == {"pedestrian": 1, "person on vehicle": 1}


def test_an_image_folder_outside_the_sequence_is_refused(tmp_path):
    root = _export(tmp_path / "seq")
    write(root / "seqinfo.ini", "[Sequence]\nimDir=../../elsewhere\n")
    builder = read(mot, root)
    (refused,) = entries(builder, "seqinfo-malformed")
    assert refused.location == "seqinfo.ini"
    assert refused.message == (
        "cannot read it: imDir '../../elsewhere' is no folder inside the export: it contains a "
        "'..' segment"
    )


def test_a_folder_of_sequences_gives_a_group_each(tmp_path):
    _export(tmp_path / "all/a", frames=2)
    _export(tmp_path / "all/b", frames=2)
    assert mot.detect(tmp_path / "all") == ["MOT 1.1"]
    dataset = build(read(mot, tmp_path / "all"), tmp_path)
    assert [i["group"] for i in dataset.images] == ["a", "a", "b", "b"]
    assert dataset.images[2]["file_name"] == "b/img1/000001.jpg"


def test_detect_and_a_missing_gt(tmp_path):
    assert mot.detect(tmp_path) == []
    with pytest.raises(ValueError, match="gt/gt.txt"):
        read(mot, tmp_path)


# --- conformance ----------------------------------------------------------------------------


def _source_rows(root):
    labels = [n.strip() for n in (root / "gt/labels.txt").read_text().splitlines() if n.strip()]
    with open(root / "gt/gt.txt", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    kept = [r for r in rows if float(r[6]) != 0 and int(r[7]) != -1]
    return labels, rows, {labels[int(r[7]) - 1] for r in kept}, len(kept)


def test_cvat_mot_fixtures(shared_test_data, tmp_path):
    base = shared_test_data / "datumaro_cvat-ai/tests/assets/mot_dataset"
    labels, rows, classes, count = _source_rows(base / "mot_seq")
    builder = read(mot, base / "mot_seq")
    dataset = build(builder, tmp_path)

    assert len(dataset.images) == len(list((base / "mot_seq/img1").iterdir())) == 1
    assert dataset.label_map.names == tuple(labels) and len(labels) == 10
    assert set(instances_per_class(dataset)) == classes == {"label_2"}  # class_id 3, 1-based
    assert len(dataset.annotations) == count == len(rows) == 1
    assert dataset.annotations[0]["bbox"] == [0, 4, 4, 8]
    assert builder.report.entries == []

    builder = read(mot, base / "mot_seq_with_seqinfo")  # seqinfo says 1 frame; no images
    dataset = build(builder, tmp_path, skip_bad_images=True)
    assert dataset.images == [] and locations(builder, "image-missing") == ["gt/gt.txt frame 1"]
    (missing,) = entries(builder, "image-missing")
    assert "000001.jpg" in missing.message and "1 annotation(s) skipped" in missing.message


def test_a_mot_zip_without_seqinfo_is_one_group_named_after_the_archive(tmp_path):
    folder = _export(tmp_path / "written")  # CVAT's MOT 1.1 zip: gt/, img1/, no seqinfo.ini
    archive = tmp_path / "task_7_mot.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())

    runs = [
        run_export_annotations(
            tmp_path / f"out{n}", tmp_path / f"report{n}.md", source=str(archive)
        )
        for n in (1, 2)
    ]

    assert {image["group"] for image in runs[0].dataset.images} == {"task_7_mot"}
    first, second = ((tmp_path / f"out{n}/annotations.json").read_bytes() for n in (1, 2))
    assert first == second
