"""The correction report end to end on the CVAT stand-in: preannotate uploads (recording CVAT's
ids), a scripted annotator reviews, export-annotations pulls the task as "CVAT for images 1.1",
and measure-corrections must give back exactly what the annotator did."""

import json
import shutil
from functools import partial

import pytest

from cvat_kfp.components.common.dataset import Dataset
from cvat_kfp.components.export_annotations import cvat_server
from cvat_kfp.components.export_annotations.export import run_export_annotations
from cvat_kfp.components.measure_corrections.corrections import (
    run_measure_corrections,
    same_frame_name,
)
from cvat_kfp.components.preannotate.preannotate import run_preannotate
from tests.components.export_annotations.cvat_mock_server import CvatMockServer

from .synthetic_review import LABELS, RELABEL, LaidOutPredictor, add_task, review

TASK = 7
RATES = {"move": 0.2, "touch": 0.1, "relabel": 0.1, "delete": 0.15}
CLASSES = [name for name, _ in LABELS]


@pytest.fixture()
def server(env, monkeypatch):
    fast = partial(cvat_server.export_from_cvat, poll_interval=0.01, retry_delay=0.01)
    monkeypatch.setattr(cvat_server, "export_from_cvat", partial(fast, log=lambda line: None))
    with CvatMockServer() as server:
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", server.token)
        yield server


def preannotate(server, tmp_path, frames=12, seed=3):
    add_task(server, TASK, frames, seed)
    predictions = tmp_path / "predictions"
    result = run_preannotate(
        "unused",
        str(predictions),
        str(tmp_path / "preannotate.md"),
        server.url,
        str(TASK),
        predictor=LaidOutPredictor(frames, seed),
        batch_size=5,
        retry_delay=0.01,
    )
    metadata = result.metadata["predictions"]
    assert metadata["uploaded_shape_ids"] == metadata["uploaded_shapes"]
    assert metadata["uploaded_shapes_file"] == "uploaded_shapes.json"
    return predictions


def export(server, tmp_path, annotation_format="CVAT for images 1.1"):
    out = tmp_path / "reviewed"
    shutil.rmtree(out, ignore_errors=True)
    run_export_annotations(
        out,
        tmp_path / "export.md",
        cvat_url=server.url,
        task_ids=str(TASK),
        annotation_format=annotation_format,
    )
    return out


def measure(predictions, reviewed, tmp_path, **options):
    result = run_measure_corrections(
        str(predictions),
        str(reviewed),
        report_path=str(tmp_path / "report" / "corrections.md"),
        report_html_path=str(tmp_path / "report" / "corrections.html"),
        **options,
    )
    markdown = (tmp_path / "report" / "corrections.md").read_text(encoding="utf-8")
    return result, markdown


def assert_counted_once(metrics):
    """Every uploaded prediction has one outcome, every final shape one origin."""
    outcomes = ("kept", "corrected", "relabelled", "deleted", "on_deleted_frames")
    origins = ("kept", "corrected", "relabelled", "added_by_hand", "other")
    assert sum(metrics[name] for name in outcomes) == metrics["uploaded"]
    assert sum(metrics[name] for name in origins) == metrics["final"]


def test_preannotate_records_the_ids_cvat_gave(server, tmp_path):
    predictions = preannotate(server, tmp_path)

    record = json.loads((predictions / "uploaded_shapes.json").read_text())
    stored = {s["id"]: s for s in server.shapes(TASK)}
    assert len(record["shapes"]) == len(stored) > 12
    for shape in record["shapes"]:
        held = stored[shape["id"]]
        assert (held["frame"], held["label_id"], held["type"], held["points"]) == (
            shape["frame"],
            shape["label_id"],
            shape["type"],
            shape["points"],
        )
        assert server.labels[held["label_id"]]["name"] == shape["label"]
    assert [f["frame"] for f in record["frames"]] == list(range(12))
    assert {s["type"] for s in record["shapes"]} == {"rectangle", "polygon", "mask"}


def test_ids_are_found_in_an_answer_split_by_job(server, tmp_path):
    """CVAT answers job by job; a task of 3 jobs answers a 5-frame batch in two parts."""
    add_task(server, TASK, 6, seed=5)
    server.add_job(702, TASK, "new")
    server.add_job(703, TASK, "new")
    predictions = tmp_path / "predictions"
    run_preannotate(
        "unused", str(predictions), str(tmp_path / "r.md"), server.url, str(TASK),
        predictor=LaidOutPredictor(6, 5), batch_size=5, retry_delay=0.01,
    )  # fmt: skip
    record = json.loads((predictions / "uploaded_shapes.json").read_text())
    stored = {s["id"]: (s["frame"], s["points"]) for s in server.shapes(TASK)}
    assert {s["id"]: (s["frame"], s["points"]) for s in record["shapes"]} == stored


