"""export_annotations end to end: every kind of source, format choice, parameter errors, bad
images, the report and the scratch folder. Small exports made in tmp_path; gs:// through the local
GCS emulator, http(s):// through a local file server, CVAT through the local REST stand-in."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from cvat_kfp.components.common import storage
from cvat_kfp.components.common.dataset import Dataset
from cvat_kfp.components.common.report import Report, ReportError
from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.export_annotations import cvat_server
from cvat_kfp.components.export_annotations.export import parse_ids, run_export_annotations
from cvat_kfp.components.export_annotations.formats import FORMATS
from tests.gcs_emulator import create_bucket

from .cvat_mock_server import CvatMockServer

REPORT_FILES = {"report.json", "report.md", "report.html"}
SHAPE_CLASSES = ["circle", "square", "triangle"]


# --- exports made for the tests -----------------------------------------------------------------


def coco_export(root: Path) -> dict:
    """A COCO export (annotations.json + images/) of 4 synthetic images in 2 groups and 2 subsets;
    returns its COCO dict."""
    make_shapes_dataset(root, num_images=4, image_size=(32, 24), num_groups=2, seed=3)
    coco = json.loads((root / "annotations.json").read_text())
    for image in coco["images"]:
        image["subset"] = "train" if image["id"] <= 3 else "val"
    (root / "annotations.json").write_text(json.dumps(coco))
    return coco


def cvat_xml_export(root: Path, images: dict[str, tuple[int, int]], files=None) -> Path:
    """A CVAT for images 1.1 export: annotations.xml declaring `images` {name: (w, h)}, one cat box
    at (2, 1)-(8, 5) on each, and image files of the sizes in `files` (default: as declared)."""
    body = "".join(
        f'<image id="{i}" name="{name}" width="{w}" height="{h}">'
        '<box label="cat" occluded="0" xtl="2" ytl="1" xbr="8" ybr="5" z_order="0"></box></image>'
        for i, (name, (w, h)) in enumerate(images.items())
    )
    labels = "<labels><label><name>cat</name></label><label><name>dog</name></label></labels>"
    meta = f"<task><id>5</id><mode>annotation</mode>{labels}</task>"
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"<meta>{meta}</meta>{body}</annotations>",
        encoding="utf-8",
    )
    for name, size in (images if files is None else files).items():
        (root / "images").mkdir(exist_ok=True)
        Image.new("RGB", size, (90, 120, 200)).save(root / "images" / name)
    return root


def server_zip(classes: list[str], file_names: list[str]) -> bytes:
    """CVAT's COCO 1.0 export with images: annotations/instances_default.json, images/default/.
    Image k has one box of class classes[k % len(classes)]."""
    images, annotations = [], []
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for image_id, name in enumerate(file_names, start=1):
            picture = io.BytesIO()
            Image.new("RGB", (8, 6), (image_id * 40, 90, 160)).save(picture, "JPEG")
            zf.writestr(f"images/default/{name}", picture.getvalue())
            images.append({"id": image_id, "width": 8, "height": 6, "file_name": name})
            annotations.append({
                "id": image_id, "image_id": image_id, "category_id": image_id % len(classes) + 1,
                "segmentation": [], "area": 8.0, "bbox": [1.0, 1.0, 4.0, 2.0], "iscrowd": 0,
            })  # fmt: skip
        categories = [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(classes, 1)]
        coco = {"categories": categories, "images": images, "annotations": annotations}
        zf.writestr("annotations/instances_default.json", json.dumps(coco))
    return archive.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def archive_of(folder: Path, kind: str) -> Path:
    """`folder` as a .zip or .tar.gz beside it, holding the folder itself at its top level."""
    fmt = {"zip": "zip", "tar.gz": "gztar"}[kind]
    return Path(shutil.make_archive(str(folder), fmt, folder.parent, folder.name))


def entries(report_dir: Path, code: str) -> list:
    return [e for e in Report.load(report_dir).entries if e.code == code]


def by_file_name(dataset: Dataset) -> dict[str, dict]:
    return {image["file_name"]: image for image in dataset.images}


@pytest.fixture()
def coco(tmp_path):
    """(the COCO export folder, its COCO dict)."""
    root = tmp_path / "coco"
    return root, coco_export(root)


def assert_same_as_export(dataset: Dataset, source: dict) -> None:
    """The Dataset holds what the synthetic export holds: counts, classes, subsets, groups."""
    assert len(dataset.images) == len(source["images"]) == 4
    assert len(dataset.annotations) == len(source["annotations"])
    assert [c["name"] for c in dataset.categories] == SHAPE_CLASSES
    assert [c["id"] for c in dataset.categories] == [1, 2, 3]
    images = by_file_name(dataset)
    for image in source["images"]:
        assert images[image["file_name"]]["subset"] == image["subset"]
        assert images[image["file_name"]]["group"] == image["group"]
    assert sorted(a["bbox"] for a in dataset.annotations) == sorted(
        a["bbox"] for a in source["annotations"]
    )


# --- local sources ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_local_folder_and_archives_are_detected_as_coco(tmp_path, coco, kind):
    root, source_coco = coco
    source = root if kind == "folder" else archive_of(root, kind)
    before = tree(root)
    out = tmp_path / "out"

    result = run_export_annotations(out, tmp_path / "report.md", source=str(source))

    assert result.format_name == "COCO 1.0"
    assert result.sources == [str(source)]
    assert_same_as_export(result.dataset, source_coco)
    loaded = Dataset.load(out)  # annotations.json and every image file, valid
    assert loaded.images == result.dataset.images
    assert {p.name for p in out.iterdir()} == {"annotations.json", "images"} | REPORT_FILES
    for image in source_coco["images"]:
        assert (out / "images" / image["file_name"]).read_bytes() == before[
            "images/" + image["file_name"]
        ]
    assert entries(out, "read")[0].message == "read as COCO 1.0"
    assert tree(root) == before  # the source is only read


def test_metadata_and_report_path(tmp_path, coco):
    root, source_coco = coco
    out, report = tmp_path / "out", tmp_path / "report" / "report.md"

    result = run_export_annotations(out, report, source=str(root))

    assert result.metadata["dataset"] == {
        "num_images": 4,
        "num_annotations": len(source_coco["annotations"]),
        "num_classes": 3,
        "class_names": SHAPE_CLASSES,
        "format": "COCO 1.0",
        "sources": [str(root)],
    }
    assert list(report.parent.iterdir()) == [report]
    assert REPORT_FILES <= {p.name for p in out.iterdir()}  # the Dataset carries its report too
    assert report.read_text() == (out / "report.md").read_text()
    assert "read as COCO 1.0" in report.read_text()


def test_file_uri_source(tmp_path, coco):
    root, source_coco = coco
    result = run_export_annotations(tmp_path / "out", tmp_path / "report.md", source=root.as_uri())
    assert_same_as_export(result.dataset, source_coco)


# --- remote sources -----------------------------------------------------------------------------


def test_gs_zip_object(tmp_path, coco, gcs_emulator):
    root, source_coco = coco
    create_bucket("exports")
    storage.upload_file(archive_of(root, "zip"), "gs://exports/cvat/coco.zip")

    result = run_export_annotations(
        tmp_path / "out", tmp_path / "report.md", source="gs://exports/cvat/coco.zip"
    )

    assert result.format_name == "COCO 1.0"
    assert result.sources == ["gs://exports/cvat/coco.zip"]
    assert_same_as_export(result.dataset, source_coco)
    Dataset.load(tmp_path / "out")


def test_gs_prefix_as_folder(tmp_path, coco, gcs_emulator):
    root, source_coco = coco
    create_bucket("exports")
    for name in tree(root):
        storage.upload_file(root / name, f"gs://exports/cvat/coco/{name}")

    result = run_export_annotations(
        tmp_path / "out", tmp_path / "report.md", source="gs://exports/cvat/coco"
    )

    assert_same_as_export(result.dataset, source_coco)
    Dataset.load(tmp_path / "out")


def test_http_archive_without_its_signature_in_metadata_or_report(tmp_path, coco, http_files):
    """http:// and https:// share one backend; a local server can only speak http://."""
    root, source_coco = coco
    shutil.copyfile(archive_of(root, "tar.gz"), http_files.root / "coco.tar.gz")
    url = http_files.url("coco.tar.gz") + "?X-Goog-Signature=s3cret"
    out = tmp_path / "out"

    result = run_export_annotations(out, tmp_path / "report.md", source=url)

    assert_same_as_export(result.dataset, source_coco)
    assert result.sources == [http_files.url("coco.tar.gz") + "?..."]
    assert "s3cret" not in json.dumps(result.metadata["dataset"])
    assert all("s3cret" not in (out / name).read_text() for name in REPORT_FILES)


