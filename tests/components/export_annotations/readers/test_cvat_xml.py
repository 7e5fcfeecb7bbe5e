"""CVAT for images/video 1.1 reader: hand-made exports for every rule, and conformance on every
CVAT XML fixture in ../shared/test_data."""

import math
import shutil
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.readers import cvat_xml

from ._coco_cvat_helpers import read_into, write_image

IMAGES, VIDEO = cvat_xml.FORMATS
LABELS = """<labels>
  <label><name>cat</name><type>any</type><attributes>
    <attribute><name>fluffy</name><input_type>checkbox</input_type></attribute>
    <attribute><name>age</name><input_type>number</input_type></attribute>
    <attribute><name>note</name><input_type>text</input_type></attribute>
  </attributes></label>
  <label><name>dog</name></label>
  <label><name>unused</name><type>rectangle</type></label>
  <label><name>pose</name><type>skeleton</type></label>
  <label><name>nose</name><type>points</type><parent>pose</parent></label>
</labels>"""


def _xml(meta: str, body: str) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
            f"<meta>{meta}</meta>{body}</annotations>")  # fmt: skip


def _task(mode="annotation", frames="", subset="", labels=LABELS) -> str:
    return f"<task><id>5</id><mode>{mode}</mode><subset>{subset}</subset>{frames}{labels}</task>"


def _frames(start, stop, step, size=(20, 10)) -> str:
    frames = (f"<start_frame>{start}</start_frame><stop_frame>{stop}</stop_frame>"
              f"<frame_filter>step={step}</frame_filter>")  # fmt: skip
    if size:
        frames += (
            f"<original_size><width>{size[0]}</width><height>{size[1]}</height></original_size>"
        )
    return frames


@pytest.fixture()
def export(tmp_path):
    """export(body, meta=_task(), images={name: (w, h)}) -> the export folder."""

    def make(body, meta=None, images=None, name="annotations.xml"):
        root = tmp_path / "export"
        root.mkdir(exist_ok=True)
        (root / name).write_text(_xml(meta or _task(), body), encoding="utf-8")
        for file_name, (width, height) in (images or {}).items():
            write_image(root / "images" / file_name, width, height)
        return root

    return make


def _image_xml(shapes: str, name="a.png", size=(20, 10), extra="") -> str:
    return (
        f'<image id="0" name="{name}" width="{size[0]}" height="{size[1]}" {extra}>{shapes}</image>'
    )


def _problems(report):
    """(action, code) of every entry but the notes."""
    return [(e.action, e.code) for e in report.entries if e.action != "note"]


def _entries(report, code):
    return [e for e in report.entries if e.code == code]


