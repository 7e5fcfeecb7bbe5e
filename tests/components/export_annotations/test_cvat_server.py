"""Pulling exports from CVAT with cvat-sdk, against a local server speaking CVAT's REST API.

The stand-in's JSON goes through cvat-sdk's strict response models, so a shape the SDK would not
accept from a real server fails here too.
"""

import io
import json
import socket
import zipfile

import pytest
from PIL import Image

from cvat_kfp.components.export_annotations.cvat_server import (
    CvatServerError,
    ServerExport,
    export_from_cvat,
)

from .cvat_mock_server import CSRF_TOKEN, SESSION_ID, CvatMockServer

EXPORT = r"/api/(task|project|job)s/\d+/dataset/export"
FAST = {"poll_interval": 0.01, "retry_delay": 0.01}


def coco_zip(*file_names: str) -> bytes:
    """A small COCO 1.0 export as CVAT writes it: annotations/instances_default.json, images/."""
    images, annotations = [], []
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for image_id, name in enumerate(file_names, start=1):
            picture = io.BytesIO()
            Image.new("RGB", (8, 6), (image_id * 40, 90, 160)).save(picture, "JPEG")
            zf.writestr(f"images/default/{name}", picture.getvalue())
            images.append(
                {"id": image_id, "width": 8, "height": 6, "file_name": name, "license": 0}
            )
            annotations.append(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": [],
                    "area": 8.0,
                    "bbox": [1.0, 1.0, 4.0, 2.0],
                    "iscrowd": 0,
                    "attributes": {"occluded": False},
                }
            )
        coco = {
            "licenses": [{"name": "", "id": 0, "url": ""}],
            "info": {"contributor": "", "date_created": "", "description": "", "version": ""},
            "categories": [{"id": 1, "name": "apple", "supercategory": ""}],
            "images": images,
            "annotations": annotations,
        }
        zf.writestr("annotations/instances_default.json", json.dumps(coco))
    return archive.getvalue()


@pytest.fixture()
def server():
    with CvatMockServer(default_archive=coco_zip("default.jpg")) as server:
        yield server


@pytest.fixture()
def lines():
    """The log, one string per line."""
    return []


def export(server, tmp_path, lines, **kwargs) -> list[ServerExport]:
    return export_from_cvat(server.url, tmp_path / "exports", log=lines.append, **FAST, **kwargs)


def test_task_export_downloads_the_zip_the_server_served(server, tmp_path, lines, env):
    served = coco_zip("frame_000000.jpg", "frame_000001.jpg")
    server.add_task(12, archive=served)

    (result,) = export(server, tmp_path, lines, task_ids=[12])

    assert result == ServerExport(tmp_path / "exports" / "task-12.zip", "task 12", "task-12")
    assert result.archive.read_bytes() == served
    names = zipfile.ZipFile(result.archive).namelist()
    assert "annotations/instances_default.json" in names
    assert "images/default/frame_000001.jpg" in names
    (request,) = server.calls("POST", EXPORT)
    assert request.path == "/api/tasks/12/dataset/export"
    assert request.query == {"format": "COCO 1.0", "save_images": "True", "location": "local"}
    assert any("task 12: export started" in line for line in lines)
    assert any(f"downloaded {len(served):,} bytes" in line for line in lines)


def test_token_goes_in_the_authorization_header_and_never_in_the_log(server, tmp_path, lines, env):
    server.add_task(12)

    export(server, tmp_path, lines, task_ids=[12])

    authenticated = [r for r in server.requests if r.path != "/api/server/about"]
    assert authenticated
    assert all(r.headers.get("Authorization") == "Bearer test-token" for r in authenticated)
    assert not server.calls("POST", "/api/auth/login")
    assert "test-token" not in "\n".join(lines)


def test_username_and_password_log_in_to_a_session(server, tmp_path, lines, env):
    env.delenv("CVAT_ACCESS_TOKEN")
    env.setenv("CVAT_USERNAME", "alice")
    env.setenv("CVAT_PASSWORD", "alice-password")
    server.add_task(12)

    (result,) = export(server, tmp_path, lines, task_ids=[12])

    assert result.archive.is_file()
    assert len(server.calls("POST", "/api/auth/login")) == 1
    (export_request,) = server.calls("POST", EXPORT)
    assert f"sessionid={SESSION_ID}" in export_request.headers["Cookie"]
    assert export_request.headers["X-CSRFToken"] == CSRF_TOKEN
    assert "alice-password" not in "\n".join(lines)