# --- a CVAT server ------------------------------------------------------------------------------


@pytest.fixture()
def cvat(env, monkeypatch):
    """The CVAT stand-in with tasks 12 and 15 (same file names, overlapping classes), the token
    in the environment, and export polling fast enough for a test."""
    fast = partial(cvat_server.export_from_cvat, poll_interval=0.01, retry_delay=0.01)
    monkeypatch.setattr(cvat_server, "export_from_cvat", partial(fast, log=lambda line: None))
    with CvatMockServer() as server:
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", server.token)
        names = ["frame_000000.jpg", "frame_000001.jpg"]
        server.add_task(12, archive=server_zip(["apple", "pear"], names))
        server.add_task(15, archive=server_zip(["pear", "plum"], [*names, "frame_000002.jpg"]))
        yield server


@pytest.mark.parametrize("group_by_task", [True, False])
def test_cvat_server_tasks_are_merged(tmp_path, cvat, group_by_task):
    out = tmp_path / "out"

    result = run_export_annotations(
        out,
        tmp_path / "report.md",
        cvat_url=cvat.url,
        task_ids="12, 15",
        group_by_task=group_by_task,
    )

    dataset = result.dataset
    assert result.format_name == "COCO 1.0"
    assert result.sources == [f"{cvat.url} task 12", f"{cvat.url} task 15"]
    assert [c["name"] for c in dataset.categories] == ["apple", "pear", "plum"]  # by name
    assert sorted(by_file_name(dataset)) == [
        "task-12/default/frame_000000.jpg",
        "task-12/default/frame_000001.jpg",
        "task-15/default/frame_000000.jpg",
        "task-15/default/frame_000001.jpg",
        "task-15/default/frame_000002.jpg",
    ]
    names = {c["id"]: c["name"] for c in dataset.categories}
    classes = {
        dataset.images[a["image_id"] - 1]["file_name"]: names[a["category_id"]]
        for a in dataset.annotations
    }
    assert classes == {
        "task-12/default/frame_000000.jpg": "pear",
        "task-12/default/frame_000001.jpg": "apple",
        "task-15/default/frame_000000.jpg": "plum",
        "task-15/default/frame_000001.jpg": "pear",
        "task-15/default/frame_000002.jpg": "plum",
    }
    groups = {image["file_name"]: image.get("group") for image in dataset.images}
    if group_by_task:
        assert groups == {name: name.split("/")[0] for name in groups}
    else:
        assert set(groups.values()) == {None}
    Dataset.load(out)
    assert [e.message for e in entries(out, "read")] == [
        "task 12: read as COCO 1.0",
        "task 15: read as COCO 1.0",
    ]
    (request,) = [r for r in cvat.requests if r.path == "/api/tasks/12/dataset/export"]
    assert request.headers["Authorization"] == f"Bearer {cvat.token}"