def _polygon_area(points):
    xs, ys = points[0::2], points[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def _mask(annotation, size):
    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    assert rle["size"] == [size[1], size[0]]
    return mask_utils.decode(rle)


# --- detect ----------------------------------------------------------------------------------


def test_detect_tells_images_from_video_and_ignores_other_xml(export, tmp_path):
    assert cvat_xml.detect(export(_image_xml(""))) == [IMAGES]
    video = tmp_path / "video"
    video.mkdir()
    (video / "annotations.xml").write_text(
        _xml(_task("interpolation"), '<track id="0" label="cat"/>')
    )
    assert cvat_xml.detect(video) == [VIDEO]
    other = tmp_path / "voc"
    other.mkdir()
    (other / "a.xml").write_text("<annotation><object/></annotation>")
    (other / "b.xml").write_text("<annotations><image")
    assert cvat_xml.detect(other) == []
    with pytest.raises(ValueError, match="no CVAT annotation XML"):
        cvat_xml.read(other, DatasetBuilder())
    with pytest.raises(
        ValueError, match=r"no CVAT for images 1.1 .*annotations.xml: CVAT for video"
    ):
        cvat_xml.read(video, DatasetBuilder(), IMAGES)


# --- CVAT for images: shapes -----------------------------------------------------------------


def test_boxes_polygons_ellipses_and_rotations(export, tmp_path):
    shapes = """
      <box label="cat" occluded="1" xtl="1" ytl="2" xbr="5" ybr="4" z_order="3">
        <attribute name="fluffy">true</attribute><attribute name="age">2.5</attribute>
        <attribute name="note">0003</attribute></box>
      <box label="dog" xtl="2" ytl="2" xbr="8" ybr="4" rotation="90.00"/>
      <polygon label="dog" points="1,1;6,1;6,6"/>
      <ellipse label="cat" cx="10" cy="5" rx="4" ry="2"/>
      <ellipse label="cat" cx="10" cy="5" rx="4" ry="2" rotation="90"/>"""
    dataset, report = read_into(
        cvat_xml, export(_image_xml(shapes), images={"a.png": (20, 10)}), tmp_path / "out"
    )
    box, rotated, polygon, ellipse, turned = dataset.annotations
    assert box["bbox"] == [1, 2, 4, 2] and box["segmentation"] == []
    assert box["attributes"] == {"occluded": True, "fluffy": True, "age": 2.5, "note": "0003"}
    assert rotated["segmentation"] == [[6, 0, 6, 6, 4, 6, 4, 0]]  # turned clockwise on screen
    assert polygon["segmentation"] == [[1, 1, 6, 1, 6, 6]]
    assert len(ellipse["segmentation"][0]) == 2 * cvat_xml.ELLIPSE_VERTICES
    assert ellipse["bbox"] == [6, 3, 8, 4] and turned["bbox"] == [8, 1, 4, 8]
    assert _polygon_area(ellipse["segmentation"][0]) == pytest.approx(math.pi * 8, rel=0.01)
    assert [dataset.label_map.name_of(a["category_id"]) for a in dataset.annotations] == [
        "cat", "dog", "dog", "cat", "cat",
    ]  # fmt: skip
    assert report.of("skipped") == [] and report.refusals == []


def test_a_cvat_mask_becomes_its_full_image_mask(export, tmp_path):
    # its 3x2 box at (2, 1), row by row from a run of 0s: 0 1 1 / 1 0 0
    shapes = '<mask label="cat" rle="1, 3, 2" left="2" top="1" width="3" height="2"/>'
    dataset, _ = read_into(
        cvat_xml, export(_image_xml(shapes), images={"a.png": (20, 10)}), tmp_path / "out"
    )
    expected = np.zeros((10, 20), np.uint8)
    expected[1, 3:5] = expected[2, 2] = 1
    (annotation,) = dataset.annotations
    assert (_mask(annotation, (20, 10)) == expected).all()
    assert annotation["bbox"] == [2, 1, 3, 2] and annotation["area"] == 3
    assert annotation["iscrowd"] == 0


def test_masks_past_the_border_are_clipped_and_bad_runs_refused(export, tmp_path):
    shapes = """<mask label="cat" rle="0, 16" left="18" top="8" width="4" height="4"/>
      <mask label="cat" rle="0, 5" left="0" top="0" width="2" height="2"/>
      <mask label="cat" rle="4" left="0" top="0" width="2" height="2"/>"""
    root = export(_image_xml(shapes), images={"a.png": (20, 10)})
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    assert _problems(builder.report) == [
        ("refused", "mask-invalid"), ("skipped", "mask-empty"), ("fixed", "mask-clipped"),
    ]  # fmt: skip
    assert "the runs cover 5 pixels but the mask box is 2x2" in builder.report.entries[1].message
    (root / "annotations.xml").write_text(_xml(_task(), _image_xml(shapes.splitlines()[0])))
    dataset, report = read_into(cvat_xml, root, tmp_path / "out")
    assert dataset.annotations[0]["bbox"] == [18, 8, 2, 2]
    assert "12 mask pixel(s) outside the image" in report.entries[1].message


def test_points_polylines_skeletons_cuboids_and_tags_are_skipped_one_line_each(export, tmp_path):
    shapes = """<points label="cat" points="1,1"/><polyline label="cat" points="1,1;2,2"/>
      <skeleton label="pose"><points label="nose" points="1,1" outside="0"/></skeleton>
      <cuboid label="cat" xtl1="0" ytl1="0"/><tag label="dog"/><box label="cat" xtl="0" ytl="0"
      xbr="1" ybr="1"/>"""
    dataset, report = read_into(
        cvat_xml, export(_image_xml(shapes), images={"a.png": (20, 10)}), tmp_path / "out"
    )
    skipped = report.of("skipped")
    assert [e.location.split(": ", 2)[2] for e in skipped] == [
        "points #1 label 'cat'", "polyline #2 label 'cat'", "skeleton #3 label 'pose'",
        "cuboid #4 label 'cat'", "tag #5 label 'dog'",
    ]  # fmt: skip
    assert {e.code for e in skipped} == {"shape-unsupported"}
    assert len(dataset.annotations) == 1


def test_unreadable_numbers_and_degenerate_shapes(export):
    shapes = """<box label="cat" xtl="a" ytl="0" xbr="1" ybr="1"/>
      <polygon label="cat" points="1,1;2,2"/><box label="cat" xtl="5" ytl="0" xbr="1" ybr="1"/>
      <ellipse label="cat" cx="1" cy="1" rx="0" ry="1"/>"""
    builder = DatasetBuilder()
    cvat_xml.read(export(_image_xml(shapes), images={"a.png": (20, 10)}), builder)
    assert _problems(builder.report) == [
        ("refused", "shape-invalid"), ("skipped", "polygon-degenerate"),
        ("skipped", "shape-invalid"), ("skipped", "shape-invalid"),
    ]  # fmt: skip
    assert "'a' is not a number" in builder.report.entries[1].message


# --- labels and groups -----------------------------------------------------------------------


def test_classes_follow_the_meta_labels_and_shapes_need_a_label(export, tmp_path):
    shapes = """<box label="" xtl="0" ytl="0" xbr="1" ybr="1"/>
      <box label="bird" xtl="0" ytl="0" xbr="1" ybr="1"/>"""
    dataset, report = read_into(
        cvat_xml, export(_image_xml(shapes), images={"a.png": (20, 10)}), tmp_path / "out"
    )
    assert dataset.label_map.names == ("cat", "dog", "unused", "bird")
    assert [(e.action, e.code) for e in report.entries] == [
        ("note", "labels-not-classes"), ("skipped", "label-missing"), ("note", "label-undeclared"),
    ]  # fmt: skip
    assert "['pose', 'nose']" in report.entries[0].message


def test_grouped_shapes_become_one_instance(export, tmp_path):
    shapes = """
      <polygon label="cat" points="0,0;4,0;4,4" group_id="1"/>
      <polygon label="cat" points="10,0;14,0;14,4" group_id="1"/>
      <box label="dog" xtl="0" ytl="0" xbr="9" ybr="9" group_id="2"/>
      <polygon label="cat" points="1,1;5,1;5,5" group_id="2"/>
      <polygon label="cat" points="1,1;5,1;1,5" group_id="2"/>
      <points label="cat" points="1,1" group_id="2"/>
      <mask label="dog" rle="0, 4" left="16" top="6" width="2" height="2" group_id="3"/>
      <polygon label="dog" points="10,6;12,6;12,8;10,8" group_id="3"/>
      <box label="cat" xtl="0" ytl="0" xbr="1" ybr="1" group_id="4"/>"""
    body = _image_xml(shapes) + _image_xml(shapes.splitlines()[1], name="b.png")
    images = {"a.png": (20, 10), "b.png": (20, 10)}
    dataset, report = read_into(cvat_xml, export(body, images=images), tmp_path / "out")
    two_polygons, mixed, with_mask, alone, other_image = dataset.annotations
    assert two_polygons["segmentation"] == [[0, 0, 4, 0, 4, 4], [10, 0, 14, 0, 14, 4]]
    assert two_polygons["attributes"]["group_id"] == 1
    assert mixed["segmentation"] == [[1, 1, 5, 1, 5, 5], [1, 1, 5, 1, 1, 5]]
    assert dataset.label_map.name_of(mixed["category_id"]) == "cat"
    assert with_mask["area"] == 4 + 4 and with_mask["bbox"] == [10, 6, 8, 2]
    assert alone["bbox"] == [0, 0, 1, 1] and other_image["image_id"] == 2
    (differ,) = _entries(report, "group-labels-differ")
    assert "mixes labels {'dog': 1, 'cat': 2}: the instance takes 'cat'" in differ.message
    merged = _entries(report, "group-merged")
    assert len(merged) == 3 and "the drawn box is left out" in merged[1].message


def test_a_group_label_tie_goes_to_the_first_shape(export, tmp_path):
    shapes = """<box label="dog" xtl="0" ytl="0" xbr="2" ybr="2" group_id="7"/>
      <box label="cat" xtl="3" ytl="3" xbr="5" ybr="6" group_id="7"/>"""
    dataset, _ = read_into(
        cvat_xml, export(_image_xml(shapes), images={"a.png": (20, 10)}), tmp_path / "out"
    )
    (box,) = dataset.annotations
    assert box["bbox"] == [0, 0, 5, 6] and dataset.label_map.name_of(box["category_id"]) == "dog"


# --- CVAT for images: files, subsets, task groups --------------------------------------------


def test_project_exports_keep_subsets_apart_and_group_by_task(export, tmp_path):
    meta = f"""<project><id>3</id><tasks>
      <task><id>11</id><subset>Train</subset></task><task><id>12</id><subset>Test</subset></task>
      </tasks><subsets>Train\nTest</subsets>{LABELS}</project>"""
    body = (_image_xml("", extra='subset="Train" task_id="11"')
            + _image_xml('<box label="cat" xtl="0" ytl="0" xbr="1" ybr="1"/>',
                         extra='subset="Test" task_id="12"'))  # fmt: skip
    root = export(body, meta, images={"Train/a.png": (20, 10), "Test/a.png": (20, 10)})
    dataset, _ = read_into(cvat_xml, root, tmp_path / "out")
    assert [(i["file_name"], i["subset"], i["group"]) for i in dataset.images] == [
        ("Train/a.png", "Train", "task 11"),
        ("Test/a.png", "Test", "task 12"),
    ]


def test_job_exports_take_the_subset_of_the_job(export, tmp_path):
    meta = f"<job><id>6</id><subset>default</subset>{LABELS}</job>"
    dataset, _ = read_into(
        cvat_xml, export(_image_xml(""), meta, images={"a.png": (20, 10)}), tmp_path / "out"
    )
    assert dataset.images[0]["subset"] == "default" and "group" not in dataset.images[0]


def test_a_video_exported_for_images_finds_its_frames_and_is_one_group(export, tmp_path):
    body = _image_xml("", name="frame_000003") + _image_xml("", name="sub/b.jpg")
    meta = _task("interpolation", _frames(3, 4, 1))
    root = export(body, meta, images={"frame_000003.PNG": (20, 10), "sub/b.jpg": (20, 10)})
    dataset, _ = read_into(cvat_xml, root, tmp_path / "out")
    assert [(i["file_name"], i["group"]) for i in dataset.images] == [
        ("frame_000003.PNG", "task 5"),
        ("sub/b.jpg", "task 5"),
    ]


def test_image_files_rule_sizes_and_missing_files_are_refused_by_name(export, tmp_path):
    box = '<box label="cat" xtl="2" ytl="2" xbr="6" ybr="4"/>'
    body = _image_xml(box, size=(40, 20)) + _image_xml(box, name="gone.png")
    root = export(body, images={"a.png": (20, 10)})
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    with pytest.raises(ReportError, match=r"image 'gone.png': image file gone.png is not in"):
        builder.build(root / "out")
    dataset, report = read_into(cvat_xml, root, tmp_path / "out", skip_bad_images=True)
    assert dataset.annotations[0]["bbox"] == [1, 1, 2, 1]
    assert [code for _, code in _problems(report)] == ["image-rescaled", "image-missing"]


# --- CVAT for video --------------------------------------------------------------------------


@pytest.fixture()
def video(export):
    """video(tracks, frames=range(0, 9, 2), files=...) -> an interpolation export, 20x10 frames."""

    def make(tracks, start=0, stop=8, step=2, files=None, size=(20, 10)):
        files = range(start, stop + 1, step) if files is None else files
        images = {f"frame_{n:06d}.PNG": (20, 10) for n in files}
        meta = _task("interpolation", _frames(start, stop, step, size))
        return export(tracks, meta, images)

    return make


def _box_xml(frame, xtl, ytl, xbr, ybr, outside=0, keyframe=1, rotation=0):
    return (f'<box frame="{frame}" outside="{outside}" occluded="0" keyframe="{keyframe}" '
            f'xtl="{xtl}" ytl="{ytl}" xbr="{xbr}" ybr="{ybr}" rotation="{rotation}"/>')  # fmt: skip


def _by_frame(dataset):
    frame_of = {i["id"]: int(i["file_name"][6:12]) for i in dataset.images}
    return [(frame_of[a["image_id"]], a) for a in dataset.annotations]


def test_tracks_are_interpolated_between_keyframes_and_end_when_outside(video, tmp_path):
    tracks = (f'<track id="0" label="cat">{_box_xml(0, 0, 0, 4, 4, rotation=350)}'
              f"{_box_xml(4, 4, 2, 8, 6, rotation=10)}{_box_xml(6, 4, 2, 8, 6, outside=1)}</track>"
              f'<track id="1" label="dog">{_box_xml(2, 1, 1, 3, 3)}</track>')  # fmt: skip
    dataset, report = read_into(cvat_xml, video(tracks), tmp_path / "out")
    assert len(dataset.images) == 5 and {i["group"] for i in dataset.images} == {"task 5"}
    shapes = [(frame, a["attributes"]["track_id"], a["bbox"]) for frame, a in _by_frame(dataset)]
    assert sorted(shapes) == [
        (0, 0, [-0.317, -0.317, 4.634, 4.634]),  # 350 degrees: a polygon
        (2, 0, [2, 1, 4, 4]),  # halfway: position and rotation (350 -> 360 = 0, the short way)
        (2, 1, [1, 1, 2, 2]),
        (4, 0, [3.683, 1.683, 4.634, 4.634]),
        (4, 1, [1, 1, 2, 2]),  # the last shape is kept to the task's end
        (6, 1, [1, 1, 2, 2]),
        (8, 1, [1, 1, 2, 2]),
    ]
    keyframes = {
        (f, a["attributes"]["track_id"]): a["attributes"]["keyframe"] for f, a in _by_frame(dataset)
    }
    assert keyframes[(0, 0)] and not keyframes[(2, 0)] and not keyframes[(8, 1)]
    notes = _entries(report, "track-interpolated")
    assert [(n.location.split(": ")[1], n.message[:10]) for n in notes] == [
        ("track 0 label 'cat'", "1 frame(s)"),
        ("track 1 label 'dog'", "3 frame(s)"),
    ]


def test_shapes_written_on_every_frame_are_not_interpolated_again(video, tmp_path):
    tracks = (f'<track id="4" label="cat">{_box_xml(0, 0, 0, 2, 2)}'
              f"{_box_xml(1, 5, 5, 9, 9, keyframe=0)}{_box_xml(2, 2, 2, 4, 4)}"
              f"{_box_xml(3, 2, 2, 4, 4, outside=1)}</track>")  # fmt: skip
    dataset, report = read_into(cvat_xml, video(tracks, 0, 3, 1), tmp_path / "out")
    assert [(f, a["bbox"]) for f, a in _by_frame(dataset)] == [
        (0, [0, 0, 2, 2]), (1, [5, 5, 4, 4]), (2, [2, 2, 2, 2]),
    ]  # fmt: skip
    assert [a["attributes"]["keyframe"] for a in dataset.annotations] == [True, False, True]
    assert _entries(report, "track-interpolated") == []


def test_polygon_tracks_interpolate_when_point_counts_match(video, tmp_path):
    def polygon(frame, points, outside=0):
        return f'<polygon frame="{frame}" outside="{outside}" keyframe="1" points="{points}"/>'

    tracks = (f'<track id="0" label="cat">{polygon(0, "0,0;4,0;4,4")}{polygon(4, "4,0;8,0;8,4")}'
              f'{polygon(6, "0,0;4,0;4,4;0,4")}{polygon(8, "0,0;4,0;4,4", 1)}</track>')  # fmt: skip
    dataset, report = read_into(cvat_xml, video(tracks), tmp_path / "out")
    assert [(f, a["segmentation"][0]) for f, a in _by_frame(dataset)] == [
        (0, [0, 0, 4, 0, 4, 4]),
        (2, [2, 0, 6, 0, 6, 4]),
        (4, [4, 0, 8, 0, 8, 4]),
        (6, [0, 0, 4, 0, 4, 4, 0, 4]),
    ]
    assert _entries(report, "polygon-interpolation-approximated") == []
    tracks = tracks.replace(polygon(6, "0,0;4,0;4,4;0,4"), "").replace(
        '"4,0;8,0;8,4"', '"4,0;8,0;8,4;4,4"'
    )
    dataset, report = read_into(cvat_xml, video(tracks), tmp_path / "out")
    assert [(f, a["segmentation"][0]) for f, a in _by_frame(dataset)][1] == (2, [0, 0, 4, 0, 4, 4])
    (note,) = _entries(report, "polygon-interpolation-approximated")
    assert note.message.startswith("2 frame(s) lie between polygons with different point counts")


def test_mask_tracks_keep_the_previous_mask(video, tmp_path):
    mask = ('<mask frame="{}" outside="{}" keyframe="1" rle="0, 4" left="1" top="1" width="2" '
            'height="2"/>')  # fmt: skip
    tracks = f'<track id="0" label="cat">{mask.format(0, 0)}{mask.format(4, 1)}</track>'
    dataset, _ = read_into(cvat_xml, video(tracks), tmp_path / "out")
    assert [(f, a["bbox"], a["area"]) for f, a in _by_frame(dataset)] == [
        (0, [1, 1, 2, 2], 4), (2, [1, 1, 2, 2], 4),
    ]  # fmt: skip


def test_frame_step_and_missing_frames(video, tmp_path):
    tracks = (f'<track id="0" label="cat">{_box_xml(10, 0, 0, 2, 2)}{_box_xml(13, 0, 0, 2, 2, 1)}'
              f"{_box_xml(16, 1, 1, 2, 2)}{_box_xml(19, 1, 1, 2, 2, 1)}</track>")  # fmt: skip
    root = video(tracks, 10, 22, 3, files=[10, 13])
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    with pytest.raises(
        ReportError,
        match=r"task 5 frame 16: image file frame_000016 is not in the export \(looked for "
        r"images/frame_000016\.\*\)",
    ):
        builder.build(root / "out")
    dataset, report = read_into(cvat_xml, root, tmp_path / "out", skip_bad_images=True)
    assert [i["file_name"] for i in dataset.images] == ["frame_000010.PNG", "frame_000013.PNG"]
    (missing,) = _entries(report, "frame-missing")
    assert missing.message == (
        "2 frame(s) have no image file (looked for images/frame_NNNNNN.*) and no shapes: left out "
        "(deleted frames, or an export without images): [19, 22]"
    )


def test_unsupported_tracks_are_skipped_one_line_per_track(video, tmp_path):
    tracks = """<track id="0" label="cat"><points frame="0" outside="0" points="1,1"/>
      <points frame="2" outside="1" points="1,1"/></track>
      <track id="1" label="pose"><skeleton frame="0" keyframe="1" points="">
      <points label="nose" outside="0" points="1,1"/></skeleton></track>"""
    dataset, report = read_into(cvat_xml, video(tracks), tmp_path / "out")
    skipped = _entries(report, "shape-unsupported")
    assert [e.message[:42] for e in skipped] == [
        "points track with 1 visible shape(s) (fram",
        "skeleton track with 1 visible shape(s) (fr",
    ]
    assert len(dataset.images) == 5 and dataset.annotations == []


def test_project_video_exports_read_each_task_from_its_subset_folder(export, tmp_path):
    frames = _frames(0, 1, 1, None)
    meta = f"""<project><id>1</id><tasks><task><id>8</id><subset>Train</subset>{frames}</task>
      <task><id>9</id><subset></subset>{frames}</task></tasks>{LABELS}</project>"""
    tracks = (f'<track id="0" label="cat" task_id="9" subset="default">{_box_xml(1, 0, 0, 1, 1)}'
              "</track>")  # fmt: skip
    images = {f"{s}/frame_00000{n}.PNG": (20, 10) for s in ("Train", "default") for n in (0, 1)}
    dataset, _ = read_into(cvat_xml, export(tracks, meta, images), tmp_path / "out")
    assert [(i["file_name"], i.get("subset"), i["group"]) for i in dataset.images] == [
        ("Train/frame_000000.PNG", "Train", "task 8"),
        ("Train/frame_000001.PNG", "Train", "task 8"),
        ("default/frame_000000.PNG", None, "task 9"),
        ("default/frame_000001.PNG", None, "task 9"),
    ]
    assert [a["image_id"] for a in dataset.annotations] == [4]


def test_video_exports_that_cannot_be_mapped_to_frames_are_refused(export, video):
    meta = _task("annotation", _frames(0, 1, 1))
    root = export('<track id="0" label="cat"/>', meta, {"a.jpg": (20, 10), "b.jpg": (20, 10)})
    with pytest.raises(ValueError, match="export the task as 'CVAT for images 1.1'"):
        cvat_xml.read(root, DatasetBuilder())
    (root / "annotations.xml").write_text(
        _xml(_task("interpolation", "<frame_filter>every=2</frame_filter>"), "")
    )
    with pytest.raises(ValueError, match="frame_filter 'every=2' is not CVAT's 'step=N'"):
        cvat_xml.read(root, DatasetBuilder())


def test_a_stop_frame_one_past_the_last_frame_is_capped_at_the_frames_that_exist(export, tmp_path):
    # Some writers (datumaro's CVAT converter among them) write stop_frame = size: one past the
    # last frame. A track open on the last frame must not be carried onto a frame that is not there.
    frames = "<size>3</size><start_frame>0</start_frame><stop_frame>3</stop_frame>"
    meta = _task("interpolation", frames + "<frame_filter></frame_filter>")
    tracks = f'<track id="0" label="cat">{_box_xml(0, 0, 0, 2, 2)}</track>'
    images = {f"frame_{n:06d}.PNG": (20, 10) for n in range(3)}
    dataset, report = read_into(cvat_xml, export(tracks, meta, images), tmp_path / "out")
    assert [(f, a["bbox"]) for f, a in _by_frame(dataset)] == [(n, [0, 0, 2, 2]) for n in range(3)]
    (fixed,) = _entries(report, "stop-frame-past-end")
    assert (fixed.action, fixed.location, fixed.message) == (
        "fixed",
        "annotations.xml: task 5",
        "stop_frame 3 lies past the last of the task's 3 frame(s) (0..2 step 1; <size> 3): the "
        "task is read to frame 2",
    )
    assert report.refusals == [] and _entries(report, "frame-missing") == []


def test_per_subset_files_keep_their_subset_from_the_file_name(tmp_path):
    # datumaro's CVAT converter writes one <subset>.xml per subset, the subset named only by the
    # file (and the task's <name>), and every image in one images/ folder.
    root = tmp_path / "export"
    for subset, image in (("train", "a.png"), ("val", "b.png")):
        meta = f"<task><id></id><name>{subset}</name><size>1</size>{LABELS}</task>"
        (root / f"{subset}.xml").parent.mkdir(exist_ok=True)
        (root / f"{subset}.xml").write_text(_xml(meta, _image_xml("", name=image)))
        write_image(root / "images" / image, 20, 10)
    dataset, report = read_into(cvat_xml, root, tmp_path / "out")
    assert [(i["file_name"], i["subset"]) for i in dataset.images] == [
        ("a.png", "train"), ("b.png", "val"),
    ]  # fmt: skip
    notes = _entries(report, "subset-from-file-name")
    assert [(e.action, e.location, e.message) for e in notes] == [
        ("note", f"{name}.xml", f"the <meta> names no subset: its images are subset {name!r}, "
         "after the file name (datumaro writes one <subset>.xml per subset)")
        for name in ("train", "val")
    ]  # fmt: skip


def test_a_missing_image_says_where_the_reader_looked_and_where_the_file_is(export, tmp_path):
    root = export(_image_xml('<box label="cat" xtl="0" ytl="0" xbr="1" ybr="1"/>'))
    write_image(root / "data" / "a.png", 20, 10)
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    with pytest.raises(ReportError):
        builder.build(tmp_path / "out")
    (missing,) = builder.report.refusals
    assert (missing.location, missing.message) == (
        "annotations.xml: image 'a.png'",
        "image file a.png is not in the export (looked for images/a.png, a.png; a file of that "
        "name is at data/a.png: CVAT keeps an export's images in images/, move them there)",
    )
    write_image(root / "images" / "Train" / "a.png", 20, 10)  # another subset's: no advice
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    builder.build(tmp_path / "out", skip_bad_images=True)
    (missing,) = builder.report.of("skipped")
    assert missing.message == (
        "image file a.png is not in the export (looked for images/a.png, a.png; files of that "
        "name are at data/a.png, images/Train/a.png) (1 annotation(s) skipped with it)"
    )


def test_a_missing_video_frame_names_the_frame_not_an_invented_file(video, tmp_path):
    shapes = _box_xml(2, 0, 0, 2, 2) + _box_xml(4, 0, 0, 2, 2, outside=1)
    tracks = f'<track id="0" label="cat">{shapes}</track>'
    builder = DatasetBuilder()
    cvat_xml.read(video(tracks, files=[0, 4, 6, 8]), builder)
    with pytest.raises(ReportError):
        builder.build(tmp_path / "out")
    (missing,) = builder.report.refusals
    assert (missing.location, missing.message) == (
        "annotations.xml: task 5 frame 2",
        "image file frame_000002 is not in the export (looked for images/frame_000002.*)",
    )


@pytest.mark.parametrize(
    "document, reason",
    [
        ("<annotations><version>1.1</version><meta><task></meta></annotations>",
         "not well-formed XML (line 2, column 50: mismatched tag))"),
        ('<!DOCTYPE annotations [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
         "<annotations>&x;</annotations>",
         "a document type declaration <!DOCTYPE annotations> at line 2: DTDs and entity "
         "declarations are not allowed (an entity can read local files or expand without bound; "
         "CVAT, PASCAL VOC and LabelMe never write one). Remove the <!DOCTYPE ...> block"),
        ('<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
         "\n<annotations>&b;</annotations>",
         "a document type declaration <!DOCTYPE a> at line 2: DTDs and entity declarations are "
         "not allowed"),
        ("<annotations><version>1.1</version>" + _image_xml("") + "</annotations>",
         "not CVAT XML: an <image> comes before any <meta> (CVAT writes <version> and <meta>, "
         "the labels and frames, first)"),
        ("<annotations/>", "not CVAT XML: <annotations> holds no <meta>"),
        ("<annotation><object/></annotation>", "not CVAT XML: its root element is <annotation>, "
         "not <annotations>"),
    ],
)  # fmt: skip
def test_unreadable_or_foreign_xml_says_why(tmp_path, document, reason):
    root = tmp_path / "export"
    root.mkdir()
    (root / "annotations.xml").write_text('<?xml version="1.0" encoding="utf-8"?>\n' + document)
    with pytest.raises(ValueError) as error:
        cvat_xml.read(root, DatasetBuilder())
    assert str(error.value).startswith(
        f"{root}: no CVAT annotation XML at the top level (annotations.xml: {reason}"
    )


def test_an_xml_broken_past_its_meta_is_refused_with_line_and_column(export):
    root = export(_image_xml("") + "<image id='1' name='b.png'></track>")
    with pytest.raises(ValueError) as error:
        cvat_xml.read(root, DatasetBuilder())
    assert str(error.value) == (
        "annotations.xml: not well-formed XML (line 12, column 112: mismatched tag)"
    )


def test_an_unreadable_xml_beside_the_export_is_skipped_with_a_report_line(export, tmp_path):
    root = export(_image_xml(""), images={"a.png": (20, 10)})
    (root / "notes.xml").write_text('<!DOCTYPE notes [<!ENTITY x "y">]>\n<notes>&x;</notes>')
    (root / "other.xml").write_text("<notes>\n<open></notes>")  # another tool's: not CVAT
    dataset, report = read_into(cvat_xml, root, tmp_path / "out")
    assert len(dataset.images) == 1
    assert [(e.action, e.code, e.location, e.message) for e in report.of("skipped")] == [
        ("skipped", "xml-dtd-forbidden", "notes.xml",
         "a document type declaration <!DOCTYPE notes> at line 1: DTDs and entity declarations "
         "are not allowed (an entity can read local files or expand without bound; CVAT, PASCAL "
         "VOC and LabelMe never write one). Remove the <!DOCTYPE ...> block: not read"),
    ]  # fmt: skip


# --- conformance on ../shared/test_data ------------------------------------------------------

SUPPORTED = ("box", "polygon", "ellipse", "mask")
NO_CLASS_TYPES = ("points", "polyline", "skeleton", "cuboid", "tag")


def _classes(root):
    names = []
    for label in root.iterfind("meta/*/labels/label"):
        if not label.findtext("parent") and label.findtext("type", "any") not in NO_CLASS_TYPES:
            names.append(label.findtext("name"))
    return names


def _expected_images(xml_path):
    """(images, instances, unsupported shapes, unlabelled shapes, class names) from the XML."""
    root = ET.parse(xml_path).getroot()
    instances = unsupported = unlabelled = 0
    for image in root.iterfind("image"):
        groups = set()
        for shape in image:
            group = shape.get("group_id", "0")
            if shape.tag not in SUPPORTED:
                unsupported += 1
            elif not shape.get("label"):
                unlabelled += 1
            elif group == "0" or group not in groups:
                groups.add(group)
                instances += 1
    return len(root.findall("image")), instances, unsupported, unlabelled, _classes(root)


def _expected_video(folder, xml_name):
    """(images, instances, unsupported tracks, class names) from the XML and the frame files."""
    root = ET.parse(folder / xml_name).getroot()
    task = root.find("meta/task")
    step = int(task.findtext("frame_filter").split("=")[1])
    frames = range(int(task.findtext("start_frame")), int(task.findtext("stop_frame")) + 1, step)
    files = {int(p.stem[len("frame_") :]) for p in (folder / "images").glob("frame_*")}
    visible, unsupported = Counter(), 0
    for track in root.iterfind("track"):
        shapes = [s for s in track if s.tag != "track"]
        if shapes[0].tag not in SUPPORTED:
            unsupported += 1
            continue
        visible.update(int(s.get("frame")) for s in shapes if s.get("outside") == "0")
    images = [f for f in frames if f in files or visible[f]]
    return len(images), sum(visible.values()), unsupported, _classes(root)


@pytest.mark.parametrize(
    "folder, xml_name, counts",
    [
        ("datumaro_cvat-ai/tests/assets/cvat_dataset/for_images", "train.xml", (2, 1, 4, 1)),
        ("datumaro_openvino/tests/assets/cvat_dataset/for_images/export_project",
         "annotations.xml", (6, 6, 6, 0)),
        ("datumaro_openvino/tests/assets/cvat_dataset/for_images/export_task", "train.xml",
         (2, 1, 2, 1)),
        ("airo_cvat_exports/airo-dataset-tools/airo_dataset_tools/cvat_labeling/example",
         "annotations.xml", (4, 9, 20, 0)),
    ],
)  # fmt: skip
def test_conformance_cvat_for_images(shared_test_data, folder, xml_name, counts, tmp_path):
    root = shared_test_data / folder
    assert IMAGES in cvat_xml.detect(root)
    images, instances, unsupported, unlabelled, classes = _expected_images(root / xml_name)
    assert (images, instances, unsupported, unlabelled) == counts
    dataset, report = read_into(cvat_xml, root, tmp_path / "out", IMAGES)
    assert (len(dataset.images), len(dataset.annotations)) == (images, instances)
    assert list(dataset.label_map.names) == classes
    assert len(_entries(report, "shape-unsupported")) == unsupported
    assert len(_entries(report, "label-missing")) == unlabelled
    assert report.refusals == [] and len(report.of("skipped")) == unsupported + unlabelled


@pytest.mark.parametrize(
    "folder, counts",
    [
        ("datumaro_cvat-ai/tests/assets/cvat_dataset/for_video", (2, 1, 3)),
        ("datumaro_openvino/tests/assets/cvat_dataset/for_video", (3, 1, 2)),
    ],
)
def test_conformance_cvat_for_video(shared_test_data, folder, counts, tmp_path):
    root = shared_test_data / folder
    assert cvat_xml.detect(root) == [VIDEO]
    images, instances, unsupported, classes = _expected_video(root, "annotations.xml")
    assert (images, instances, unsupported) == counts
    dataset, report = read_into(cvat_xml, root, tmp_path / "out")
    assert (len(dataset.images), len(dataset.annotations)) == (images, instances)
    assert list(dataset.label_map.names) == classes == ["klhg", "z U k", "II"]
    assert {i["group"] for i in dataset.images} == {"task 5"}
    assert len(_entries(report, "shape-unsupported")) == unsupported
    assert _entries(report, "track-interpolated") == []  # CVAT wrote every frame
    (missing,) = _entries(report, "frame-missing")  # frames with neither a file nor a shape
    assert "[16, 19]" in missing.message or "[19]" in missing.message
    assert report.refusals == []


LEGO = "airo_cvat_exports/airo-dataset-tools/test/test_data/lego-battery-resized"


def test_conformance_airo_lego_resized_images_are_refused(shared_test_data):
    root = shared_test_data / LEGO
    builder = DatasetBuilder()
    cvat_xml.read(root, builder, IMAGES)
    with pytest.raises(ReportError, match="refused 34 annotation or image item"):
        builder.build(root / "never-written")
    refused = builder.report.refusals
    names = [image.get("name") for image in ET.parse(root / "original_annotations.xml").getroot()]
    assert [e.location for e in refused] == [
        f"original_annotations.xml: image {name!r}" for name in names if name
    ]
    assert all("says 4096x2304 but the file is 512x256" in e.message for e in refused)


def test_conformance_airo_lego_with_images_of_the_same_aspect(shared_test_data, tmp_path):
    source = shared_test_data / LEGO / "original_annotations.xml"
    root = tmp_path / "lego"
    root.mkdir()
    shutil.copyfile(source, root / "annotations.xml")
    images, instances, unsupported, _, classes = _expected_images(source)
    assert (images, instances, unsupported, len(classes)) == (34, 34, 170, 7)
    xml_images = ET.parse(source).getroot().findall("image")
    for image in xml_images:
        write_image(root / "images" / image.get("name"), 512, 288)  # 4096x2304 / 8
    dataset, report = read_into(cvat_xml, root, tmp_path / "out")
    assert (len(dataset.images), len(dataset.annotations)) == (34, 34)
    assert list(dataset.label_map.names) == classes
    assert len(_entries(report, "image-rescaled")) == 34
    assert len(_entries(report, "shape-unsupported")) == 170
    first = [float(v) for p in xml_images[0].find("polygon").get("points").split(";")
             for v in p.split(",")]  # fmt: skip
    assert dataset.annotations[0]["segmentation"][0] == pytest.approx(
        [v / 8 for v in first], abs=1e-3
    )


# --- source and frame numbers (measure-corrections reads them) ---------------------------------


def test_each_shape_keeps_its_source_and_each_image_its_frame_number(export, tmp_path):
    shapes = """
      <box label="cat" source="auto" xtl="0" ytl="0" xbr="2" ybr="2"/>
      <box label="cat" source="semi-auto" xtl="3" ytl="3" xbr="5" ybr="6"/>
      <polygon label="dog" source="manual" points="0,0;4,0;4,4"/>
      <polygon label="dog" source="auto" points="10,0;14,0;14,4" group_id="3"/>
      <polygon label="dog" source="auto" points="10,5;14,5;14,9" group_id="3"/>
      <polygon label="dog" source="auto" points="0,5;4,5;4,9" group_id="4"/>
      <polygon label="dog" source="manual" points="5,5;8,5;8,9" group_id="4"/>
      <box label="cat" xtl="0" ytl="0" xbr="1" ybr="1"/>"""
    body = _image_xml(shapes, extra="") + _image_xml("", name="b.png").replace('id="0"', 'id="7"')
    images = {"a.png": (20, 10), "b.png": (20, 10)}
    dataset, _ = read_into(cvat_xml, export(body, images=images), tmp_path / "out")
    sources = [a.get("source") for a in dataset.annotations]
    # a group of auto shapes is auto; one a person added a part to is a person's change
    assert sources == ["auto", "semi-auto", "manual", "auto", "semi-auto", None]
    assert [image["frame"] for image in dataset.images] == [0, 7]


def test_a_task_whose_frames_are_all_deleted_reads_as_either_format(export, tmp_path):
    root = export("")
    assert cvat_xml.detect(root) == [VIDEO]
    for format_name in (IMAGES, VIDEO):
        dataset, _ = read_into(cvat_xml, root, tmp_path / format_name, format_name=format_name)
        assert dataset.images == [] and dataset.annotations == []
