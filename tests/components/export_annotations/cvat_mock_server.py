"""A local stand-in for a CVAT server: the REST endpoints cvat-sdk calls to export datasets.

Its JSON carries the fields a CVAT 2.x server sends, so cvat-sdk's strict response models check
the shapes. Tests register projects, tasks, jobs and the archive each export serves, inject
failures per route, and read back every request the server got.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

USER_ID = 1
DATE = "2025-01-15T10:00:00.000000Z"
PAGE_SIZE = 2  # small, so that listing jobs and tasks takes several pages
SESSION_ID = "mock-session-id"
CSRF_TOKEN = "mock-csrf-token"
EXPORT_FORMATS = ("COCO 1.0", "CVAT for images 1.1", "YOLO 1.1")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class ExportRequest:
    rq_id: str
    target: str  # "task", "project" or "job"
    target_id: int
    format: str
    polls: int = 0
    status: str = "queued"


@dataclass
class CvatMockServer:
    """Start with `with CvatMockServer() as server:`; `server.url` is its address."""

    token: str = "test-token"
    username: str = "alice"
    password: str = "alice-password"
    projects: dict[int, dict] = field(default_factory=dict)
    tasks: dict[int, dict] = field(default_factory=dict)
    jobs: dict[int, dict] = field(default_factory=dict)
    archives: dict[str, bytes] = field(default_factory=dict)  # "task-12" -> the zip it serves
    default_archive: bytes = b"PK\x05\x06" + bytes(18)  # an empty zip
    polls_to_finish: int = 3  # status polls before an export is finished: queued, started, ...
    never_finish: bool = False
    fail_exports_with: str = ""  # exports end "failed" with this message
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    exports: dict[str, ExportRequest] = field(default_factory=dict)

    # --- setting up

    def add_project(self, project_id: int, name: str = "") -> None:
        self.projects[project_id] = {"name": name or f"project {project_id}"}

    def add_task(
        self,
        task_id: int,
        *,
        project_id: int | None = None,
        jobs: dict[int, str] | None = None,
        size: int = 4,
        overlap: int = 0,
        archive: bytes | None = None,
    ) -> None:
        """A task and its annotation jobs ({job id: state}; default one "new" job)."""
        self.tasks[task_id] = {"project_id": project_id, "size": size, "overlap": overlap}
        for job_id, state in (jobs or {task_id * 100 + 1: "new"}).items():
            self.add_job(job_id, task_id, state)
        if archive is not None:
            self.archives[f"task-{task_id}"] = archive

    def add_job(self, job_id: int, task_id: int, state: str, type: str = "annotation") -> None:
        self.jobs[job_id] = {"task_id": task_id, "state": state, "type": type}

    def fail(self, method: str, path: str, *statuses: int) -> None:
        """Answer the next calls of `method path` with these statuses, one per call."""
        self.failures.setdefault((method, path), []).extend(statuses)

    # --- reading back

    def calls(self, method: str, path_pattern: str = "") -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.method == method and re.fullmatch(path_pattern or ".*", r.path)
        ]

    # --- running

    def __enter__(self) -> CvatMockServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.mock = self
        serve = partial(self._httpd.serve_forever, poll_interval=0.01)  # quick to shut down
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # --- the endpoints: each returns (status, JSON-able body or bytes, extra headers)

    def about(self, query):
        return 200, {
            "name": "Computer Vision Annotation Tool",
            "description": "CVAT is completely re-designed and re-implemented version of ...",
            "version": "2.80.0",
            "logo_url": f"{self.url}/static/logo.svg",
            "subtitle": "Computer Vision Annotation Tool",
        }

    def login(self, query, body):
        credentials = json.loads(body or b"{}")
        if (credentials.get("username"), credentials.get("password")) != (
            self.username,
            self.password,
        ):
            return 400, {"non_field_errors": ["Unable to log in with provided credentials."]}
        cookies = [
            f"csrftoken={CSRF_TOKEN}; expires=Thu, 14 Jan 2027 10:00:00 GMT; Max-Age=31449600; "
            "Path=/; SameSite=Lax",
            f"sessionid={SESSION_ID}; expires=Wed, 29 Jan 2025 10:00:00 GMT; HttpOnly; "
            "Max-Age=1209600; Path=/; SameSite=Lax",
        ]
        return 200, {"key": "mock-legacy-token"}, [("Set-Cookie", c) for c in cookies]

    def user_self(self, query):
        return 200, {
            "url": f"{self.url}/api/users/{USER_ID}",
            "id": USER_ID,
            "username": self.username,
            "first_name": "Alice",
            "last_name": "",
            "email": "alice@example.com",
            "groups": ["user"],
            "is_staff": False,
            "is_superuser": False,
            "is_active": True,
            "last_login": DATE,
            "date_joined": DATE,
            "has_analytics_access": False,
        }

    def retrieve(self, query, kind, object_id):
        object_id = int(object_id)
        table = {"task": self.tasks, "project": self.projects, "job": self.jobs}[kind]
        if object_id not in table:
            return 404, {"detail": "Not found."}
        return 200, getattr(self, f"_{kind}_json")(object_id)

    def list_tasks(self, query):
        ids = [
            task_id
            for task_id, task in sorted(self.tasks.items())
            if "project_id" not in query or str(task["project_id"]) == query["project_id"]
        ]
        return self._page("/api/tasks", query, [self._task_json(i) for i in ids])

    def list_jobs(self, query):
        def matches(job_id, job):
            task = self.tasks[job["task_id"]]
            return (
                query.get("task_id", str(job["task_id"])) == str(job["task_id"])
                and query.get("project_id", str(task["project_id"])) == str(task["project_id"])
                and query.get("state", job["state"]) == job["state"]
                and query.get("type", job["type"]) == job["type"]
            )

        ids = [job_id for job_id, job in sorted(self.jobs.items()) if matches(job_id, job)]
        return self._page("/api/jobs", query, [self._job_json(i) for i in ids])

    def export(self, query, kind, object_id):
        object_id = int(object_id)
        table = {"task": self.tasks, "project": self.projects, "job": self.jobs}[kind]
        if object_id not in table:
            return 404, {"detail": "Not found."}
        if query.get("format") not in EXPORT_FORMATS:
            return 400, ["Unknown format specified for the request"]
        subresource = "dataset" if query.get("save_images") in ("True", "true") else "annotations"
        rq_id = (
            f"action=export&target={kind}&target_id={object_id}&subresource={subresource}"
            f"&format={query['format']}&user_id={USER_ID}"
        )
        running = self.exports.get(rq_id)
        if running and running.status in ("queued", "started"):
            return 409, "Export request is being processed"
        self.exports[rq_id] = ExportRequest(rq_id, kind, object_id, query["format"])
        return 202, {"rq_id": rq_id}

    def request_status(self, query, rq_id):
        export = self.exports.get(unquote(rq_id))
        if export is None:
            return 404, {"detail": "Not found."}
        export.polls += 1
        if self.fail_exports_with and export.polls > 1:
            export.status = "failed"
        elif self.never_finish:
            export.status = "started"
        else:
            export.status = "finished" if export.polls >= self.polls_to_finish else "started"
            export.status = "queued" if export.polls == 1 else export.status
        return 200, self._request_json(export)

    def download(self, query, kind, object_id):
        export = self.exports.get(query.get("rq_id", ""))
        if export is None or export.status != "finished":
            return 400, "Dataset export has not been finished yet"
        archive = self.archives.get(f"{kind}-{object_id}", self.default_archive)
        name = f"{kind}_{object_id}_dataset_coco_1_0.zip"
        return 200, archive, [("Content-Disposition", f'attachment; filename="{name}"')]

    # --- JSON as CVAT writes it

    def _page(self, path: str, query: dict, results: list) -> tuple:
        page = int(query.get("page", 1))
        size = int(query.get("page_size", PAGE_SIZE))
        start = (page - 1) * size
        more = start + size < len(results)
        next_query = urlencode({**query, "page": page + 1})
        return 200, {
            "count": len(results),
            "next": f"{self.url}{path}?{next_query}" if more else None,
            "previous": None,
            "results": results[start : start + size],
        }

    def _owner(self) -> dict:
        return {
            "url": f"{self.url}/api/users/{USER_ID}",
            "id": USER_ID,
            "username": self.username,
            "first_name": "Alice",
            "last_name": "",
        }

    @staticmethod
    def _storage(storage_id: int) -> dict:
        return {"id": storage_id, "location": "local", "cloud_storage_id": None}

    def _project_json(self, project_id: int) -> dict:
        task_count = sum(t["project_id"] == project_id for t in self.tasks.values())
        return {
            "url": f"{self.url}/api/projects/{project_id}",
            "id": project_id,
            "name": self.projects[project_id]["name"],
            "owner": self._owner(),
            "assignee": None,
            "guide_id": None,
            "bug_tracker": "",
            "task_subsets": ["Train"],
            "created_date": DATE,
            "updated_date": DATE,
            "status": "annotation",
            "dimension": "2d",
            "organization": None,
            "target_storage": self._storage(project_id * 2),
            "source_storage": self._storage(project_id * 2 + 1),
            "assignee_updated_date": None,
            "tasks": {"count": task_count, "url": f"{self.url}/api/tasks?project_id={project_id}"},
            "labels": {"url": f"{self.url}/api/labels?project_id={project_id}"},
        }

    def _task_json(self, task_id: int) -> dict:
        task = self.tasks[task_id]
        jobs = [j for j in self.jobs.values() if j["task_id"] == task_id]
        project = self.projects.get(task["project_id"], {})
        return {
            "url": f"{self.url}/api/tasks/{task_id}",
            "id": task_id,
            "name": f"task {task_id}",
            "project_id": task["project_id"],
            "project_name": project.get("name"),
            "mode": "annotation",
            "owner": self._owner(),
            "assignee": None,
            "bug_tracker": "",
            "created_date": DATE,
            "updated_date": DATE,
            "overlap": task["overlap"],
            "segment_size": 2,
            "status": "annotation",
            "data_chunk_size": 72,
            "data_compressed_chunk_type": "imageset",
            "guide_id": None,
            "data_original_chunk_type": "imageset",
            "size": task["size"],
            "image_quality": 70,
            "data": task_id,
            "dimension": "2d",
            "media_type": "image",
            "subset": "Train",
            "organization": None,
            "target_storage": self._storage(task_id * 2),
            "source_storage": self._storage(task_id * 2 + 1),
            "jobs": {
                "count": len(jobs),
                "completed": sum(j["state"] == "completed" for j in jobs),
                "validation": 0,
                "url": f"{self.url}/api/jobs?task_id={task_id}",
            },
            "labels": {"url": f"{self.url}/api/labels?task_id={task_id}"},
            "assignee_updated_date": None,
            "validation_mode": None,
        }

    def _job_json(self, job_id: int) -> dict:
        job = self.jobs[job_id]
        task = self.tasks[job["task_id"]]
        project = self.projects.get(task["project_id"], {})
        return {
            "url": f"{self.url}/api/jobs/{job_id}",
            "id": job_id,
            "task_id": job["task_id"],
            "project_id": task["project_id"],
            "task_name": f"task {job['task_id']}",
            "project_name": project.get("name"),
            "stage": "acceptance" if job["state"] == "completed" else "annotation",
            "state": job["state"],
            "type": job["type"],
            "assignee": None,
            "guide_id": None,
            "dimension": "2d",
            "media_type": "image",
            "bug_tracker": None,
            "status": "annotation",
            "data_chunk_size": 72,
            "data_compressed_chunk_type": "imageset",
            "data_original_chunk_type": "imageset",
            "created_date": DATE,
            "updated_date": DATE,
            "mode": "annotation",
            "frame_count": 2,
            "start_frame": 0,
            "stop_frame": 1,
            "organization": None,
            "target_storage": self._storage(job["task_id"] * 2),
            "source_storage": self._storage(job["task_id"] * 2 + 1),
            "issues": {"url": f"{self.url}/api/issues?job_id={job_id}", "count": 0},
            "labels": {"url": f"{self.url}/api/labels?job_id={job_id}"},
            "assignee_updated_date": None,
            "parent_job_id": None,
            "replicas_count": 0,
        }

    def _request_json(self, export: ExportRequest) -> dict:
        finished = export.status == "finished"
        result_url = None
        if finished:
            download = f"/api/{export.target}s/{export.target_id}/dataset/download"
            result_url = f"{self.url}{download}?{urlencode({'rq_id': export.rq_id})}"
        return {
            "status": export.status,
            "message": self.fail_exports_with if export.status == "failed" else "",
            "id": export.rq_id,
            "operation": {
                "target": export.target,
                "type": "export:dataset",
                "project_id": export.target_id if export.target == "project" else None,
                "task_id": export.target_id if export.target == "task" else None,
                "job_id": export.target_id if export.target == "job" else None,
                "format": export.format,
                "function_id": None,
            },
            "progress": 0.5 if export.status == "started" else None,
            "created_date": DATE,
            "started_date": DATE if export.status != "queued" else None,
            "finished_date": DATE if finished else None,
            "expiry_date": DATE if finished else None,
            "owner": {"id": USER_ID, "username": self.username},
            "result_url": result_url,
            "result_id": None,
        }

    # --- authentication, as CVAT checks it

    def authentication_error(self, method: str, headers) -> tuple | None:
        authorization = headers.get("Authorization")
        if authorization:
            if authorization == f"Bearer {self.token}":
                return None
            return 401, {"detail": "Invalid token."}
        cookies = dict(
            part.strip().split("=", 1)
            for part in headers.get("Cookie", "").split(";")
            if "=" in part
        )
        if cookies.get("sessionid") != SESSION_ID:
            return 401, {"detail": "Authentication credentials were not provided."}
        if method == "POST" and headers.get("X-CSRFToken") != cookies.get("csrftoken"):
            return 403, {"detail": "CSRF Failed: CSRF token missing."}
        return None


ROUTES = [  # (method, path pattern, endpoint, needs authentication)
    ("GET", r"/api/server/about", "about", False),
    ("POST", r"/api/auth/login", "login", False),
    ("GET", r"/api/users/self", "user_self", True),
    ("GET", r"/api/tasks", "list_tasks", True),
    ("GET", r"/api/jobs", "list_jobs", True),
    ("GET", r"/api/(task|project|job)s/(\d+)", "retrieve", True),
    ("POST", r"/api/(task|project|job)s/(\d+)/dataset/export", "export", True),
    ("GET", r"/api/requests/([^/]+)", "request_status", True),
    ("GET", r"/api/(task|project|job)s/(\d+)/dataset/download", "download", True),
]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def log_message(self, format, *args):
        pass  # quiet tests

    def _handle(self, method: str) -> None:
        mock: CvatMockServer = self.server.mock
        parts = urlsplit(self.path)
        # rq_ids hold "&" and "=": CVAT's request path keeps them percent-encoded.
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        mock.requests.append(RecordedRequest(method, unquote(path), query, dict(self.headers)))

        pending = mock.failures.get((method, unquote(path)))
        if pending:
            status = pending.pop(0)
            return self._send(status, {"detail": f"injected HTTP {status}"})
        for route_method, pattern, endpoint, needs_auth in ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method != method or not match:
                continue
            if needs_auth and (error := mock.authentication_error(method, self.headers)):
                return self._send(*error)
            arguments = (query, body) if endpoint == "login" else (query,)
            return self._send(*getattr(mock, endpoint)(*arguments, *match.groups()))
        self._send(404, {"detail": f"no route for {method} {path}"})

    def _send(self, status: int, body, headers=()) -> None:
        if isinstance(body, bytes):
            data, content_type = body, "application/zip"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