def test_cvat_server_single_task_keeps_file_names(tmp_path, cvat):
    result = run_export_annotations(
        tmp_path / "out", tmp_path / "report.md", cvat_url=cvat.url, task_ids=[12]
    )
    assert sorted(by_file_name(result.dataset)) == [
        "default/frame_000000.jpg",
        "default/frame_000001.jpg",
    ]
    assert result.metadata["dataset"]["sources"] == [f"{cvat.url} task 12"]


def test_cvat_server_export_in_the_format_asked_keeps_the_source(tmp_path, cvat):
    image = io.BytesIO()
    Image.new("RGB", (20, 10)).save(image, "PNG")
    cvat.add_task(31, labels=["cat"], frames=[("a.png", image.getvalue())])
    cat = cvat.label_id(31, "cat")
    box = {"type": "rectangle", "frame": 0, "label_id": cat, "points": [1.0, 1.0, 5.0, 5.0]}
    cvat.add_shapes(31, {**box, "source": "auto"}, box)

    result = run_export_annotations(
        tmp_path / "out",
        tmp_path / "report.md",
        cvat_url=cvat.url,
        task_ids="31",
        annotation_format="cvat_images",
    )

    (request,) = [r for r in cvat.requests if r.path == "/api/tasks/31/dataset/export"]
    assert request.query["format"] == "CVAT for images 1.1"
    assert result.format_name == "CVAT for images 1.1"
    assert [a["source"] for a in result.dataset.annotations] == ["auto", "manual"]
    assert [image["frame"] for image in result.dataset.images] == [0]


