"""tfod-training end to end under kfp.local on a tiny CVAT COCO 1.0 export: a run killed during
training, re-run with the same checkpoint_uri, continues from its checkpoint and completes every
stage; a third run fine-tunes the result through the importer (init_model_uri).

The three runs share one module fixture chain, so the suite pays for each once (about 3 minutes
on 2 cores, most of it TensorFlow starting in each stage's process).
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvat_kfp.components.common.synthetic import SHAPES, make_shapes_dataset
from cvat_kfp.pipelines.cvat_export import write_cvat_coco_export
from cvat_kfp.pipelines.local_run import LocalRunError, run_locally
from tests.components.export_annotations.cvat_mock_server import CvatMockServer

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


NUM_STEPS = 30
HYPERPARAMETERS = (
    f"num_steps: {NUM_STEPS}\nbatch_size: 2\ninitial_learning_rate: 0.02\nwarmup_steps: 3\n"
    f"checkpoint_interval: 10\neval_interval: {NUM_STEPS}\nseed: 1\n"
)
KILL_TIMEOUT_S = 300


def _arguments(source: Path, **overrides) -> dict:
    return {
        "source": str(source),
        "preset": "retinanet-mobilenetv2-light",
        "hyperparameters": HYPERPARAMETERS,
        "pretrained_checkpoint_uri": "",
        "gpu_count": 0,
        "tflite": "no",
        "train_fraction": 0.5,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        **overrides,
    }


@pytest.fixture(scope="module")
def cvat_export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cvat_export")
    dataset = make_shapes_dataset(root / "shapes", num_images=16, image_size=(160, 120), seed=7)
    return write_cvat_coco_export(dataset, root / "task_export_coco_1.0.zip")


def _latest_step(checkpoint_uri: Path) -> int | None:
    latest = checkpoint_uri / "latest.json"
    try:
        return json.loads(latest.read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


def _killed_during_training(source: Path, checkpoint_uri: Path, work_dir: Path) -> int:
    """Start the pipeline in a child process, SIGKILL it with all its stage processes once
    training has put a checkpoint at checkpoint_uri; returns the step of that checkpoint."""
    command = [sys.executable, "-m", "cvat_kfp.pipelines.cli", "run", "tfod_training",
               "--work-dir", str(work_dir)]  # fmt: skip
    for name, value in _arguments(source, checkpoint_uri=str(checkpoint_uri)).items():
        command += ["--param", f"{name}={value}"]
    log = (work_dir.parent / "killed_run.log").open("w")
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while _latest_step(checkpoint_uri) is None:
            assert child.poll() is None, f"the run ended before a checkpoint: {log.name}"
            assert time.monotonic() < deadline, f"no checkpoint after {KILL_TIMEOUT_S} s"
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        log.close()
    return _latest_step(checkpoint_uri)


@pytest.fixture(scope="module")
def resumed_run(cvat_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("resumed")
    checkpoint_uri = root / "checkpoints"
    killed_at = _killed_during_training(cvat_export, checkpoint_uri, root / "killed")
    assert killed_at < NUM_STEPS

    console = io.StringIO()
    run = run_locally(
        "tfod_training",
        _arguments(cvat_export, checkpoint_uri=str(checkpoint_uri)),
        root / "runs",
        console=console,
    )
    return run, killed_at, checkpoint_uri, console.getvalue()


def test_every_stage_runs_and_reports_where_its_outputs_are(resumed_run):
    run, _, _, console = resumed_run

    model = run.find("model", "train-tfod")
    assert (model / "model.json").is_file()
    assert run.find_metadata("model", "train-tfod")["global_step"] == NUM_STEPS
    test_metrics = run.find_metadata("metrics", "evaluate-model")
    assert 0.0 <= test_metrics["AP"] <= 1.0
    assert (run.find("evaluation", "evaluate-model") / "metrics.json").is_file()
    assert run.find("report", "evaluate-model").is_file()
    exported = run.find("exported_model", "export-model")
    assert (exported / "saved_model" / "saved_model.pb").is_file()
    assert (exported / "label_map.json").is_file()
    assert run.find("model_card", "export-model").read_text().strip()
    # the score thresholds calibrated on the val split travel with the exported model
    assert json.loads((exported / "export.json").read_text())["score_thresholds"]["split"] == "val"
    assert "mean_F1_calibrated" in test_metrics
    # no pre-annotation without preannotate_task_id, no importer without init_model_uri
    assert not [task for task in run.outputs if task.startswith(("preannotate", "importer"))]
    # progress: a start and an end line per stage, then the output table
    stages = ("export-annotations", "split-dataset", "convert-test-to-tfrecord",
              "checkpoint-location", "train-tfod", "evaluate-model", "export-model")  # fmt: skip
    for stage in stages:
        assert f"▶ {stage}" in console and f"✓ {stage}" in console, stage
    assert str(exported) in console


def test_a_killed_run_continues_from_its_checkpoint(resumed_run):
    run, killed_at, checkpoint_uri, _ = resumed_run

    log = run.log_path.read_text()
    assert f"training from step {killed_at} to {NUM_STEPS}" in log
    assert "training from step 0 " not in log
    metadata = run.find_metadata("model", "train-tfod")
    assert metadata["checkpoint_uri"] == str(checkpoint_uri)
    assert _latest_step(checkpoint_uri) == NUM_STEPS


def test_fine_tunes_an_earlier_model_through_the_importer_then_preannotates_and_selects(
    resumed_run, cvat_export, tmp_path, monkeypatch
):
    parent = resumed_run[0].find("model", "train-tfod")
    hyperparameters = HYPERPARAMETERS.replace(f"num_steps: {NUM_STEPS}", "num_steps: 6")
    hyperparameters = hyperparameters.replace(f"eval_interval: {NUM_STEPS}", "eval_interval: 6")
    frames = _task_frames(tmp_path / "task")
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")  # the stage processes inherit it

    console = io.StringIO()
    with CvatMockServer() as cvat:
        cvat.add_task(5, labels=list(SHAPES), frames=[(f.name, f.read_bytes()) for f in frames])
        pool = _task_frames(tmp_path / "pool", seed=12, count=4)
        cvat.add_task(6, labels=list(SHAPES), frames=[(f.name, f.read_bytes()) for f in pool])
        run = run_locally(
            "tfod_training",
            _arguments(
                cvat_export,
                init_model_uri=str(parent),
                hyperparameters=hyperparameters,
                cvat_url=cvat.url,
                preannotate_task_id="5",
                preannotate_score_threshold=0.05,
                select_task_id="6",
                select_top_n=2,
                select_create_task=True,
            ),
            tmp_path / "runs",
            console=console,
        )
        uploaded = cvat.shapes(5)
        fetched = [
            (r.query["type"], int(r.query["number"]))
            for r in cvat.requests
            if "/tasks/5/data" in r.path and r.query.get("type") in ("frame", "chunk")
        ]
        selection_tasks = {i: t for i, t in cvat.tasks.items() if i not in (5, 6)}
        selection_frames = {i: [f.data for f in cvat.frames[i]] for i in selection_tasks}

    # the parent enters as an imported artifact (its lineage shows in the Kubeflow UI)
    assert "✓ import-init-model" in console.getvalue()
    assert [task for task in run.outputs if task.startswith("train-tfod")] == ["train-tfod"]
    metadata = run.find_metadata("model", "train-tfod")
    assert metadata["global_step"] == 6  # fine-tuning is a new run from step 0
    assert metadata["initial_weights"]["path"] == str(parent)
    assert run.find("exported_model", "export-model").is_dir()
    # the exported model pre-annotated every frame of the task: what was predicted was uploaded
    assert "✓ preannotate" in console.getvalue()
    assert fetched == [("chunk", 0)]  # an image task's frames come in CVAT's chunks
    predictions_file = run.find("predictions", "preannotate") / "predictions.json"
    predictions = json.loads(predictions_file.read_text())
    assert len(predictions["images"]) == len(frames)
    assert len(uploaded) == len(predictions["annotations"])
    assert {shape["type"] for shape in uploaded} <= {"rectangle"}
    # the new model ranked the pool task and put the 2 frames to label next in a new task
    assert "✓ select-frames" in console.getvalue()
    ranking = json.loads((run.find("ranking", "select-frames") / "ranking.json").read_text())
    assert len(ranking["frames"]) == len(pool) and len(ranking["selected"]) == 2
    assert run.find("report", "select-frames").read_text().count("data:image/jpeg") == 2
    ((task_id, task),) = selection_tasks.items()
    assert ranking["cvat_task"]["task_id"] == task_id and task["name"].startswith("select_frames")
    picked = [pool[s["frame"]].read_bytes() for s in ranking["selected"]]
    assert selection_frames[task_id] == picked


def _task_frames(root: Path, seed: int = 11, count: int = 3) -> list[Path]:
    """New images of the shapes the model learnt: the frames of a CVAT task to pre-annotate (or
    to select from)."""
    dataset = make_shapes_dataset(root, num_images=count, image_size=(200, 150), seed=seed)
    return sorted((dataset / "images").iterdir())


def test_a_failing_stage_is_named_with_its_own_error(tmp_path):
    not_an_export = tmp_path / "not_an_export"
    not_an_export.mkdir()
    (not_an_export / "notes.txt").write_text("no annotations here")
    console = io.StringIO()

    with pytest.raises(LocalRunError) as failure:
        run_locally("tfod_training", _arguments(not_an_export), tmp_path / "runs", console=console)

    message = str(failure.value)
    assert "stage 'export-annotations' failed" in message
    assert str(not_an_export) in failure.value.reason  # the stage's own error, from its log
    assert "✗ export-annotations" in console.getvalue()
