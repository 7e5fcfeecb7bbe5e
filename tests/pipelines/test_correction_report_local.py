"""correction-report end to end under kfp.local against the CVAT stand-in: a task pre-annotated
(preannotate's own code, a laid-out predictor instead of a model), reviewed by the scripted
annotator, then the pipeline imports the predictions, exports the task as CVAT for images 1.1
and measures; its three outputs land in the run."""

import io
from functools import partial

import pytest

from cvat_kfp.components.preannotate.preannotate import run_preannotate
from cvat_kfp.pipelines.local_run import run_locally
from cvat_kfp.pipelines.parameters import ParameterError
from tests.components.export_annotations.cvat_mock_server import CvatMockServer
from tests.components.measure_corrections.synthetic_review import (
    LaidOutPredictor,
    add_task,
    review,
)

pytestmark = pytest.mark.slow  # runs a pipeline

RATES = {"move": 0.25, "relabel": 0.125, "delete": 0.125}


def test_the_reviewed_task_is_measured(tmp_path, monkeypatch):
    for name in ("CVAT_USERNAME", "CVAT_PASSWORD", "CVAT_ORGANIZATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "test-token")  # the stage processes inherit it
    console = io.StringIO()
    with CvatMockServer(polls_to_finish=1) as cvat:
        add_task(cvat, 9, 8, seed=4)
        predictions = tmp_path / "predictions"
        preannotate = partial(run_preannotate, "unused", str(predictions), str(tmp_path / "r.md"))
        preannotate(cvat.url, "9", predictor=LaidOutPredictor(8, 4), retry_delay=0.01)
        done = review(cvat, 9, predictions, RATES, added=3, seed=4)
        run = run_locally(
            "correction_report",
            {"predictions_uri": str(predictions), "cvat_url": cvat.url, "task_id": "9"},
            tmp_path / "runs",
            console=console,
        )
        (export,) = [r for r in cvat.requests if r.path == "/api/tasks/9/dataset/export"]

    assert export.query["format"] == "CVAT for images 1.1"
    for stage in ("import-predictions", "export-reviewed-task", "measure-corrections"):
        assert f"✓ {stage}" in console.getvalue()
    metrics = run.find_metadata("metrics", "measure-corrections")
    assert metrics["kept"] == done.count("keep") and metrics["added_by_hand"] == 3
    assert metrics["deleted"] == done.count("delete")
    assert all(isinstance(value, float) for value in metrics.values())  # numbers only
    assert run.find_metadata("report", "measure-corrections")["task_id"] == 9
    report = run.find("report", "measure-corrections").read_text()
    assert f"| kept unchanged | {done.count('keep')} (" in report
    html = run.find("report_html", "measure-corrections").read_text()
    assert html.count("data:image/jpeg;base64,") == 2 * min(12, len(done.changed_frames))


def test_a_missing_predictions_folder_is_named_before_anything_runs(tmp_path):
    with pytest.raises(ParameterError, match="predictions_uri .*preannotate step's `predictions`"):
        run_locally(
            "correction_report",
            {"predictions_uri": str(tmp_path / "nowhere"), "cvat_url": "http://x", "task_id": "1"},
            tmp_path / "runs",
            console=io.StringIO(),
        )
