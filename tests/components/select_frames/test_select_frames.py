"""Selecting what to label next with a fake predictor whose detections per picture are known: the
uncertainty signs, the diverse selection, ranking.json and the report, and the CVAT task holding
the selection, created once through the local server speaking CVAT's REST API."""

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.inference.predictor import Detections
from cvat_kfp.components.select_frames.selection import (
    embed,
    frame_uncertainty,
    near_threshold,
    run_select_frames,
    select_diverse,
)
from tests.components.export_annotations.cvat_mock_server import CvatMockServer

NAMES = ("cat", "dog")
W, H = 48, 32
BOX = [0.1, 0.1, 0.6, 0.6]
NEAR_BOX = [0.12, 0.1, 0.6, 0.62]
FAR_BOX = [0.7, 0.7, 0.9, 0.9]


def detections(*found) -> Detections:
    """found: (name, score) or (name, score, box)."""
    boxes = [f[2] if len(f) > 2 else BOX for f in found]
    return Detections(
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        classes=np.array([NAMES.index(f[0]) + 1 for f in found], np.int32),
        scores=np.array([f[1] for f in found], np.float32),
        class_names=[f[0] for f in found],
    )


THRESHOLDS = {"cat": 0.5, "dog": 0.5}


# --- the uncertainty of one frame ---------------------------------------------------------------


def test_a_detection_at_the_threshold_is_the_most_uncertain():
    assert near_threshold(0.5, 0.5) == 1.0
    assert near_threshold(0.25, 0.5) == 0.5 and near_threshold(0.75, 0.5) == 0.5
    assert near_threshold(0.0, 0.3) == 0.0 and near_threshold(1.0, 0.3) == 0.0
    assert near_threshold(0.65, 0.3) == pytest.approx(0.5)

    score = frame_uncertainty(detections(("cat", 0.98), ("dog", 0.55, FAR_BOX)), THRESHOLDS)
    assert score.near_threshold == pytest.approx(0.9)
    assert score.uncertainty == pytest.approx(0.04 + 0.9)  # the sum over the two objects
    assert score.reason == "near the threshold: dog at 0.55 (threshold 0.50)"
    assert (score.objects, score.detections, score.confident) == (2, 2, 2)
    assert score.nothing_confident == 0.0


def test_uncertain_objects_add_up_and_faint_boxes_do_not_count():
    boxes = ([0.0, 0.0, 0.2, 0.2], [0.3, 0.3, 0.5, 0.5], [0.6, 0.6, 0.8, 0.8])
    three = detections(*[("cat", 0.5, box) for box in boxes])
    assert frame_uncertainty(three, THRESHOLDS).uncertainty == pytest.approx(3.0)
    # a detector gives out dozens of faint boxes: under half the threshold, not objects
    faint = [("dog", 0.2, [0.05 * k, 0.0, 0.05 * k + 0.04, 0.04]) for k in range(20)]
    one = frame_uncertainty(detections(("cat", 0.5, boxes[0]), *faint), THRESHOLDS)
    assert (one.objects, one.detections) == (1, 21) and one.uncertainty == pytest.approx(1.0)


def test_two_classes_on_one_object_are_a_confusion():
    score = frame_uncertainty(
        detections(("cat", 0.95), ("dog", 0.9, NEAR_BOX)), {"cat": 0.5, "dog": 0.2}
    )
    assert score.confusion == pytest.approx(0.9 / 0.95, abs=1e-4)
    assert score.uncertainty == score.confusion
    assert score.reason == "class confusion: cat 0.95 or dog 0.90 on one object"
    # apart, or of one class, or the stronger far below its threshold: no confusion
    apart = detections(("cat", 0.95), ("dog", 0.9, [0.7, 0.7, 0.9, 0.9]))
    assert frame_uncertainty(apart, THRESHOLDS).confusion == 0
    same = detections(("cat", 0.95), ("cat", 0.9, NEAR_BOX))
    assert frame_uncertainty(same, THRESHOLDS).confusion == 0
    weak = detections(("cat", 0.2), ("dog", 0.2, NEAR_BOX))
    assert frame_uncertainty(weak, THRESHOLDS).confusion == 0