def test_organization_is_sent_with_requests(server, tmp_path, lines, env):
    env.setenv("CVAT_ORGANIZATION", "acme")
    server.add_task(12)

    export(server, tmp_path, lines, task_ids=[12])

    (retrieve,) = server.calls("GET", "/api/tasks/12")
    assert retrieve.headers["X-Organization"] == "acme"
    assert any("organization 'acme'" in line for line in lines)


def test_project_is_exported_task_by_task_each_its_own_group(server, tmp_path, lines, env):
    server.add_project(3, "fruit")
    for task_id in (12, 13, 14):  # three tasks: the task list takes two pages
        server.add_task(task_id, project_id=3, archive=coco_zip(f"task{task_id}.jpg"))
    server.add_task(15, project_id=3, size=0)  # no images: skipped
    server.add_task(99)  # another project's

    results = export(server, tmp_path, lines, project_ids=[3])

    assert [(r.resource, r.group) for r in results] == [
        ("task 12 in project 3", "task-12"),
        ("task 13 in project 3", "task-13"),
        ("task 14 in project 3", "task-14"),
    ]
    for result, task_id in zip(results, (12, 13, 14)):
        assert result.archive.read_bytes() == server.archives[f"task-{task_id}"]
    assert [r.query["page"] for r in server.calls("GET", "/api/tasks")] == ["1", "2"]
    assert any("task 15 in project 3: skipped, it has no images" in line for line in lines)


def test_job_export_is_grouped_with_its_task(server, tmp_path, lines, env):
    server.add_task(12, jobs={45: "in progress"})
    server.archives["job-45"] = coco_zip("frame_000003.jpg")

    (result,) = export(server, tmp_path, lines, job_ids=[45])

    assert result == ServerExport(tmp_path / "exports" / "job-45.zip", "job 45", "task-12")
    assert result.archive.read_bytes() == server.archives["job-45"]
    assert any(
        "job 45: exported as asked although its state is 'in progress'" in line for line in lines
    )


def test_a_job_of_a_task_exported_whole_is_not_exported_again(server, tmp_path, lines, env):
    server.add_task(12, jobs={45: "completed"})

    results = export(server, tmp_path, lines, task_ids=[12, 12], job_ids=[45])

    assert [r.resource for r in results] == ["task 12"]
    assert len(server.calls("POST", EXPORT)) == 1


def test_completed_jobs_only_exports_completed_annotation_jobs(server, tmp_path, lines, env):
    server.add_project(3)
    server.add_task(12, project_id=3, jobs={121: "completed", 122: "in progress", 123: "new"})
    server.add_job(129, 12, "completed", type="ground_truth")
    server.add_task(13, project_id=3, jobs={131: "completed", 132: "completed"})
    server.add_task(14, project_id=3, jobs={141: "rejected"})

    results = export(server, tmp_path, lines, project_ids=[3], completed_jobs_only=True)

    assert [(r.resource, r.group, r.archive.name) for r in results] == [
        ("job 121 in task 12", "task-12", "job-121.zip"),
        ("task 13 in project 3", "task-13", "task-13.zip"),  # all its jobs completed: whole
    ]
    exported = [r.path for r in server.calls("POST", EXPORT)]
    assert exported == ["/api/jobs/121/dataset/export", "/api/tasks/13/dataset/export"]
    log = "\n".join(lines)
    assert (
        "1 of 3 annotation job(s) completed; skipped 2 not completed (1 in progress, 1 new)" in log
    )
    assert "skipped 1 ground-truth/consensus job(s)" in log
    assert "task 14 in project 3: 0 of 1 annotation job(s) completed" in log


def test_completed_jobs_only_without_a_completed_job_is_a_clear_error(server, tmp_path, lines, env):
    server.add_task(12, jobs={121: "new", 122: "in progress", 123: "new"})
    server.add_job(129, 12, "completed", type="ground_truth")

    with pytest.raises(
        CvatServerError, match=r"no annotation job of task 12 is completed"
    ) as error:
        export(server, tmp_path, lines, task_ids=[12], completed_jobs_only=True)

    assert "(states: 2 new, 1 in progress)" in str(error.value)
    assert not server.calls("POST", EXPORT)


def test_missing_credentials_name_the_variables_and_the_secret(server, tmp_path, lines, env):
    env.delenv("CVAT_ACCESS_TOKEN")
    env.setenv("CVAT_USERNAME", "alice")

    with pytest.raises(CvatServerError) as error:
        export(server, tmp_path, lines, task_ids=[12])

    message = str(error.value)
    for name in ("CVAT_ACCESS_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD", "Kubernetes Secret"):
        assert name in message
    assert "CVAT_PASSWORD is not" in message
    assert not server.requests


