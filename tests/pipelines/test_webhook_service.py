"""`cvat-kfp webhook serve` over real HTTP: CVAT's deliveries (signed as CVAT signs them), the
CVAT stand-in for the jobs' states, the KFP stand-in receiving the training run."""

import json
import sqlite3
import time

import pytest
import requests
import yaml

from cvat_kfp.pipelines.webhook.cvat_state import annotation_version, task_annotation_digest
from tests.components.export_annotations.cvat_mock_server import CvatMockServer
from tests.pipelines.kfp_mock_server import KfpServer
from tests.pipelines.webhook_service import (
    KFP_TOKEN,
    RUNS_TOKEN,
    WebhookService,
    cvat_signature,
    free_port,
    job_event,
    task_event,
    wait_for,
)

PROJECT_RULE = """
rules:
  - project: 7
    pipeline: tfod_training
    preset: retinanet-mobilenetv2-light
    hyperparameters: {num_steps: 2000, batch_size: 8}
    checkpoint_root: gs://bucket/checkpoints
    preannotate: next-unannotated
    parameters: {gpu_count: 2, completed_jobs_only: true}
"""


def annotation_digest(tasks):
    """The version the service gives these (task id, annotations JSON) pairs."""
    return annotation_version((task_id, task_annotation_digest(held)) for task_id, held in tasks)


BOX = {"type": "rectangle", "frame": 0, "points": [1.0, 2.0, 30.0, 40.0]}


@pytest.fixture()
def cvat():
    with CvatMockServer() as server:
        server.add_project(7)
        # task 12: two annotation jobs in progress and a ground-truth job; it holds a box
        server.add_task(12, project_id=7, jobs={1201: "in progress", 1202: "in progress"},
                        labels=["car"])  # fmt: skip
        server.add_job(1203, 12, "new", type="ground_truth")
        server.add_shapes(12, {**BOX, "label_id": server.label_id(12, "car")})
        server.add_task(13, project_id=7, jobs={1301: "new"}, labels=["car"])  # no annotations
        server.add_task(14, project_id=7, jobs={1401: "new"}, labels=["car"])
        yield server