def test_cvat_server_without_credentials(tmp_path, cvat, monkeypatch, temp_dir):
    monkeypatch.delenv("CVAT_ACCESS_TOKEN")
    with pytest.raises(cvat_server.CvatServerError, match="CVAT_ACCESS_TOKEN"):
        run_export_annotations(
            tmp_path / "out", tmp_path / "report.md", cvat_url=cvat.url, task_ids="12"
        )
    assert list(temp_dir.iterdir()) == []
    assert not cvat.requests


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("format_name", ["COCO 1.0", "coco 1.0", "coco", "auto", " AUTO "])
def test_format_given_or_detected(tmp_path, coco, format_name):
    root, source_coco = coco
    result = run_export_annotations(
        tmp_path / "out", tmp_path / "report.md", source=str(root), annotation_format=format_name
    )
    assert result.format_name == "COCO 1.0"
    assert_same_as_export(result.dataset, source_coco)


def test_unknown_format_lists_the_valid_names(tmp_path, coco):
    with pytest.raises(ValueError, match="unknown annotation format 'pascal'") as error:
        run_export_annotations(
            tmp_path / "out",
            tmp_path / "report.md",
            source=str(coco[0]),
            annotation_format="pascal",
        )
    assert all(repr(name) in str(error.value) for name in FORMATS)
    assert "'auto'" in str(error.value)
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_wrong_format_given_says_what_it_found(tmp_path, coco):
    with pytest.raises(ValueError, match=r"no CVAT for images 1\.1 annotation XML"):
        run_export_annotations(
            tmp_path / "out", tmp_path / "report.md", source=str(coco[0]), annotation_format="cvat"
        )


def test_no_known_format_lists_what_was_found(tmp_path):
    root = tmp_path / "export"
    (root / "pictures").mkdir(parents=True)
    (root / "readme.txt").write_text("not an export")
    Image.new("RGB", (4, 4)).save(root / "pictures" / "a.png")

    with pytest.raises(ValueError, match="no known CVAT export format found") as error:
        run_export_annotations(tmp_path / "out", tmp_path / "report.md", source=str(root))
    assert "['pictures/', 'readme.txt']" in str(error.value)
    assert "COCO 1.0" in str(error.value)  # the supported ones


def test_ambiguous_export_names_the_candidates_and_an_explicit_format_settles_it(tmp_path, coco):
    root, _ = coco
    cvat_xml_export(root, {"shapes_00001.jpg": (32, 24)}, files={})  # its image is already there

    with pytest.raises(ValueError, match="looks like several formats") as error:
        run_export_annotations(tmp_path / "out", tmp_path / "report.md", source=str(root))
    assert "COCO 1.0, CVAT for images 1.1" in str(error.value)
    assert "pass the format explicitly" in str(error.value)

    result = run_export_annotations(
        tmp_path / "out", tmp_path / "report.md", source=str(root), annotation_format="cvat"
    )
    assert result.format_name == "CVAT for images 1.1"
    assert [image["file_name"] for image in result.dataset.images] == ["shapes_00001.jpg"]
    assert [c["name"] for c in result.dataset.categories] == ["cat", "dog"]