def test_a_rejected_token_says_which_variable_to_fix(server, tmp_path, lines, env):
    env.setenv("CVAT_ACCESS_TOKEN", "expired-token")
    server.add_task(12)

    with pytest.raises(CvatServerError, match=r"rejected the credentials from CVAT_ACCESS_TOKEN"):
        export(server, tmp_path, lines, task_ids=[12])

    assert len(server.calls("GET", "/api/users/self")) == 1  # a 401 is not retried


def test_a_rejected_password_says_which_variables_to_fix(server, tmp_path, lines, env):
    env.delenv("CVAT_ACCESS_TOKEN")
    env.setenv("CVAT_USERNAME", "alice")
    env.setenv("CVAT_PASSWORD", "wrong")

    with pytest.raises(CvatServerError, match=r"credentials from CVAT_USERNAME/CVAT_PASSWORD"):
        export(server, tmp_path, lines, task_ids=[12])


def test_a_missing_task_is_a_clear_error(server, tmp_path, lines, env):
    with pytest.raises(CvatServerError, match=rf"task 99 not found on {server.url} \(or no access"):
        export(server, tmp_path, lines, task_ids=[99])

    assert len(server.calls("GET", "/api/tasks/99")) == 1  # a 404 is not retried


def test_transient_failures_are_retried_with_backoff(server, tmp_path, lines, env):
    server.add_task(12)
    server.fail("GET", "/api/tasks/12", 503)
    server.fail("POST", "/api/tasks/12/dataset/export", 502, 429, 409)  # 409: export running

    (result,) = export(server, tmp_path, lines, task_ids=[12])

    assert result.archive.read_bytes() == server.default_archive
    assert len(server.calls("GET", "/api/tasks/12")) == 2
    assert len(server.calls("POST", EXPORT)) == 4
    retries = [line for line in lines if "retry" in line]
    assert len(retries) == 4
    assert "HTTP 503" in retries[0] and "retry 1 of 5 in 0.01 s" in retries[0]
    assert "retry 3 of 5 in 0.04 s" in retries[-1]  # the export's third retry: doubled twice


def test_retries_give_up_with_the_last_error(server, tmp_path, lines, env):
    server.add_task(12)
    server.fail("POST", "/api/tasks/12/dataset/export", 503, 503, 503)

    with pytest.raises(CvatServerError, match=r"could not export task 12 .* after 3 attempts"):
        export(server, tmp_path, lines, task_ids=[12], retries=2)


def test_an_unreachable_server_is_retried_then_reported(tmp_path, lines, env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    with pytest.raises(CvatServerError, match=r"could not reach CVAT .* after 2 attempts"):
        export_from_cvat(
            f"http://127.0.0.1:{port}", tmp_path, task_ids=[1], retries=1, log=lines.append, **FAST
        )


def test_an_export_that_never_finishes_times_out(server, tmp_path, lines, env):
    server.add_task(12)
    server.never_finish = True

    with pytest.raises(CvatServerError, match=r"did not finish exporting task 12 within 0.1 s"):
        export(server, tmp_path, lines, task_ids=[12], timeout=0.1)

    assert len(server.calls("POST", EXPORT)) == 1  # a timeout is not retried
    assert not (tmp_path / "exports" / "task-12.zip").exists()


def test_a_failed_export_reports_the_server_message(server, tmp_path, lines, env):
    server.add_task(12)
    server.fail_exports_with = "No space left on device"

    with pytest.raises(CvatServerError, match=r"CVAT failed to export task 12: No space left"):
        export(server, tmp_path, lines, task_ids=[12])


def test_a_cvat_url_with_credentials_is_refused_and_its_password_never_shown(
    server, tmp_path, lines, env, caplog
):
    server.add_task(12)
    url = server.url.replace("http://", "http://alice:s3cret-pw@")

    with pytest.raises(ValueError, match="carries credentials") as error:
        export_from_cvat(url, tmp_path, task_ids=[12], log=lines.append, **FAST)

    assert "CVAT_ACCESS_TOKEN" in str(error.value) and server.url in str(error.value)
    shown = "\n".join([str(error.value), *lines, caplog.text])
    assert "s3cret-pw" not in shown
    assert server.requests == []


@pytest.mark.parametrize("ids", [{}, {"task_ids": "12"}], ids=["no ids", "a task"])
def test_the_export_stage_refuses_a_cvat_url_with_credentials_before_anything_else(
    server, tmp_path, ids, caplog
):
    from cvat_kfp.components.export_annotations.export import run_export_annotations

    url = server.url.replace("http://", "http://alice:s3cret-pw@")

    with pytest.raises(ValueError, match="carries credentials") as error:
        run_export_annotations(tmp_path / "dataset", tmp_path / "report.md", cvat_url=url, **ids)

    assert "s3cret-pw" not in str(error.value) + caplog.text
    assert server.requests == []
