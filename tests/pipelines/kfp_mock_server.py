"""A local stand-in for the Kubeflow Pipelines API server: the v2beta1 REST endpoints kfp.Client
calls to upload pipelines and versions and to start runs, with in-memory state.

Its answers are what the real server sends, in the JSON form kfp_server_api's generated models
deserialize (snake_case keys); the client refuses anything else, which makes this a contract
check. Every request is recorded (method, path, query, headers, body) for the tests to inspect.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    files: dict[str, bytes] = field(default_factory=dict)

    def json(self) -> dict:
        return json.loads(self.body)


class KfpState:
    def __init__(self):
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.runs: dict[str, dict] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def next_id(self, kind: str, existing) -> str:
        return f"{kind}-{len(existing) + 1}"


def _display_name_filter(query: dict[str, str]) -> str | None:
    """The display_name an EQUALS filter asks for (kfp.Client's get_experiment/get_pipeline_id,
    list_runs). The API server reads the filter as protobuf JSON: the operation by name or number
    (EQUALS is 1), the value as string_value or stringValue."""
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"]).get("predicates", []):
        if predicate.get("key") == "display_name":
            if predicate.get("operation") not in ("EQUALS", 1):
                raise ValueError(f"the stand-in filters with EQUALS only: {predicate}")
            return predicate.get("string_value", predicate.get("stringValue"))
    return None


RUN_FIELDS = ("run_id", "experiment_id", "display_name", "state", "storage_state")


class _Handler(BaseHTTPRequestHandler):
    server: KfpServer

    def log_message(self, format, *args):
        pass

    def _record(self) -> Request:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            self.command,
            url.path,
            {k: v[-1] for k, v in parse_qs(url.query).items()},
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            for part in message.iter_parts():
                request.files[part.get_param("name", header="content-disposition")] = (
                    part.get_payload(decode=True)
                )
        with self.server.state.lock:
            self.server.state.requests.append(request)
        return request

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, request: Request) -> None:
        self._send(404, {"error": f"no route {request.method} {request.path}", "code": 5})

    def do_GET(self):
        request = self._record()
        state = self.server.state
        if self.server.required_token and not self._authorized(request):
            return
        if request.path == f"{API}/healthz":
            self._send(200, {"multi_user": False, "pipeline_store": "database"})
        elif request.path == f"{API}/experiments":
            wanted = _display_name_filter(request.query)
            found = [e for e in state.experiments.values() if wanted in (None, e["display_name"])]
            self._send(200, {"experiments": found, "total_size": len(found)} if found else {})
        elif request.path == f"{API}/pipelines":
            wanted = _display_name_filter(request.query)
            found = [p for p in state.pipelines.values() if wanted in (None, p["display_name"])]
            self._send(200, {"pipelines": found, "total_size": len(found)} if found else {})
        elif request.path == f"{API}/runs":
            wanted = _display_name_filter(request.query)
            found = [
                {name: run[name] for name in RUN_FIELDS}
                for run in state.runs.values()
                if wanted in (None, run["display_name"])
                and request.query.get("experiment_id") in (None, run["experiment_id"])
            ][: int(request.query.get("page_size") or 10)]
            self._send(200, {"runs": found, "total_size": len(found)} if found else {})
        else:
            self._not_found(request)

    def do_POST(self):
        request = self._record()
        state = self.server.state
        if self.server.required_token and not self._authorized(request):
            return
        with state.lock:
            if request.path == f"{API}/experiments":
                body = request.json()
                experiment_id = state.next_id("experiment", state.experiments)
                experiment = {
                    "experiment_id": experiment_id,
                    "display_name": body["display_name"],
                    "namespace": body.get("namespace") or "",
                    "storage_state": "AVAILABLE",
                }
                state.experiments[experiment_id] = experiment
                self._send(200, experiment)
            elif request.path == f"{API}/runs":
                body = request.json()
                if body.get("experiment_id") not in state.experiments:
                    self._send(400, {"error": "unknown experiment_id", "code": 3})
                    return
                run_id = state.next_id("run", state.runs)
                run = {
                    "run_id": run_id,
                    "experiment_id": body["experiment_id"],
                    "display_name": body["display_name"],
                    "state": "PENDING",
                    "storage_state": "AVAILABLE",
                }
                state.runs[run_id] = {**body, **run}
                self._send(200, run)
            elif request.path == f"{API}/pipelines/upload":
                name = request.query["name"]
                if any(p["display_name"] == name for p in state.pipelines.values()):
                    self._send(409, {"error": f"pipeline {name} already exists", "code": 6})
                    return
                pipeline_id = state.next_id("pipeline", state.pipelines)
                pipeline = {
                    "pipeline_id": pipeline_id,
                    "display_name": name,
                    "description": request.query.get("description", ""),
                }
                state.pipelines[pipeline_id] = pipeline
                state.versions[pipeline_id] = [
                    {"pipeline_version_id": f"{pipeline_id}-v1", "package": request.files}
                ]
                self._send(200, pipeline)
            elif request.path == f"{API}/pipelines/upload_version":
                pipeline_id = request.query["pipelineid"]
                if pipeline_id not in state.pipelines:
                    self._send(404, {"error": f"no pipeline {pipeline_id}", "code": 5})
                    return
                versions = state.versions[pipeline_id]
                version = {
                    "pipeline_id": pipeline_id,
                    "pipeline_version_id": f"{pipeline_id}-v{len(versions) + 1}",
                    "display_name": request.query["name"],
                    "description": request.query.get("description", ""),
                }
                versions.append({**version, "package": request.files})
                self._send(200, version)
            else:
                self._not_found(request)

    def _authorized(self, request: Request) -> bool:
        if request.headers.get("authorization") == f"Bearer {self.server.required_token}":
            return True
        self._send(401, {"error": "missing or wrong bearer token", "code": 16})
        return False


class KfpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, required_token: str | None = None, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = KfpState()
        self.required_token = required_token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> KfpServer:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)
