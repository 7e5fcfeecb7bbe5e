"""A local stand-in for a CVAT server: the REST endpoints cvat-sdk calls to export datasets, to
read a task's labels, data meta, frames and chunks, to read, replace, extend and delete its
annotations, and to create a task and upload its images; and the native functions API (CVAT
Enterprise/Cloud) that `cvat-cli function create-native` and `cvat-cli function run-agent` call.

Its JSON carries the fields a CVAT 2.x server sends, so cvat-sdk's strict response models check
the shapes. Tests register projects, tasks (with labels and frames), jobs and the archive each
export serves (a task without one is exported "CVAT for images 1.1" from the annotations it
holds, as CVAT writes it), edit shapes as a person in CVAT's editor does, inject failures per
route, and read back every request the server got and the annotations each task holds.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape

from PIL import Image

USER_ID = 1
DATE = "2025-01-15T10:00:00.000000Z"
PAGE_SIZE = 2  # small, so that listing jobs and tasks takes several pages
SESSION_ID = "mock-session-id"
CSRF_TOKEN = "mock-csrf-token"
CVAT_IMAGES = "CVAT for images 1.1"
EXPORT_FORMATS = ("COCO 1.0", CVAT_IMAGES, "YOLO 1.1")
LABEL_TYPES = ("any", "rectangle", "polygon", "mask", "points", "polyline", "ellipse", "cuboid")
LABEL_TYPES += ("skeleton", "tag")
SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask")
SHAPE_TYPES += ("skeleton",)
SHAPE_DEFAULTS = {
    "occluded": False,
    "outside": False,
    "z_order": 0,
    "rotation": 0.0,
    "group": None,
    "source": "manual",
    "attributes": [],
    "elements": [],
}


@dataclass
class MockFrame:
    name: str
    data: bytes  # what GET .../data/?type=frame&quality=original serves
    width: int
    height: int
    content_type: str = "image/png"


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
    format: str | None
    polls: int = 0
    status: str = "queued"
    type: str = "export:dataset"  # or "create:task": a task's data being processed


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
    chunk_size: int = 72  # frames per data chunk, CVAT's default
    latency: float = 0.0  # seconds before each answer: a remote server's round trip
    functions: dict[int, dict] = field(default_factory=dict)  # native function id -> its JSON
    function_requests: dict[str, dict] = field(default_factory=dict)  # AR id -> its state
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    exports: dict[str, ExportRequest] = field(default_factory=dict)
    labels: dict[int, dict] = field(default_factory=dict)  # label id -> {name, type, task_id}
    frames: dict[int, list[MockFrame]] = field(default_factory=dict)  # task id -> its frames
    annotations: dict[int, dict] = field(default_factory=dict)  # task id -> {version, shapes, ...}
    next_shape_id: int = 1
    webhooks: dict[int, dict] = field(default_factory=dict)  # webhook id -> its fields
    clock: int = 0  # seconds after DATE of the latest job update

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
        labels: list[str | tuple[str, str]] = (),
        frames: list[MockFrame | tuple[str, bytes]] = (),
        deleted_frames: list[int] = (),
        video: str = "",
        frame_step: int = 1,
    ) -> None:
        """A task and its annotation jobs ({job id: state}; default one "new" job).

        `labels` are names (type "any") or (name, type); `frames` are MockFrames or (name, encoded
        image) pairs, whose size is read from the image; their count is the task size. A `video`
        task (its file name) has one meta frame entry, the first frame's size, as CVAT sends.
        With a `frame_step` (CVAT's frame filter "step=N"), the task holds every N-th of `frames`,
        numbered 0, 1, ... as CVAT numbers a task's frames.
        """
        frames = [f if isinstance(f, MockFrame) else _frame(*f) for f in frames][::frame_step]
        size = len(frames) if frames else size
        self.tasks[task_id] = {
            "project_id": project_id,
            "size": size,
            "overlap": overlap,
            "deleted_frames": list(deleted_frames),
            "video": video,
            "frame_step": frame_step,
        }
        for job_id, state in (jobs or {task_id * 100 + 1: "new"}).items():
            self.add_job(job_id, task_id, state)
        if archive is not None:
            self.archives[f"task-{task_id}"] = archive
        for label in labels:
            name, kind = (label, "any") if isinstance(label, str) else label
            self.add_label(task_id, name, kind)
        self.frames[task_id] = frames
        self.annotations[task_id] = {"version": 0, "tags": [], "shapes": [], "tracks": []}

    def add_label(self, task_id: int, name: str, type: str = "any") -> int:
        assert type in LABEL_TYPES, type
        label_id = max(self.labels, default=0) + 1
        self.labels[label_id] = {"name": name, "type": type, "task_id": task_id}
        return label_id

    def label_id(self, task_id: int, name: str) -> int:
        (label_id,) = (
            i
            for i, lb in self.labels.items()
            if (lb["task_id"], lb["name"])
            == (
                task_id,
                name,
            )
        )
        return label_id

    def add_shapes(self, task_id: int, *shapes: dict) -> None:
        """Annotations already in the task (LabeledShape JSON; defaults filled in)."""
        self.annotations[task_id]["shapes"] += [self._stored_shape(s) for s in shapes]

    # --- a person in CVAT's editor

    def edit_shape(self, task_id: int, shape_id: int, **changes) -> None:
        """Change a shape's points, label_id, attributes, ... as the editor saves it: a model's
        shape ("auto", "semi-auto") becomes "semi-auto", a file's "manual" (cvat-core,
        computeNewSource)."""
        shape = self._shape(task_id, shape_id)
        shape.update(changes)
        source = shape["source"]
        shape["source"] = {"auto": "semi-auto", "semi-auto": "semi-auto"}.get(
            source, "consensus" if source == "consensus" else "manual"
        )
        self._annotations_saved(task_id)

    def delete_shape(self, task_id: int, shape_id: int) -> None:
        shapes = self.annotations[task_id]["shapes"]
        shapes.remove(self._shape(task_id, shape_id))
        self._annotations_saved(task_id)

    def draw_shape(self, task_id: int, **shape) -> int:
        """A shape a person draws ("manual"); returns its id."""
        (stored,) = self._checked_shapes(task_id, [{"source": "manual", **shape}])[0] or [None]
        assert stored is not None, shape
        self.annotations[task_id]["shapes"].append(stored)
        self._annotations_saved(task_id)
        return stored["id"]

    def rename_label(self, label_id: int, name: str) -> None:
        self.labels[label_id]["name"] = name

    def delete_frames(self, task_id: int, *frames: int) -> None:
        """Frames deleted in the task: kept in the data, left out of exports (shapes and all)."""
        self.tasks[task_id]["deleted_frames"] += list(frames)

    def _annotations_saved(self, task_id: int) -> None:
        """CVAT touches the jobs (and task) whose annotations were saved: their updated_date
        moves on (dataset_manager/task.py, JobAnnotation._set_updated_date); here every job of
        the task."""
        self.clock += 1
        for job in self.jobs.values():
            if job["task_id"] == task_id:
                job["updated_date"] = _after_date(self.clock)

    def _shape(self, task_id: int, shape_id: int) -> dict:
        (shape,) = (s for s in self.annotations[task_id]["shapes"] if s["id"] == shape_id)
        return shape

    def add_job(self, job_id: int, task_id: int, state: str, type: str = "annotation") -> None:
        self.jobs[job_id] = {"task_id": task_id, "state": state, "type": type}

    def add_function_request(
        self,
        function_id: int,
        task_id: int,
        *,
        threshold: float | None = None,
        conv_mask_to_poly: bool = False,
        mapping: dict[str, str] | None = None,
    ) -> str:
        """A person's "Automatic annotation" of a task with a native function, queued for its
        agent: an annotate_task request. `mapping` is function label -> task label (default: each
        function label to the task label of the same name, as CVAT's dialog proposes)."""
        names = [label["name"] for label in self.functions[function_id]["labels_v2"]]
        if mapping is None:
            task_names = {lb["name"] for lb in self.labels.values() if lb["task_id"] == task_id}
            mapping = {name: name for name in names if name in task_names}
        ar_id = f"function:{function_id}-request-{len(self.function_requests) + 1}"
        self.function_requests[ar_id] = {
            "function_id": function_id,
            "category": "batch",
            "status": "queued",
            "agent_id": None,
            "progress": 0.0,
            "error": None,
            "params": {
                "type": "annotate_task",
                "task": task_id,
                "threshold": threshold,
                "conv_mask_to_poly": conv_mask_to_poly,
                "mapping": {name: {"name": target} for name, target in mapping.items()},
            },
        }
        return ar_id

    def update_job(
        self, job_id: int, *, state: str | None = None, stage: str | None = None
    ) -> None:
        """Change a job's state or stage as a person in CVAT does: its updated_date moves on."""
        job = self.jobs[job_id]
        if state is not None:
            job["state"] = state
        if stage is not None:
            job["stage"] = stage
        self.clock += 1
        job["updated_date"] = _after_date(self.clock)

    def fail(self, method: str, path: str, *statuses: int) -> None:
        """Answer the next calls of `method path` with these statuses, one per call."""
        self.failures.setdefault((method, path), []).extend(statuses)

    # --- reading back

    def shapes(self, task_id: int) -> list[dict]:
        return self.annotations[task_id]["shapes"]

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
            if ("project_id" not in query or str(task["project_id"]) == query["project_id"])
            # CVAT's `name` filter is a simple equality filter
            and ("name" not in query or self._task_name(task_id) == query["name"])
            and self._searched(query.get("search", ""), self._task_name(task_id))
        ]
        return self._page("/api/tasks", query, [self._task_json(i) for i in ids])

    @staticmethod
    def _searched(search: str, name: str) -> bool:
        """DRF's SearchFilter, as CVAT uses it: every word of the term (split at spaces and
        commas) is found, case-insensitively, in a search field (the stand-in: the name)."""
        words = [w for w in re.split(r"[\s,]+", search) if w]
        return all(word.casefold() in name.casefold() for word in words)

    def create_task(self, query, body):
        """POST /api/tasks (TaskWriteSerializer): a task without data, its labels or project's."""
        data = json.loads(body or b"{}")
        if not str(data.get("name", "")).strip():
            return 400, {"name": ["This field may not be blank."]}
        project_id, labels = data.get("project_id"), data.get("labels") or []
        if project_id is not None and project_id not in self.projects:
            return 400, {"project_id": [f'Invalid pk "{project_id}" - object does not exist.']}
        if project_id is not None and labels:
            return 400, {"labels": ["Tasks inside a project use the project's labels"]}
        if project_id is None and not labels:
            return 400, {"label_set": ["Label set or project_id must be present"]}
        bad = [lb for lb in labels if lb.get("type", "any") not in LABEL_TYPES]
        if bad:
            return 400, {"labels": [{"type": [f'"{bad[0]["type"]}" is not a valid choice.']}]}
        task_id = max(self.tasks, default=0) + 1
        self.tasks[task_id] = {
            "project_id": project_id,
            "size": 0,
            "overlap": 0,
            "deleted_frames": [],
            "video": "",
            "name": data["name"],
            "has_data": False,
        }
        for label in labels:
            self.add_label(task_id, label["name"], label.get("type", "any"))
        self.frames[task_id] = []
        self.annotations[task_id] = {"version": 0, "tags": [], "shapes": [], "tracks": []}
        return 201, self._task_json(task_id)

    def upload_data(self, query, body, headers, task_id):
        """POST /api/tasks/<id>/data/ as CVAT's UploadMixin answers it: Upload-Start (202),
        Upload-Multiple with client_files (200, files appended), Upload-Finish (202, rq_id of the
        task's creation, which the request status then reports)."""
        task_id = int(task_id)
        if task_id not in self.tasks:
            return 404, {"detail": "Not found."}
        task = self.tasks[task_id]
        if task["size"]:
            return 400, "Adding more data is not supported"
        uploads = task.setdefault("uploads", [])
        if "Upload-Finish" in headers:
            fields = json.loads(body or b"{}")
            files = sorted(uploads, key=lambda f: f.name)  # sorting_method: lexicographical
            if fields.get("sorting_method") == "predefined" and fields.get("upload_file_order"):
                order = fields["upload_file_order"]
                files = sorted(uploads, key=lambda f: order.index(f.name))
            if not files:
                return 400, {"detail": "No media data found"}
            self.frames[task_id] = files
            task.update(size=len(files), has_data=True, uploads=[])
            task["image_quality"] = int(fields.get("image_quality", 70))
            self.add_job(task_id * 100 + 1, task_id, "new")
            rq_id = f"action=create&target=task&target_id={task_id}"
            self.exports[rq_id] = ExportRequest(rq_id, "task", task_id, None, type="create:task")
            return 202, {"rq_id": rq_id}
        if "Upload-Start" in headers:
            return 202, None
        if "Upload-Multiple" in headers:
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {headers.get('Content-Type', '')}\r\n\r\n".encode() + body
            )
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition").startswith("client_files"):
                    # Django's UploadedFile keeps the base name of the path the client sends
                    name = part.get_filename().replace("\\", "/").rsplit("/", 1)[-1]
                    uploads.append(_frame(name, part.get_payload(decode=True)))
            return 200, None
        return 400, {"detail": "the stand-in takes Upload-Start, -Multiple and -Finish requests"}

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
        archive = self.archives.get(f"{kind}-{object_id}")
        if archive is None and kind == "task" and export.format == CVAT_IMAGES:
            archive = self.cvat_images_archive(int(object_id))
        archive = archive if archive is not None else self.default_archive
        name = f"{kind}_{object_id}_dataset_coco_1_0.zip"
        return 200, archive, [("Content-Disposition", f'attachment; filename="{name}"')]

    def cvat_images_archive(self, task_id: int) -> bytes:
        """The task as CVAT exports it "CVAT for images 1.1" with images, from what it holds now:
        annotations.xml (labels by their current names, each shape's source, deleted frames
        left out) and images/<frame name> (cvat/apps/dataset_manager/formats/cvat.py,
        dump_as_cvat_annotation)."""
        task, frames = self.tasks[task_id], self.frames.get(task_id, [])
        labels = [lb for _, lb in sorted(self.labels.items()) if lb["task_id"] == task_id]
        xml = ["<?xml version='1.0' encoding='utf-8'?>", "<annotations>", "<version>1.1</version>"]
        xml += [
            "<meta><task>",
            f"<id>{task_id}</id><name>task {task_id}</name><size>{task['size']}</size>",
            "<mode>annotation</mode><overlap>0</overlap><start_frame>0</start_frame>",
            f"<stop_frame>{max(task['size'] - 1, 0)}</stop_frame><labels>",
            *(f"<label><name>{escape(lb['name'])}</name><type>{lb['type']}</type></label>"
              for lb in labels),
            "</labels></task></meta>",
        ]  # fmt: skip
        by_frame: dict[int, list[dict]] = {}
        for shape in sorted(self.shapes(task_id), key=lambda s: s["z_order"]):
            by_frame.setdefault(shape["frame"], []).append(shape)
        files = {}
        for index, frame in enumerate(frames):
            if index in task["deleted_frames"]:
                continue
            files[f"images/{frame.name}"] = frame.data
            xml.append(
                f'<image id="{index}" name="{escape(frame.name)}" width="{frame.width}" '
                f'height="{frame.height}">'
            )
            xml += [self._xml_shape(shape) for shape in by_frame.get(index, [])]
            xml.append("</image>")
        xml.append("</annotations>")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("annotations.xml", "\n".join(xml))
            for name, data in files.items():
                archive.writestr(name, data)
        return out.getvalue()

    def _xml_shape(self, shape: dict) -> str:
        points = shape["points"]
        attributes = {
            "label": self.labels[shape["label_id"]]["name"],
            "source": shape["source"],
            "occluded": str(int(shape["occluded"])),
        }
        tag = {"rectangle": "box"}.get(shape["type"], shape["type"])
        if tag == "box":
            attributes.update(zip(("xtl", "ytl", "xbr", "ybr"), (f"{v:.2f}" for v in points)))
        elif tag == "mask":
            left, top, right, bottom = (int(v) for v in points[-4:])
            attributes.update(
                rle=", ".join(str(int(v)) for v in points[:-4]),
                left=str(left),
                top=str(top),
                width=str(right - left + 1),
                height=str(bottom - top + 1),
            )
        else:
            pairs = zip(points[0::2], points[1::2])
            attributes["points"] = ";".join(f"{x:.2f},{y:.2f}" for x, y in pairs)
        attributes["z_order"] = str(shape["z_order"])
        if shape.get("group"):
            attributes["group_id"] = str(shape["group"])
        written = " ".join(f'{k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in attributes.items())
        return f"<{tag} {written}></{tag}>"

    def list_labels(self, query):
        ids = [
            label_id
            for label_id, label in sorted(self.labels.items())
            if "task_id" not in query or str(label["task_id"]) == query["task_id"]
        ]
        return self._page("/api/labels", query, [self._label_json(i) for i in ids])

    def data_meta(self, query, task_id):
        task_id = int(task_id)
        if task_id not in self.tasks:
            return 404, {"detail": "Not found."}
        task, frames = self.tasks[task_id], self.frames.get(task_id, [])
        described = frames[:1] if task["video"] else frames
        return 200, {
            "chunks_updated_date": DATE,
            "chunk_size": self.chunk_size,
            "size": task["size"],
            "image_quality": 70,
            "start_frame": 0,
            "stop_frame": max(task["size"] - 1, 0) * task.get("frame_step", 1),
            "frame_filter": f"step={task['frame_step']}" if task.get("frame_step", 1) > 1 else "",
            "frames": [
                {
                    "width": f.width,
                    "height": f.height,
                    "name": task["video"] or f.name,
                    "related_files": 0,
                    "has_related_context": False,
                }
                for f in described
            ],
            "deleted_frames": task["deleted_frames"],
            "included_frames": None,
            "chapters": None,
            "storage": "local",
            "cloud_storage_id": None,
        }

    def data(self, query, task_id):
        task_id = int(task_id)
        if task_id not in self.tasks:
            return 404, {"detail": "Not found."}
        if query.get("type") == "chunk":
            return self._chunk(task_id, int(query.get("number", -1)))
        if query.get("type") != "frame":
            return 400, {
                "detail": f"the stand-in serves frames and chunks, not {query.get('type')}"
            }
        frames = self.frames.get(task_id, [])
        number = int(query.get("number", -1))
        if not 0 <= number < len(frames):
            return 400, [f"Invalid frame number: {number}"]
        frame = frames[number]
        return 200, frame.data, [("Content-Type", frame.content_type)]

    def _chunk(self, task_id: int, number: int):
        """An "imageset" chunk as CVAT serves it (ZipChunkWriter): a zip of the chunk's frames in
        frame order, named by their place in the chunk (000000.png, ...), each stored as it was
        uploaded (original quality), deleted frames included."""
        if self.tasks[task_id]["video"]:
            return 400, {"detail": "the stand-in serves no video chunks"}
        frames = self.frames.get(task_id, [])
        first = number * self.chunk_size
        if number < 0 or first >= len(frames):
            return 400, [f"Invalid chunk number: {number}"]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for offset, frame in enumerate(frames[first : first + self.chunk_size]):
                suffix = PurePosixPath(frame.name).suffix
                archive.writestr(f"{offset:06d}{suffix}", frame.data)
        return 200, out.getvalue(), [("Content-Type", "application/zip")]

    def get_annotations(self, query, task_id):
        if int(task_id) not in self.tasks:
            return 404, {"detail": "Not found."}
        return 200, self._annotations_json(int(task_id))

    def put_annotations(self, query, body, task_id):
        task_id = int(task_id)
        if task_id not in self.tasks:
            return 404, {"detail": "Not found."}
        data = json.loads(body or b"{}")
        shapes, error = self._checked_shapes(task_id, data.get("shapes", []))
        if error:
            return 400, error
        stored = self.annotations[task_id]
        stored.update(tags=[], tracks=[], shapes=shapes, version=stored["version"] + 1)
        self._annotations_saved(task_id)
        return 200, self._annotations_json(task_id)

    def patch_annotations(self, query, body, task_id):
        task_id = int(task_id)
        if task_id not in self.tasks:
            return 404, {"detail": "Not found."}
        if query.get("action") != "create":
            return 400, {"detail": f"the stand-in creates only, not {query.get('action')!r}"}
        data = json.loads(body or b"{}")
        shapes, error = self._checked_shapes(task_id, data.get("shapes", []))
        if error:
            return 400, error
        stored = self.annotations[task_id]
        stored["shapes"] += shapes
        stored["version"] += 1
        self._annotations_saved(task_id)
        # CVAT saves the request job by job (each job's frames, ids in request order), then
        # answers with what it created, job after job (dataset_manager/task.py: _patch_data).
        segments = self.job_segments(task_id)
        created = [s for start, stop in segments for s in shapes if start <= s["frame"] <= stop]
        return 200, {"version": stored["version"], "tags": [], "shapes": created, "tracks": []}

    def delete_annotations(self, query, task_id):
        task_id = int(task_id)
        if task_id not in self.tasks:
            return 404, {"detail": "Not found."}
        stored = self.annotations[task_id]
        stored.update(tags=[], tracks=[], shapes=[], version=stored["version"] + 1)
        self._annotations_saved(task_id)
        return 204, None

    def job_segments(self, task_id: int) -> list[tuple[int, int]]:
        """(start, stop) frames of the task's annotation jobs: CVAT cuts a task into segments of
        equal size, one per job."""
        size = self.tasks[task_id]["size"]
        count = sum(
            1
            for job in self.jobs.values()
            if job["task_id"] == task_id and job["type"] == "annotation"
        )
        length = max(1, -(-size // max(count, 1)))
        return [(start, start + length - 1) for start in range(0, size, length)]

    def _checked_shapes(self, task_id: int, shapes: list[dict]) -> tuple[list[dict], object]:
        """The shapes as stored, with ids, or CVAT's kind of 400 answer for the first bad one."""
        task = self.tasks[task_id]
        checked = []
        for shape in shapes:
            label = self.labels.get(shape.get("label_id"))
            points = shape.get("points", [])
            frame = shape.get("frame")
            if label is None or label["task_id"] != task_id:
                return [], {"detail": f"label {shape.get('label_id')} is not in the task"}
            if label["type"] not in ("any", shape.get("type")):
                return [], {"detail": f"a {label['type']} label cannot take a {shape.get('type')}"}
            if shape.get("type") not in SHAPE_TYPES:
                return [], {"type": [f'"{shape.get("type")}" is not a valid choice.']}
            if not isinstance(frame, int) or not 0 <= frame < task["size"]:
                return [], {"detail": f"frame {frame} is outside the task"}
            if frame in task["deleted_frames"]:
                return [], {"detail": f"frame {frame} is deleted"}
            wanted = {"rectangle": 4}.get(shape["type"])
            if (
                (wanted and len(points) != wanted)
                or (shape["type"] == "polygon" and (len(points) < 6 or len(points) % 2))
                or (shape["type"] == "mask" and len(points) < 5)
            ):
                return [], {"points": [f"bad points for a {shape['type']}: {points}"]}
            checked.append(self._stored_shape(shape))
        return checked, None

    def _stored_shape(self, shape: dict) -> dict:
        stored = {**SHAPE_DEFAULTS, **shape, "id": self.next_shape_id}
        self.next_shape_id += 1
        return stored

    # --- native functions (CVAT Enterprise/Cloud): what cvat-cli's create-native, delete and
    # run-agent send and read (cvat_cli/_internal/agent.py, agent_driver_detection.py)

    def create_function(self, query, body):
        data = json.loads(body or b"{}")
        errors = {}
        for key, allowed in (
            ("provider", ("native",)),
            ("kind", ("detector", "interactor", "tracker")),
            ("visibility", ("private", "public")),
        ):
            if key in data or key != "visibility":
                if data.get(key) not in allowed:
                    errors[key] = [f'"{data.get(key)}" is not a valid choice.']
        if not str(data.get("name") or "").strip():
            errors["name"] = ["This field may not be blank."]
        labels = data.get("labels_v2", [])
        names = [label.get("name") for label in labels]
        if data.get("kind") == "detector" and (not labels or len(set(names)) != len(names)):
            errors["labels_v2"] = ["A detector needs labels with distinct names."]
        for label in labels:
            if label.get("type", "any") not in LABEL_TYPES:
                errors["labels_v2"] = [f'"{label.get("type")}" is not a valid label type.']
        if errors:
            return 400, errors
        function_id = max(self.functions, default=0) + 1
        self.functions[function_id] = {
            "id": function_id,
            "provider": data["provider"],
            "name": data["name"],
            "description": data.get("description", ""),
            "visibility": data.get("visibility", "private"),
            "kind": data["kind"],
            "labels_v2": [
                {**label, "type": label.get("type", "any"), "attributes": label["attributes"]}
                for label in labels
            ],
            "owner": self._owner(),
            "organization": None,
            "created_date": DATE,
            "updated_date": DATE,
        }
        return 201, self.functions[function_id]

    def list_functions(self, query):
        return self._page("/api/functions", query, list(self.functions.values()))

    def retrieve_function(self, query, function_id):
        function = self.functions.get(int(function_id))
        return (200, function) if function else (404, {"detail": "Not found."})

    def delete_function(self, query, function_id):
        if self.functions.pop(int(function_id), None) is None:
            return 404, {"detail": "Not found."}
        return 204, None

    def acquire_request(self, query, body, function_id):
        data = json.loads(body or b"{}")
        if int(function_id) not in self.functions:
            return 404, {"detail": "Not found."}
        if not data.get("agent_id") or data.get("request_category") not in ("batch", "interactive"):
            return 400, {"detail": "agent_id and request_category are required"}
        for ar_id, request in self.function_requests.items():
            if (request["function_id"], request["status"], request["category"]) == (
                int(function_id),
                "queued",
                data["request_category"],
            ):
                request.update(status="started", agent_id=data["agent_id"])
                return 200, {"ar_assignment": {"ar_id": ar_id, "ar_params": request["params"]}}
        return 200, {"ar_assignment": None}

    def update_request(self, query, body, function_id, ar_id):
        request, error = self._assigned_request(function_id, ar_id, body)
        if error:
            return error
        request["progress"] = json.loads(body)["progress"]
        return 200, {}

    def complete_request(self, query, body, function_id, ar_id):
        request, error = self._assigned_request(function_id, ar_id, body)
        if error:
            return error
        task_id = request["params"]["task"]
        annotations = json.loads(body).get("annotations") or {}
        shapes, problem = self._checked_shapes(task_id, annotations.get("shapes", []))
        if problem:
            return 400, problem
        stored = self.annotations[task_id]
        stored["shapes"] += shapes
        stored["version"] += 1
        self._annotations_saved(task_id)
        request["status"] = "finished"
        return 200, {}

    def fail_request(self, query, body, function_id, ar_id):
        request, error = self._assigned_request(function_id, ar_id, body)
        if error:
            return error
        request.update(status="failed", error=json.loads(body).get("exc_info"))
        return 200, {}

    def _assigned_request(self, function_id, ar_id, body) -> tuple[dict | None, tuple | None]:
        request = self.function_requests.get(unquote(ar_id))
        if request is None or request["function_id"] != int(function_id):
            return None, (404, {"detail": "Not found."})
        if (
            request["status"] != "started"
            or json.loads(body or b"{}").get("agent_id") != request["agent_id"]
        ):
            return None, (400, {"detail": "the request is not assigned to this agent"})
        return request, None

    # --- webhooks (cvat/apps/webhooks: WebhookWriteSerializer, WebhookReadSerializer)

    def list_webhooks(self, query):
        def matches(webhook):
            return all(
                str(webhook[name]) == query[name]
                for name in ("project_id", "target_url", "type")
                if name in query
            )

        found = [self._webhook_json(i) for i, w in sorted(self.webhooks.items()) if matches(w)]
        return self._page("/api/webhooks", query, found)

    def create_webhook(self, query, body):
        data = json.loads(body or b"{}")
        error = self._webhook_error(data, partial=False)
        if error:
            return 400, error
        webhook_id = max(self.webhooks, default=0) + 1
        self.webhooks[webhook_id] = {
            "target_url": data["target_url"],
            "type": data["type"],
            "events": list(data["events"]),
            "project_id": data.get("project_id"),
            "description": data.get("description", ""),
            "content_type": data.get("content_type", "application/json"),
            "secret": data.get("secret", ""),
            "is_active": data.get("is_active", True),
            "enable_ssl": data.get("enable_ssl", True),
        }
        return 201, self._webhook_json(webhook_id)

    def patch_webhook(self, query, body, webhook_id):
        webhook_id = int(webhook_id)
        if webhook_id not in self.webhooks:
            return 404, {"detail": "Not found."}
        data = json.loads(body or b"{}")
        error = self._webhook_error(data, partial=True)
        if error:
            return 400, error
        self.webhooks[webhook_id].update(data)
        return 200, self._webhook_json(webhook_id)

    def _webhook_error(self, data: dict, *, partial: bool) -> dict | None:
        required = () if partial else ("target_url", "type", "events")
        missing = [name for name in required if name not in data]
        if missing:
            return {name: ["This field is required."] for name in missing}
        if data.get("type", "project") not in ("project", "organization"):
            return {"type": [f'"{data["type"]}" is not a valid choice.']}
        if data.get("type") == "project" and data.get("project_id") not in self.projects:
            return {"project_id": ["Project not found"]}
        unknown = [e for e in data.get("events", []) if e not in WEBHOOK_EVENTS]
        if unknown:
            return {"events": [f"Unknown events: {unknown}"]}
        return None

    def _webhook_json(self, webhook_id: int) -> dict:
        webhook = self.webhooks[webhook_id]
        return {
            "id": webhook_id,
            "url": f"{self.url}/api/webhooks/{webhook_id}",
            "target_url": webhook["target_url"],
            "description": webhook["description"],
            "type": webhook["type"],
            "content_type": webhook["content_type"],
            "is_active": webhook["is_active"],
            "enable_ssl": webhook["enable_ssl"],
            "created_date": DATE,
            "updated_date": DATE,
            "owner": self._owner(),
            "project_id": webhook["project_id"],
            "organization": None,
            "events": webhook["events"],
            # last_status and last_delivery_date: absent until the first delivery
        }

    # --- JSON as CVAT writes it

    def _label_json(self, label_id: int) -> dict:
        label = self.labels[label_id]
        return {
            "id": label_id,
            "name": label["name"],
            "color": "#33ddff",
            "attributes": [],
            "type": label["type"],
            "svg": "",
            "sublabels": [],
            "project_id": None,
            "task_id": label["task_id"],
            "parent_id": None,
            "has_parent": False,
        }

    def _annotations_json(self, task_id: int) -> dict:
        stored = self.annotations[task_id]
        return {
            "version": stored["version"],
            "tags": stored["tags"],
            "shapes": stored["shapes"],
            "tracks": stored["tracks"],
        }

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
        json_task = {
            "url": f"{self.url}/api/tasks/{task_id}",
            "id": task_id,
            "name": self._task_name(task_id),
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
            "data_chunk_size": self.chunk_size,
            "data_compressed_chunk_type": "video" if task.get("video") else "imageset",
            "guide_id": None,
            "data_original_chunk_type": "video" if task.get("video") else "imageset",
            "size": task["size"],
            "image_quality": 70,
            "data": task_id,
            "dimension": "2d",
            "media_type": "video" if task.get("video") else "image",
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
        if not task.get("has_data", True):
            # A task created without data yet: CVAT's serializer skips the fields of its data
            # (source="data.*", required=False), so they are absent, not null.
            for name in DATA_FIELDS:
                del json_task[name]
        return json_task

    def _task_name(self, task_id: int) -> str:
        return self.tasks[task_id].get("name") or f"task {task_id}"

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
            "stage": job.get("stage")
            or ("acceptance" if job["state"] == "completed" else "annotation"),
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
            "updated_date": job.get("updated_date", DATE),
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
        if finished and export.type.startswith("export"):
            download = f"/api/{export.target}s/{export.target_id}/dataset/download"
            result_url = f"{self.url}{download}?{urlencode({'rq_id': export.rq_id})}"
        return {
            "status": export.status,
            "message": self.fail_exports_with if export.status == "failed" else "",
            "id": export.rq_id,
            "operation": {
                "target": export.target,
                "type": export.type,
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
        unsafe = method in ("POST", "PUT", "PATCH", "DELETE")
        if unsafe and headers.get("X-CSRFToken") != cookies.get("csrftoken"):
            return 403, {"detail": "CSRF Failed: CSRF token missing."}
        return None


ROUTES = [  # (method, path pattern, endpoint, needs authentication)
    ("GET", r"/api/server/about", "about", False),
    ("POST", r"/api/auth/login", "login", False),
    ("GET", r"/api/users/self", "user_self", True),
    ("GET", r"/api/tasks", "list_tasks", True),
    ("POST", r"/api/tasks", "create_task", True),
    ("POST", r"/api/tasks/(\d+)/data/?", "upload_data", True),
    ("GET", r"/api/jobs", "list_jobs", True),
    ("GET", r"/api/(task|project|job)s/(\d+)", "retrieve", True),
    ("POST", r"/api/(task|project|job)s/(\d+)/dataset/export", "export", True),
    ("GET", r"/api/requests/([^/]+)", "request_status", True),
    ("GET", r"/api/(task|project|job)s/(\d+)/dataset/download", "download", True),
    ("GET", r"/api/labels", "list_labels", True),
    ("GET", r"/api/tasks/(\d+)/data/meta", "data_meta", True),
    ("GET", r"/api/tasks/(\d+)/data/?", "data", True),
    ("GET", r"/api/tasks/(\d+)/annotations/?", "get_annotations", True),
    ("PUT", r"/api/tasks/(\d+)/annotations/?", "put_annotations", True),
    ("PATCH", r"/api/tasks/(\d+)/annotations/?", "patch_annotations", True),
    ("DELETE", r"/api/tasks/(\d+)/annotations/?", "delete_annotations", True),
    ("GET", r"/api/webhooks", "list_webhooks", True),
    ("POST", r"/api/webhooks", "create_webhook", True),
    ("PATCH", r"/api/webhooks/(\d+)", "patch_webhook", True),
]
WITH_BODY = ("login", "put_annotations", "patch_annotations", "create_webhook", "patch_webhook")
WITH_BODY += ("create_task", "upload_data")
WITH_HEADERS = ("upload_data",)
# TaskReadSerializer's fields read from the task's data
DATA_FIELDS = ("data", "data_chunk_size", "data_compressed_chunk_type", "data_original_chunk_type")
DATA_FIELDS += ("image_quality", "media_type")
# cvat/apps/webhooks/event_type.py: the events a project webhook may subscribe to (in part)
WEBHOOK_EVENTS = ("create:job", "update:job", "delete:job", "create:task", "update:task")
WEBHOOK_EVENTS += ("delete:task", "update:project", "create:issue", "update:issue")


def _after_date(seconds: int) -> str:
    start = datetime.strptime(DATE, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _frame(name: str, data: bytes) -> MockFrame:
    with Image.open(io.BytesIO(data)) as image:
        content_type = Image.MIME.get(image.format, "application/octet-stream")
        return MockFrame(name, data, image.width, image.height, content_type)


# cvat-sdk percent-encodes the ":" of the queue id
FUNCTION_QUEUE = r"/api/functions/queues/function(?::|%3[Aa])(\d+)/requests"
FUNCTION_ROUTES = [  # the native functions API, as ROUTES
    ("POST", r"/api/functions/?", "create_function", True),
    ("GET", r"/api/functions/?", "list_functions", True),
    ("GET", r"/api/functions/(\d+)/?", "retrieve_function", True),
    ("DELETE", r"/api/functions/(\d+)/?", "delete_function", True),
    ("POST", FUNCTION_QUEUE + r"/acquire/?", "acquire_request", True),
    ("POST", FUNCTION_QUEUE + r"/([^/]+)/update/?", "update_request", True),
    ("POST", FUNCTION_QUEUE + r"/([^/]+)/complete/?", "complete_request", True),
    ("POST", FUNCTION_QUEUE + r"/([^/]+)/fail/?", "fail_request", True),
]
FUNCTION_WITH_BODY = ("create_function", "acquire_request", "update_request")
FUNCTION_WITH_BODY += ("complete_request", "fail_request")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

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
        if mock.latency:
            time.sleep(mock.latency)

        pending = mock.failures.get((method, unquote(path)))
        if pending:
            status = pending.pop(0)
            return self._send(status, {"detail": f"injected HTTP {status}"})
        for route_method, pattern, endpoint, needs_auth in ROUTES + FUNCTION_ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method != method or not match:
                continue
            if needs_auth and (error := mock.authentication_error(method, self.headers)):
                return self._send(*error)
            with_body = endpoint in WITH_BODY + FUNCTION_WITH_BODY
            arguments = (query, body) if with_body else (query,)
            if endpoint in WITH_HEADERS:
                arguments += (dict(self.headers),)
            return self._send(*getattr(mock, endpoint)(*arguments, *match.groups()))
        self._send(404, {"detail": f"no route for {method} {path}"})

    def _send(self, status: int, body, headers=()) -> None:
        if body is None:
            data, content_type = b"", ""
        elif isinstance(body, bytes):
            data, content_type = body, "application/zip"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        headers = list(headers)
        content_type = next((v for k, v in headers if k == "Content-Type"), content_type)
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            if name != "Content-Type":
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