# --- parameter errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"source": "export.zip", "cvat_url": "http://cvat", "task_ids": "3"}, "not both"),
        ({}, "give exactly one source"),
        ({"source": "  ", "cvat_url": ""}, "give exactly one source"),
        ({"source": "export.zip", "task_ids": "12"}, "not both"),
        ({"source": "export.zip", "job_ids": [3]}, "not both"),
        ({"cvat_url": "http://cvat"}, "http://cvat needs task_ids, project_ids or job_ids"),
        ({"cvat_url": "http://cvat", "task_ids": " , "}, "needs task_ids"),
        ({"cvat_url": "http://cvat", "task_ids": "12, x"}, "task_ids: 'x' is not a positive"),
        ({"cvat_url": "http://cvat", "project_ids": "0"}, "project_ids: '0' is not a positive"),
        ({"cvat_url": "http://cvat", "job_ids": "-4"}, "job_ids: '-4' is not a positive"),
        ({"cvat_url": "http://cvat", "task_ids": "1.5"}, "'1.5' is not a positive"),
    ],
)
def test_parameter_errors(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        run_export_annotations(tmp_path / "out", tmp_path / "report.md", **arguments)
    assert not (tmp_path / "out").exists()  # refused before anything is read or written


@pytest.mark.parametrize(
    "ids, expected",
    [
        ("12, 15", [12, 15]),
        ("12;15,", [12, 15]),
        (" 7 ", [7]),
        ([12, "15"], [12, 15]),
        ((3,), [3]),
        ("", []),
        (None, []),
        ([], []),
    ],
)
def test_parse_ids(ids, expected):
    assert parse_ids(ids, "task_ids") == expected


# --- bad images ---------------------------------------------------------------------------------


def test_missing_image_is_refused_by_name(tmp_path):
    root = cvat_xml_export(
        tmp_path / "export", {"a.png": (20, 10), "gone.png": (20, 10)}, files={"a.png": (20, 10)}
    )
    out, report = tmp_path / "out", tmp_path / "report.md"

    with pytest.raises(ReportError, match="gone.png") as error:
        run_export_annotations(out, report, source=str(root))

    assert "image file gone.png is not in the export" in str(error.value)
    (refusal,) = entries(out, "image-missing")
    assert refusal.action == "refused"
    assert "gone.png" in refusal.message
    assert "gone.png" in report.read_text()
    assert {p.name for p in out.iterdir()} == REPORT_FILES  # no annotations.json


def test_missing_image_skipped_on_request(tmp_path):
    root = cvat_xml_export(
        tmp_path / "export", {"a.png": (20, 10), "gone.png": (20, 10)}, files={"a.png": (20, 10)}
    )
    out = tmp_path / "out"

    result = run_export_annotations(
        out, tmp_path / "report.md", source=str(root), skip_bad_images=True
    )

    assert [image["file_name"] for image in result.dataset.images] == ["a.png"]
    assert len(result.dataset.annotations) == 1
    assert result.metadata["dataset"]["num_images"] == 1
    (skip,) = entries(out, "image-missing")
    assert skip.action == "skipped"
    assert "gone.png" in skip.message and "1 annotation(s) skipped" in skip.message
    assert [image["file_name"] for image in Dataset.load(out).images] == ["a.png"]


def test_image_twice_the_annotated_size_is_rescaled(tmp_path):
    root = cvat_xml_export(tmp_path / "export", {"a.png": (20, 10)}, files={"a.png": (40, 20)})
    out = tmp_path / "out"

    result = run_export_annotations(out, tmp_path / "report.md", source=str(root))

    (image,) = result.dataset.images
    assert (image["width"], image["height"]) == (40, 20)
    (annotation,) = result.dataset.annotations
    assert annotation["bbox"] == [4.0, 2.0, 12.0, 8.0]  # (2, 1)-(8, 5) doubled
    assert annotation["area"] == 96.0
    (fix,) = entries(out, "image-rescaled")
    assert fix.action == "fixed"
    assert "20x10" in fix.message and "40x20" in fix.message
    assert "a.png" in fix.location
    Dataset.load(out)


# --- the scratch folder -------------------------------------------------------------------------


def test_a_run_as_the_face_makes_it_leaves_nothing_in_the_temp_dir(tmp_path, coco, temp_dir):
    root, _ = coco
    outputs = tmp_path / "outputs"

    def run(name: str, source: Path) -> None:  # as component.py calls it, with artifact paths
        dataset, report = outputs / name / "dataset", outputs / name / "report"
        run_export_annotations(dataset, report, source=str(source))

    run("zip", archive_of(root, "zip"))
    assert list(temp_dir.iterdir()) == []
    assert (outputs / "zip" / "report").read_text().startswith("# Validation report")

    (root / "images" / "shapes_00002.jpg").unlink()
    with pytest.raises(ReportError, match="shapes_00002.jpg"):
        run("refused", archive_of(root, "zip"))
    assert list(temp_dir.iterdir()) == []
    assert "shapes_00002.jpg" in (outputs / "refused" / "report").read_text()

    (root / "annotations.json").unlink()
    with pytest.raises(ValueError, match="no known CVAT export format"):
        run("unknown", archive_of(root, "tar.gz"))
    assert list(temp_dir.iterdir()) == []