def test_a_frame_without_a_confident_detection_is_uncertain():
    empty = frame_uncertainty(detections(), THRESHOLDS)
    assert empty.uncertainty == 1.0 and empty.nothing_confident == 1.0
    assert empty.reason == "no detection reaches its threshold (nothing detected)"
    faint = frame_uncertainty(detections(("cat", 0.1)), THRESHOLDS)
    assert faint.nothing_confident == pytest.approx(0.8)
    assert faint.reason == "no detection reaches its threshold (best 0.10)"
    certain = frame_uncertainty(detections(("cat", 1.0)), THRESHOLDS)
    assert certain.uncertainty == 0 and certain.reason == "certain"


def test_per_class_thresholds_are_used_for_their_class():
    found = detections(("cat", 0.3), ("dog", 0.3, [0.7, 0.7, 0.9, 0.9]))
    score = frame_uncertainty(found, {"cat": 0.3, "dog": 0.6})
    assert score.near_threshold == 1.0 and score.confident == 1
    assert "cat at 0.30 (threshold 0.30)" in score.reason


# --- diversity ----------------------------------------------------------------------------------


def picture(seed, noise=0.0, size=(H, W)) -> np.ndarray:
    """A random picture per seed; `noise` > 0 makes a near-duplicate of it."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (*size, 3)).astype(np.float64)
    if noise:
        base += np.random.default_rng(1000 + int(noise * 1000) + seed).normal(0, noise, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_embeddings_tell_near_duplicates_from_other_frames():
    a, a_again, a_brighter, b = (
        embed(picture(1)),
        embed(picture(1, noise=4)),
        embed(np.clip(picture(1).astype(int) + 30, 0, 255).astype(np.uint8)),
        embed(picture(2)),
    )
    assert np.linalg.norm(a - a_again) < 0.1
    assert np.linalg.norm(a - a_brighter) < 0.1  # centred: brightness does not count
    assert np.linalg.norm(a - b) > 1.0
    assert not embed(np.full((H, W, 3), 128, np.uint8)).any()  # a flat picture: zeros


def test_near_duplicates_are_not_all_picked():
    # frames 0-3: one scene again and again, the most uncertain; 4 and 5: two other scenes
    vectors = np.stack(
        [embed(picture(1, noise=n)) for n in (0, 2, 3, 4)] + [embed(picture(2)), embed(picture(3))]
    )
    uncertainty = np.array([0.9, 0.95, 0.9, 0.9, 0.5, 0.3])

    picks = select_diverse(uncertainty, vectors, 3, radius=0.5)

    assert [p.position for p in picks] == [1, 4, 5]
    assert picks[0].distance is None and all(p.distance > 1.0 for p in picks[1:])
    # without diversity: uncertainty alone, the duplicates first (ties to the earlier frame)
    plain = select_diverse(uncertainty, vectors, 3, radius=0)
    assert [p.position for p in plain] == [1, 0, 2]


def test_certain_frames_fill_the_list_when_uncertain_ones_run_out():
    vectors = np.stack([embed(picture(seed)) for seed in range(4)])
    picks = select_diverse(np.array([0.0, 0.8, 0.0, 0.0]), vectors, 10, radius=0.5)
    assert [p.position for p in picks][:1] == [1] and len(picks) == 4
    assert sorted(p.position for p in picks) == [0, 1, 2, 3]


# --- against the CVAT stand-in -----------------------------------------------------------------


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


class PicturePredictor:
    """Detections per picture (its pixels), as given; records what it was asked about."""

    def __init__(self, answers: dict[bytes, Detections]):
        self.label_map = LabelMap(NAMES)
        self.has_masks = False
        self.description = {"source": "fake", "preset": "none", "global_step": 7}
        self.answers = answers
        self.asked = []

    def predict(self, image):
        self.asked.append(image.tobytes())
        return self.answers[image.tobytes()]


@pytest.fixture()
def server():
    with CvatMockServer() as server:
        yield server


# frame: (picture, detections). 0 and 1 near-duplicates (1 the most uncertain), 2 annotated in
# CVAT, 3 nothing found, 4 nearly certain, 5 a confusion.
SCENES = [
    (picture(10), detections(("cat", 0.52))),
    (picture(10, noise=3), detections(("cat", 0.5))),
    (picture(11), detections(("dog", 0.5))),
    (picture(12), detections()),
    (picture(13), detections(("dog", 0.95))),
    (picture(14), detections(("cat", 0.8), ("dog", 0.75, NEAR_BOX))),
]


def add_scenes(server, task_id=7, annotated=(2,)):
    frames = [(f"dir/img_{i}.png", png(p)) for i, (p, _) in enumerate(SCENES)]
    server.add_project(3)
    server.add_task(task_id, labels=["cat", ("dog", "rectangle")], frames=frames)
    for frame in annotated:
        label = server.label_id(task_id, "cat")
        server.add_shapes(
            task_id,
            {"type": "rectangle", "frame": frame, "label_id": label, "points": [1, 1, 5, 5]},
        )
    return frames


def predictor_for_scenes():
    return PicturePredictor({p.tobytes(): d for p, d in SCENES})


def run(tmp_path, predictor, out="out", **options):
    result = run_select_frames(
        "unused-model-dir",
        str(tmp_path / out / "ranking"),
        str(tmp_path / out / "report.md"),
        predictor=predictor,
        retry_delay=0.01,
        poll_interval=0.01,
        **options,
    )
    assert set(result.metadata) == {"ranking"}
    ranking = json.loads((tmp_path / out / "ranking" / "ranking.json").read_text())
    report = (tmp_path / out / "report.md").read_text(encoding="utf-8")
    return result.metadata["ranking"], ranking, report


def test_a_task_s_unannotated_frames_are_ranked_and_written(server, tmp_path, env):
    add_scenes(server)
    predictor = predictor_for_scenes()

    metadata, ranking, report = run(tmp_path, predictor, cvat_url=server.url, task_id="7", top_n=4)

    # frame 2 carries a shape: not predicted; the frames came in one chunk, as preannotate's do
    assert SCENES[2][0].tobytes() not in predictor.asked and len(predictor.asked) == 5
    fetched = [r.query for r in server.calls("GET", r"/api/tasks/7/data/?")]
    assert [(q["type"], q["number"], q["quality"]) for q in fetched] == [("chunk", "0", "original")]
    assert [(s["frame"], s["rank"]) for s in ranking["selected"]] == [
        (1, 1),
        (3, 2),
        (5, 3),
        (4, 4),
    ]
    first, second, third, fourth = ranking["selected"]
    assert first["uncertainty"] == 1.0 and first["name"] == "dir/img_1.png"
    assert first["distance_to_earlier_pick"] is None
    assert second["reason"] == "no detection reaches its threshold (nothing detected)"
    assert third["reason"].startswith("class confusion: cat 0.80 or dog 0.75")
    assert fourth["reason"] == "near the threshold: dog at 0.95 (threshold 0.50)"
    # frame 0, as uncertain as frame 4 is certain, lost to it: a near-duplicate of frame 1
    frame_0 = next(f for f in ranking["frames"] if f["frame"] == 0)
    assert frame_0["rank"] is None and frame_0["nearest_pick"] == 1
    assert frame_0["nearest_pick_distance"] < 0.1
    assert [f["frame"] for f in ranking["frames"]] == [0, 1, 3, 4, 5]
    assert ranking["source"] == {
        "kind": "cvat_task",
        "task_id": 7,
        "task_name": "task 7",
        "frames": 6,
        "deleted": 0,
        "annotated": 1,
        "candidates": 5,
        "earlier_selection_tasks": [],
    }
    assert ranking["thresholds"] == {"cat": 0.5, "dog": 0.5} and ranking["cvat_task"] is None
    thumbnail = tmp_path / "out" / "ranking" / first["thumbnail"]
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.width == 160

    assert metadata["frames_ranked"] == 5 and metadata["selected"] == 4
    assert metadata["annotated_frames_left_out"] == 1 and metadata["task_id"] == 7
    assert metadata["selected_by_reason"] == {
        "class confusion": 1,
        "near the threshold": 2,
        "no detection reaches its threshold": 1,
    }
    assert "# What to label next: CVAT task 7" in report
    assert "| frames ranked | 5 of 6; 1 annotated left out |" in report
    assert "| 1 | frame 1 (dir/img_1.png) | 1.000 | near the threshold: cat at 0.50" in report
    assert report.count("](data:image/jpeg;base64,") == 4
    assert "1 frame(s) not selected lie within the radius of a selected one" in report
    assert not server.calls("POST", r"/api/tasks")  # no create_task: nothing created


def test_frames_all_ranks_annotated_frames_too(server, tmp_path, env):
    add_scenes(server)
    _, ranking, _ = run(
        tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7", top_n=2, frames="all"
    )
    assert len(ranking["frames"]) == 6 and ranking["source"]["annotated"] == 0


def test_a_task_whose_frames_are_all_annotated_says_so(server, tmp_path, env):
    add_scenes(server, annotated=range(6))
    with pytest.raises(ValueError, match='no frame to rank .*frames="all"'):
        run(tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7")


def test_tracks_annotate_the_frames_they_span(server, tmp_path, env):
    add_scenes(server, annotated=())
    cat = server.label_id(7, "cat")
    server.annotations[7]["tracks"].append(
        {
            "id": 1,
            "frame": 1,
            "label_id": cat,
            "group": None,
            "source": "manual",
            "attributes": [],
            "elements": [],
            "shapes": [
                {**track_shape(1), "outside": False},
                {**track_shape(3), "outside": True},  # the track ends before frame 3
            ],
        }
    )
    _, ranking, _ = run(tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7")
    assert [f["frame"] for f in ranking["frames"]] == [0, 3, 4, 5]


def track_shape(frame):
    return {
        "id": frame,
        "type": "rectangle",
        "frame": frame,
        "points": [1, 1, 5, 5],
        "occluded": False,
        "outside": False,
        "z_order": 0,
        "rotation": 0.0,
        "attributes": [],
    }


def test_the_selection_becomes_a_cvat_task_once(server, tmp_path, env, caplog):
    caplog.set_level(logging.INFO)
    frames = add_scenes(server)

    metadata, ranking, report = run(
        tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7", top_n=3,
        create_task=True,
    )  # fmt: skip

    made = ranking["cvat_task"]
    assert made["created"] and made["matches"] and made["frames"] == 3
    new_id = made["task_id"]
    assert new_id != 7 and metadata["selection_task_id"] == new_id
    assert made["name"].startswith("select_frames: 3 frames of task 7 (")
    # its frames: the originals of frames 1, 3 and 5, in rank order, named after them
    held = server.frames[new_id]
    assert [f.name for f in held] == [
        "0001_frame000001_img_1.png",
        "0002_frame000003_img_3.png",
        "0003_frame000005_img_5.png",
    ]
    assert [f.data for f in held] == [frames[1][1], frames[3][1], frames[5][1]]
    # labels copied from the source task, types kept
    labels = {lb["name"]: lb["type"] for lb in server.labels.values() if lb["task_id"] == new_id}
    assert labels == {"cat": "any", "dog": "rectangle"}
    assert (
        f"| CVAT task with the selection | {new_id} (" in report and "created, 3 frame(s)" in report
    )
    # the request status of the task's creation was followed to the end
    assert server.exports[f"action=create&target=task&target_id={new_id}"].status == "finished"

    # a second run (a retried pipeline step) finds the task and creates nothing
    metadata, ranking, report = run(
        tmp_path, predictor_for_scenes(), out="again", cvat_url=server.url, task_id="7", top_n=3,
        create_task=True,
    )  # fmt: skip
    assert len(server.calls("POST", r"/api/tasks")) == 1
    assert len(server.calls("POST", r"/api/tasks/\d+/data/?")) == 3  # start, files, finish
    assert ranking["cvat_task"] == {**made, "created": False}
    assert metadata["selection_task_created"] is False
    assert "found from an earlier run (not created again)" in report


def test_a_selection_task_left_without_frames_gets_them(server, tmp_path, env):
    add_scenes(server)
    server.fail("POST", "/api/tasks/8/data/", 400)  # uploading to the new task fails once
    with pytest.raises(Exception, match="could not upload 3 frame"):
        run(tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7", top_n=3,
            create_task=True)  # fmt: skip
    assert len(server.tasks) == 2 and server.tasks[8]["size"] == 0

    _, ranking, report = run(
        tmp_path, predictor_for_scenes(), out="again", cvat_url=server.url, task_id="7", top_n=3,
        create_task=True,
    )  # fmt: skip
    assert len(server.tasks) == 2 and server.tasks[8]["size"] == 3
    assert ranking["cvat_task"]["task_id"] == 8 and not ranking["cvat_task"]["created"]
    assert "uploaded now" in ranking["cvat_task"]["note"] and "uploaded now" in report


def test_a_project_given_gives_the_new_task_its_labels(server, tmp_path, env):
    add_scenes(server)
    _, ranking, _ = run(
        tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7", top_n=2,
        create_task=True, project_id="3",
    )  # fmt: skip
    new_id = ranking["cvat_task"]["task_id"]
    assert server.tasks[new_id]["project_id"] == 3
    assert not [lb for lb in server.labels.values() if lb["task_id"] == new_id]


# --- a folder of images -------------------------------------------------------------------------


def test_a_folder_is_ranked_and_a_bad_file_counted(tmp_path, env):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, (p, _) in enumerate(SCENES):
        Image.fromarray(p).save(folder / ("sub" if i % 2 else "") / f"f{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image name")

    metadata, ranking, report = run(
        tmp_path, predictor_for_scenes(), images_dir=str(folder), top_n=2
    )

    assert [f["name"] for f in ranking["frames"]] == [
        "f0.png", "f2.png", "f4.png", "sub/f1.png", "sub/f3.png", "sub/f5.png",
    ]  # fmt: skip
    assert "frame" not in ranking["frames"][0]
    assert [s["name"] for s in ranking["selected"]] == ["f2.png", "sub/f1.png"]  # tie: path order
    assert list(ranking["source"]["unreadable"]) == ["broken.jpg"]
    assert metadata["source"] == "folder" and metadata["frames_ranked"] == 6
    assert "(1 unreadable file(s) left out)" in report


def test_a_folder_selection_becomes_a_task_with_the_model_s_labels(server, tmp_path, env):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (p, _) in enumerate(SCENES):
        Image.fromarray(p).save(folder / f"f{i}.png")
    _, ranking, _ = run(
        tmp_path, predictor_for_scenes(), images_dir=str(folder), top_n=2, cvat_url=server.url,
        create_task=True,
    )  # fmt: skip
    new_id = ranking["cvat_task"]["task_id"]
    assert ranking["cvat_task"]["name"].startswith("select_frames: 2 frames of images (")
    assert [f.name for f in server.frames[new_id]] == ["0001_f1.png", "0002_f2.png"]
    labels = {lb["name"]: lb["type"] for lb in server.labels.values() if lb["task_id"] == new_id}
    assert labels == {"cat": "any", "dog": "any"}


# --- bad options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "either task_id .* or images_dir .*, not neither"),
        ({"task_id": "7", "images_dir": "x"}, "not both"),
        ({"task_id": "seven"}, "task_id must be a positive integer"),
        ({"task_id": "7"}, "cvat_url is empty but task_id needs CVAT"),
        ({"images_dir": "x", "create_task": True}, "cvat_url is empty but create_task"),
        ({"images_dir": "x", "top_n": 0}, "top_n must be a positive integer"),
        (
            {"images_dir": "x", "score_threshold": 1.5},
            r"score_threshold must be in \[0, 1\], or -1",
        ),
        ({"images_dir": "x", "frames": "some"}, "frames must be one of 'unannotated', 'all'"),
        ({"images_dir": "x", "diversity_radius": -1}, "diversity_radius must be >= 0"),
        ({"images_dir": "x", "project_id": "p"}, "project_id must be a positive integer"),
        ({"images_dir": "/nonexistent/folder"}, "is not a folder"),
    ],
)
def test_options_are_checked_first(tmp_path, env, options, message):
    with pytest.raises(ValueError, match=message):
        run(tmp_path, predictor_for_scenes(), **options)


def test_a_missing_task_is_named(server, tmp_path, env):
    with pytest.raises(Exception, match="task 99 not found"):
        run(tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="99")


def test_credentials_come_from_the_environment_only(server, tmp_path, env):
    env.delenv("CVAT_ACCESS_TOKEN")
    with pytest.raises(Exception, match="no CVAT credentials in the environment"):
        run(tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7")


def test_thresholds_of_0_and_1_do_not_divide_by_zero():
    assert near_threshold(0.0, 0.0) == 1.0 and near_threshold(0.4, 0.0) == pytest.approx(0.6)
    assert near_threshold(1.0, 1.0) == 1.0 and near_threshold(0.4, 1.0) == pytest.approx(0.4)
    score = frame_uncertainty(detections(("cat", 0.4)), {"cat": 1.0, "dog": 0.0})
    assert score.nothing_confident == pytest.approx(0.6)


def test_frames_in_earlier_selection_tasks_are_not_picked_again(server, tmp_path, env):
    add_scenes(server)
    first = run(
        tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7", top_n=2,
        create_task=True,
    )[1]["cvat_task"]  # fmt: skip
    assert first["task_id"] == 8 and [f.name[:12] for f in server.frames[8]] == [
        "0001_frame00",
        "0002_frame00",
    ]
    server.add_task(9, labels=["cat"], frames=[("0001_frame000004_x.png", png(SCENES[4][0]))])

    # the next round (here: a longer list) leaves out frames 1 and 3, which task 8 holds, and
    # frame 0, a near-duplicate of frame 1, comes last; task 9 is named like no selection task,
    # so its frame names mean nothing
    metadata, ranking, report = run(
        tmp_path, predictor_for_scenes(), out="next", cvat_url=server.url, task_id="7", top_n=3,
        create_task=True,
    )  # fmt: skip

    assert [s["frame"] for s in ranking["selected"]] == [5, 4, 0]
    assert ranking["selected"][0]["distance_to_earlier_pick"] > 1  # from frames 1 and 3
    held = {f["frame"]: f.get("in_selection_task") for f in ranking["frames"]}
    assert held == {0: None, 1: 8, 3: 8, 4: None, 5: None}
    assert ranking["source"]["earlier_selection_tasks"] == [8]
    assert ranking["cvat_task"]["created"] and ranking["cvat_task"]["task_id"] == 10
    assert metadata["in_earlier_selection_tasks"] == 2
    assert "2 in earlier selection tasks (8) not picked again" in report

    # a third run like the second finds its own task 10 (and leaves out task 8's frames)
    _, again, _ = run(
        tmp_path, predictor_for_scenes(), out="third", cvat_url=server.url, task_id="7", top_n=3,
        create_task=True,
    )  # fmt: skip
    assert again["cvat_task"]["task_id"] == 10 and not again["cvat_task"]["created"]
    assert [s["frame"] for s in again["selected"]] == [5, 4, 0]
    assert len(server.tasks) == 4


def test_nothing_left_outside_earlier_selections_says_so(server, tmp_path, env):
    add_scenes(server, annotated=(0, 2, 4, 5))
    run(tmp_path, predictor_for_scenes(), cvat_url=server.url, task_id="7", top_n=2,
        create_task=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"already in an earlier selection task \(tasks 8\)"):
        run(tmp_path, predictor_for_scenes(), out="next", cvat_url=server.url, task_id="7",
            top_n=1)  # fmt: skip


def test_the_model_s_calibrated_thresholds_are_the_default(tmp_path, env):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(SCENES[0][0]).save(folder / "f0.png")
    model_dir = tmp_path / "exported"
    model_dir.mkdir()
    table = {"classes": [{"name": "cat", "threshold": 0.52}, {"name": "dog", "threshold": 0.3}]}
    (model_dir / "export.json").write_text(json.dumps({"score_thresholds": table}))

    def ranked(**options):
        result = run_select_frames(
            str(model_dir), str(tmp_path / "out"), str(tmp_path / "report.md"),
            images_dir=str(folder), predictor=predictor_for_scenes(), **options,
        )  # fmt: skip
        ranking = json.loads((tmp_path / "out" / "ranking.json").read_text())
        return result.metadata["ranking"], ranking, (tmp_path / "report.md").read_text()

    metadata, ranking, report = ranked()  # frame 0: cat at 0.52, now right at its threshold
    assert ranking["thresholds"] == {"cat": 0.52, "dog": 0.3}
    assert ranking["thresholds_source"] == metadata["thresholds_source"] == "calibrated"
    assert ranking["selected"][0]["near_threshold"] == 1.0
    assert "per class, calibrated on the validation split: cat 0.520, dog 0.300" in report

    _, given, report = ranked(score_threshold=0.6)
    assert given["thresholds"] == {"cat": 0.6, "dog": 0.6} and "| 0.6 (given) |" in report
    (model_dir / "export.json").write_text("{}")
    _, default, report = ranked()
    assert default["thresholds_source"] == "default" and "0.5 (default: the model" in report