@pytest.mark.parametrize("seed", [1, 2])
def test_the_synthetic_review_comes_back_exactly(server, tmp_path, seed):
    predictions = preannotate(server, tmp_path, frames=16, seed=seed)
    done = review(server, TASK, predictions, RATES, added=9, seed=seed)
    reviewed = export(server, tmp_path)

    result, markdown = measure(predictions, reviewed, tmp_path)

    metrics = result.metrics
    assert_counted_once(metrics)
    uploaded = sum(done.count(a) for a in ("keep", "move", "touch", "relabel", "delete"))
    assert metrics["uploaded"] == uploaded
    assert metrics["kept"] == done.count("keep")
    assert metrics["corrected"] == done.count("move") + done.count("touch")
    assert metrics["relabelled"] == done.count("relabel")
    assert metrics["deleted"] == done.count("delete")
    assert metrics["added_by_hand"] == 9 and metrics["other"] == 0
    for action in ("move", "touch", "relabel", "delete"):
        assert done.count(action) == round(RATES[action] * uploaded)
    assert metrics["deleted_rate"] == round(done.count("delete") / uploaded, 4)
    assert metrics["relabelled_rate"] == round(done.count("relabel") / uploaded, 4)
    final = uploaded - done.count("delete") + 9
    assert metrics["final"] == final == len(Dataset.load(reviewed).annotations)
    assert metrics["kept_share"] == round(done.count("keep") / final, 4)
    for label in CLASSES:
        kept_final = done.count("keep", label)
        final_of_label = (
            done.count("keep", label) + done.count("move", label) + done.count("touch", label)
            + done.count("relabel to", label) + done.added[label]
        )  # fmt: skip
        if final_of_label:
            assert metrics[f"kept_share_{label}"] == round(kept_final / final_of_label, 4)
    # moved 3 px right: the IoU of a 26 px box with itself moved is 23/29
    assert metrics["corrected_iou_median"] == pytest.approx(1.0 if done.count("touch") >
                                                           done.count("move") else 23 / 29,
                                                           abs=0.02)  # fmt: skip
    assert f"| **all** | {uploaded} | {done.count('keep')} |" in markdown
    for label in CLASSES:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:6] == [
            str(sum(done.count(a, label) for a in ("keep", "move", "touch", "relabel", "delete"))),
            str(done.count("keep", label)),
            str(done.count("move", label) + done.count("touch", label)),
            str(done.count("relabel", label)),
            str(done.count("delete", label)),
        ]
    relabels = {f"| {a} | {b} |" for a, b in RELABEL.items() if done.count("relabel", a)}
    assert all(any(line.startswith(r) for line in markdown.splitlines()) for r in relabels)
    html = (tmp_path / "report" / "corrections.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 2 * min(12, len(done.changed_frames))
    assert result.metadata["report"]["task_id"] == TASK


def test_nothing_touched_is_all_kept(server, tmp_path):
    predictions = preannotate(server, tmp_path)
    result, markdown = measure(predictions, export(server, tmp_path), tmp_path)
    n = len(server.shapes(TASK))
    assert result.metrics["kept"] == result.metrics["final"] > 0
    assert result.metrics["kept_share"] == 1.0 and result.metrics["kept_rate"] == 1.0
    assert "corrected_iou_median" not in result.metrics
    assert n >= result.metrics["uploaded"]  # polygon parts: one prediction, one shape each here
    assert "No shape was corrected." in markdown
    html = (tmp_path / "report" / "corrections.html").read_text()
    assert "Most corrected frames (0)" in html


# --- bad input ---------------------------------------------------------------------------------


def test_an_export_without_source_says_which_format_to_export(server, tmp_path):
    predictions = preannotate(server, tmp_path)
    server.archives[f"task-{TASK}"] = _coco_zip_of(server, tmp_path)
    reviewed = export(server, tmp_path, annotation_format="COCO 1.0")

    with pytest.raises(ValueError, match="Export the task as 'CVAT for images 1.1'"):
        measure(predictions, reviewed, tmp_path)


def _coco_zip_of(server, tmp_path) -> bytes:
    """The task as a COCO 1.0 export: the CVAT XML export read and written as COCO."""
    import io
    import zipfile

    dataset = Dataset.load(export(server, tmp_path))
    coco = dataset.to_coco()
    for image in coco["images"]:
        image.pop("frame", None)
    for annotation in coco["annotations"]:
        annotation.pop("source", None)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("annotations/instances_default.json", json.dumps(coco))
        for image in coco["images"]:
            path = dataset.root / "images" / image["file_name"]
            archive.writestr(f"images/default/{image['file_name']}", path.read_bytes())
    return out.getvalue()


def test_shapes_on_frames_deleted_since_are_counted_apart(server, tmp_path):
    predictions = preannotate(server, tmp_path)
    on_frame_2 = sum(
        1 for s in json.loads((predictions / "uploaded_shapes.json").read_text())["shapes"]
        if s["frame"] == 2
    )  # fmt: skip
    server.delete_frames(TASK, 2)
    first = next(s for s in server.shapes(TASK) if s["frame"] == 0)
    server.delete_shape(TASK, first["id"])

    result, markdown = measure(predictions, export(server, tmp_path), tmp_path)

    m = result.metrics
    assert_counted_once(m)
    assert m["on_deleted_frames"] == on_frame_2 > 0
    assert m["deleted"] == 1
    assert m["kept"] == m["uploaded"] - on_frame_2 - 1 == m["final"]
    assert m["deleted_rate"] == round(1 / (m["uploaded"] - on_frame_2), 4)
    assert "1 frame(s) pre-annotated but not in the reviewed export" in markdown
    assert f"{first['id']} (frame 0," in markdown  # the deleted shape, by its CVAT id


def test_a_label_renamed_between_the_rounds_is_followed(server, tmp_path):
    predictions = preannotate(server, tmp_path)
    server.rename_label(server.label_id(TASK, "cat"), "kitty")
    cats = [s for s in server.shapes(TASK) if server.labels[s["label_id"]]["name"] == "kitty"]
    server.edit_shape(TASK, cats[0]["id"], label_id=server.label_id(TASK, "dog"))

    result, markdown = measure(predictions, export(server, tmp_path), tmp_path)

    m = result.metrics
    assert_counted_once(m)
    assert m["relabelled"] == 1 and m["kept"] == m["uploaded"] - 1 and m["deleted"] == 0
    assert m["kept_share_kitty"] == 1.0 and "kept_share_cat" not in m
    assert "label 'cat' was renamed 'kitty' in CVAT after the upload" in markdown
    assert "| kitty | dog | 1 |" in markdown
    assert result.metadata["report"]["renamed_labels"] == {"cat": "kitty"}


def test_an_empty_task_is_named(server, tmp_path):
    predictions = preannotate(server, tmp_path, frames=3)
    server.delete_frames(TASK, 0, 1, 2)
    with pytest.raises(ValueError, match="holds no frames .*nothing to measure"):
        measure(predictions, export(server, tmp_path), tmp_path)


def test_a_dry_run_has_nothing_to_compare(server, tmp_path):
    add_task(server, TASK, 2, seed=1)
    predictions = tmp_path / "predictions"
    run_preannotate(
        "unused", str(predictions), str(tmp_path / "r.md"), server.url, str(TASK),
        predictor=LaidOutPredictor(2, 1), dry_run=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="no uploaded_shapes.json.*not a dry run"):
        measure(predictions, tmp_path, tmp_path)


def test_another_task_is_refused(server, tmp_path):
    predictions = preannotate(server, tmp_path, frames=3)
    record = json.loads((predictions / "uploaded_shapes.json").read_text())
    for frame in record["frames"]:
        frame["name"] = "other_" + frame["name"]
    (predictions / "uploaded_shapes.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not task 7 as it was pre-annotated"):
        measure(predictions, export(server, tmp_path), tmp_path)


@pytest.mark.parametrize(
    "exported, uploaded, same",
    [
        ("img_0.png", "img_0.png", True),
        ("task-7/dir/img_0.png", "dir/img_0.png", True),  # several exports: a folder each
        ("frame_000003.PNG", "frame_000003", True),  # a video's frame, as CVAT names both
        ("img_0.png", "img_1.png", False),
        ("xdir/img_0.png", "dir/img_0.png", False),
    ],
)
def test_frames_are_recognised_by_their_cvat_names(exported, uploaded, same):
    assert same_frame_name(exported, uploaded) is same