@pytest.fixture()
def kfp():
    server = KfpServer(required_token=KFP_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture()
def service(tmp_path, cvat, kfp):
    started = []

    def make(rules=PROJECT_RULE, kfp_url=None, **options):
        svc = WebhookService(tmp_path, rules, cvat.url, kfp_url or kfp.url, **options)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


def _complete(cvat, *job_ids):
    for job_id in job_ids:
        cvat.update_job(job_id, state="completed", stage="acceptance")


def test_all_jobs_completed_becomes_one_training_run_with_no_human_step(cvat, kfp, service):
    svc = service().start()
    svc.wait_for_log("not training yet (reconciliation)")  # the start-up pass saw open jobs

    _complete(cvat, 1201)
    started = time.monotonic()
    answer = svc.deliver(job_event(cvat, 1201))
    assert answer.status_code == 202 and time.monotonic() - started < 1.0
    svc.wait_for_log("task 12: 1 of 2 annotation job(s) completed; not training yet (update:job")
    assert kfp.state.runs == {}

    _complete(cvat, 1202)
    last = job_event(cvat, 1202)
    started = time.monotonic()
    assert svc.deliver(last).status_code == 202
    assert time.monotonic() - started < 1.0
    wait_for(lambda: kfp.state.runs, f"a run on the KFP stand-in; log:\n{svc.log()}")

    (run,) = kfp.state.runs.values()
    version = annotation_digest([(12, cvat.annotations[12])])
    assert run["display_name"] == f"tfod_training for CVAT task 12, annotations {version}"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "tfod-training"
    assert run["runtime_config"]["parameters"] == {
        "cvat_url": cvat.url,
        "task_ids": "12",
        "preset": "retinanet-mobilenetv2-light",
        "hyperparameters": "num_steps: 2000\nbatch_size: 8",
        "checkpoint_root": "gs://bucket/checkpoints",
        "gpu_count": 2,
        "completed_jobs_only": True,
        "preannotate_task_id": "13",  # the project's first task without annotations
    }
    assert [e["display_name"] for e in kfp.state.experiments.values()] == ["cvat-kfp"]
    wait_for(lambda: svc.runs() and svc.runs()[0]["state"] == "submitted", "the record")
    (record,) = svc.runs()
    assert record["key"] == f"task:12@{version}"
    assert record["run_id"] == run["run_id"]
    assert record["run_url"] == f"{kfp.url}/#/runs/details/{run['run_id']}"

    # CVAT redelivers, and sends the task's own update: nothing more is submitted
    assert svc.deliver(last).status_code == 202
    svc.wait_for_log(f"annotations {version} already handled (submitted, run run-1)")
    assert svc.deliver(task_event(cvat, 12)).status_code == 202
    svc.wait_for_log(f"annotations {version} already handled (submitted", count=2)
    assert len(kfp.state.runs) == 1
    assert "webhook-secret-for-tests" not in svc.log() and "test-token" not in svc.log()


def test_only_changed_annotations_train_again(cvat, kfp, service):
    """A completed job reopened, reassigned or completed again moves its updated_date but not
    the annotations: no second run. An edited shape is a new version: one more run."""
    svc = service().start()
    _complete(cvat, 1201, 1202)
    assert svc.deliver(job_event(cvat, 1202)).status_code == 202
    wait_for(lambda: kfp.state.runs, f"the first run; log:\n{svc.log()}")
    first = annotation_digest([(12, cvat.annotations[12])])
    reads = len(cvat.calls("GET", "/api/tasks/12/annotations"))

    assert svc.deliver(job_event(cvat, 1202)).status_code == 202  # redelivered: no job moved
    svc.wait_for_log(f"annotations {first} already handled (submitted, run run-1); not submitting")
    assert len(cvat.calls("GET", "/api/tasks/12/annotations")) == reads  # not read again

    cvat.update_job(1202, state="in progress")
    _complete(cvat, 1202)  # reopened and completed again, nothing edited
    assert svc.deliver(job_event(cvat, 1202)).status_code == 202
    svc.wait_for_log(
        f"annotations {first} already handled (submitted, run run-1); not submitting", count=2
    )
    assert len(kfp.state.runs) == 1

    (shape,) = cvat.shapes(12)
    cvat.edit_shape(12, shape["id"], points=[1.0, 2.0, 35.0, 40.0])  # in the completed job
    assert svc.deliver(job_event(cvat, 1202)).status_code == 202
    wait_for(lambda: len(kfp.state.runs) == 2, f"the second run; log:\n{svc.log()}")
    second = annotation_digest([(12, cvat.annotations[12])])
    assert second != first
    names = sorted(run["display_name"] for run in kfp.state.runs.values())
    assert names == sorted(f"tfod_training for CVAT task 12, annotations {v}"
                           for v in (first, second))  # fmt: skip


def test_the_annotation_version_follows_the_annotations_not_their_order():
    shape = {"id": 1, "type": "rectangle", "points": [1, 2, 3, 4]}
    other = {"id": 2, "type": "polygon", "points": [1, 2, 3, 4, 5, 6]}
    held = {"version": 0, "tags": [], "shapes": [shape, other], "tracks": []}
    version = annotation_digest([(12, held)])
    assert version.startswith("sha256:") and len(version) == len("sha256:") + 16
    reordered = {"version": 3, "tags": [], "shapes": [other, shape], "tracks": []}
    assert annotation_digest([(12, reordered)]) == version  # CVAT's version field aside
    moved = {**held, "shapes": [shape, {**other, "points": [1, 2, 3, 4, 5, 7]}]}
    assert annotation_digest([(12, moved)]) != version
    assert annotation_digest([(13, held)]) != version  # the same shapes in another task
    assert annotation_digest([(12, held), (13, held)]) != version


def test_bad_deliveries_get_4xx_and_change_nothing(cvat, kfp, service):
    svc = service().start()
    payload = job_event(cvat, 1201)
    body = json.dumps(payload).encode()

    unsigned = svc.deliver(payload, sign=False)
    assert unsigned.status_code == 401 and "X-Signature-256" in unsigned.json()["detail"]
    wrong_secret = svc.deliver(payload, secret="another-secret")
    assert wrong_secret.status_code == 403
    tampered = body.replace(b'"task_id": 12', b'"task_id": 13')
    assert tampered != body
    forged = svc.deliver(body=tampered, signature=cvat_signature(svc.secret, body))
    assert forged.status_code == 403
    assert svc.deliver(body=b"A" * (1024 * 1024 + 1)).status_code == 413
    chunked = requests.post(  # no Content-Length: the cap holds while the body is read
        f"{svc.url}/webhook", data=iter([b"A" * 65536] * 17), timeout=10,
        headers={"X-Signature-256": "sha256=00", "Content-Type": "application/json"},
    )  # fmt: skip
    assert chunked.status_code == 413
    assert svc.deliver(body=b'{"event": "update:job", "job": ').status_code == 400
    assert svc.deliver({"job": {"task_id": 12}}).status_code == 400
    assert svc.deliver({"event": "update:job", "job": {"id": 5}}).status_code == 400

    unknown = svc.deliver({"event": "create:issue", "issue": {"id": 3}, "webhook_id": 1})
    assert unknown.status_code == 200 and "not one the service acts on" in unknown.json()["ignored"]
    ping = svc.deliver({"event": "ping", "webhook": {"id": 1}, "sender": None})
    assert ping.status_code == 200 and ping.json()["pong"] is True

    for status, text in [(401, "no X-Signature-256"), (403, "does not match"), (413, "over"),
                         (400, "not JSON"), (200, "create:issue")]:  # fmt: skip
        assert f" {status} " in svc.log() and text in svc.log()
    assert svc.runs() == [] and kfp.state.runs == {}
    assert not [r for r in cvat.requests if r.method != "GET"]


def test_runs_needs_the_bearer_token_and_healthz_does_not(service):
    svc = service().start()
    assert requests.get(f"{svc.url}/runs", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(f"{svc.url}/runs", headers=wrong, timeout=5).status_code == 401
    right = {"Authorization": f"Bearer {RUNS_TOKEN}"}
    assert requests.get(f"{svc.url}/runs", headers=right, timeout=5).json() == {"runs": []}
    assert requests.get(f"{svc.url}/healthz", timeout=5).json() == {"status": "ok"}


def test_a_project_with_no_rule_is_answered_and_ignored(cvat, kfp, service):
    cvat.add_project(9)
    cvat.add_task(90, project_id=9, jobs={9001: "completed"})
    svc = service().start()
    answer = svc.deliver(job_event(cvat, 9001))
    assert answer.status_code == 200
    assert "task 90 of project 9: no rule" in answer.json()["ignored"]
    assert "task 90 of project 9: no rule" in svc.log()
    time.sleep(0.5)
    assert svc.runs() == [] and kfp.state.runs == {}


def test_a_task_with_no_annotations_is_recorded_as_skipped_not_submitted(cvat, kfp, service):
    _complete(cvat, 1301)
    svc = service().start()
    assert svc.deliver(job_event(cvat, 1301)).status_code == 202
    svc.wait_for_log("task 13: 1 of 1 annotation job(s) completed, but no annotations in it")
    (record,) = wait_for(svc.runs, "the skipped record")
    assert record["state"] == "skipped" and record["run_id"] is None
    assert "nothing to train on" in record["last_error"]
    assert kfp.state.runs == {}


def test_kfp_down_then_up_submits_later_exactly_once(cvat, service):
    port = free_port()  # nothing listens there yet: KFP is down
    svc = service(kfp_url=f"http://127.0.0.1:{port}").start()
    _complete(cvat, 1201, 1202)
    assert svc.deliver(job_event(cvat, 1202)).status_code == 202
    svc.wait_for_log("submission attempt 2 failed (cannot reach")
    (record,) = svc.runs()
    assert record["state"] == "pending" and "cannot reach" in record["last_error"]

    kfp = KfpServer(required_token=KFP_TOKEN, port=port).start()
    try:
        wait_for(lambda: kfp.state.runs, f"the run once KFP is up; log:\n{svc.log()}")
        wait_for(lambda: svc.runs()[0]["state"] == "submitted", "the record")
        time.sleep(1.5)  # past the longest retry delay: no second submission
        assert len(kfp.state.runs) == 1
        assert svc.runs()[0]["run_id"] == next(iter(kfp.state.runs))
    finally:
        kfp.stop()


def test_a_restart_between_delivery_and_submission_submits_once(cvat, tmp_path, service):
    port = free_port()
    first = service(kfp_url=f"http://127.0.0.1:{port}").start()
    _complete(cvat, 1201, 1202)
    assert first.deliver(job_event(cvat, 1202)).status_code == 202
    first.wait_for_log("recorded, submitting")
    first.kill()  # crash: the intent is in SQLite, the run is not on the cluster

    kfp = KfpServer(required_token=KFP_TOKEN, port=port).start()
    try:
        second = service(kfp_url=kfp.url).start()
        wait_for(lambda: kfp.state.runs, f"the run after the restart; log:\n{second.log()}")
        second.wait_for_log("already handled (pending)")  # the start-up reconciliation
        assert len(kfp.state.runs) == 1
        assert [r["state"] for r in second.runs()] == ["submitted"]
    finally:
        kfp.stop()


def test_a_crash_after_submitting_but_before_recording_does_not_submit_again(
    cvat, kfp, tmp_path, service
):
    first = service().start()
    _complete(cvat, 1201, 1202)
    assert first.deliver(job_event(cvat, 1202)).status_code == 202
    wait_for(lambda: first.runs() and first.runs()[0]["state"] == "submitted", "the record")
    first.kill()
    # the state a crash right after the submit call leaves: the row still says pending
    with sqlite3.connect(first.database) as db:
        db.execute("UPDATE runs SET state = 'pending', run_id = NULL, run_url = NULL")

    second = service().start()
    second.wait_for_log("is already on the cluster")
    (record,) = second.runs()
    assert record["state"] == "submitted" and record["run_id"] == "run-1"
    assert len(kfp.state.runs) == 1
    lookups = [r for r in kfp.state.requests if r.method == "GET" and r.path.endswith("/runs")]
    predicate = json.loads(lookups[-1].query["filter"])["predicates"][0]
    assert predicate["key"] == "display_name" and predicate["operation"] == "EQUALS"


def test_reconciliation_catches_a_completion_whose_delivery_was_missed(cvat, kfp, service):
    rules = yaml.safe_load(PROJECT_RULE)
    rules["reconcile_interval_s"] = 1
    svc = service(rules=yaml.safe_dump(rules)).start()
    svc.wait_for_log("not training yet (reconciliation)")
    _complete(cvat, 1201, 1202)  # no delivery: this CVAT sends no job webhooks
    wait_for(lambda: kfp.state.runs, f"the reconciled run; log:\n{svc.log()}")
    (run,) = kfp.state.runs.values()
    assert run["runtime_config"]["parameters"]["task_ids"] == "12"


def test_a_project_rule_waits_for_every_task_and_trains_on_the_project(cvat, kfp, service):
    rules = """
rules:
  - project: 7
    scope: project
    when: acceptance
    pipeline: maskrcnn_training
    preannotate: 14
"""
    cvat.add_shapes(13, {**BOX, "label_id": cvat.label_id(13, "car")})
    svc = service(rules=rules).start()
    _complete(cvat, 1201, 1202)
    cvat.update_job(1301, stage="acceptance")  # in review: counts for `when: acceptance`
    assert svc.deliver(job_event(cvat, 1301)).status_code == 202
    svc.wait_for_log("project 7: 3 of 4 annotation job(s) completed or in acceptance")
    cvat.update_job(1401, state="completed")
    assert svc.deliver(job_event(cvat, 1401)).status_code == 202
    wait_for(lambda: kfp.state.runs, f"the project's run; log:\n{svc.log()}")
    (run,) = kfp.state.runs.values()
    parameters = run["runtime_config"]["parameters"]
    assert parameters == {"cvat_url": cvat.url, "project_ids": "7", "preannotate_task_id": "14"}
    version = annotation_digest([(t, cvat.annotations[t]) for t in (12, 13, 14)])
    assert run["display_name"] == f"maskrcnn_training for CVAT project 7, annotations {version}"


def test_cvat_failing_during_the_check_delays_the_run_and_loses_nothing(cvat, kfp, service):
    svc = service().start()
    svc.wait_for_log("not training yet (reconciliation)")
    _complete(cvat, 1201, 1202)
    cvat.fail("GET", "/api/tasks/12", 503, 503, 503, 503)  # more than one session's retries
    assert svc.deliver(job_event(cvat, 1202)).status_code == 202
    svc.wait_for_log("task 12: cannot check it in CVAT (could not read task 12")
    wait_for(lambda: kfp.state.runs, f"the run once CVAT answers; log:\n{svc.log()}")
    assert len(kfp.state.runs) == 1
