"""The HTTP face of `cvat-kfp webhook serve`: a Starlette app CVAT delivers its webhooks to.

- `POST /webhook`: a CVAT delivery. CVAT signs the body it sends (`json.dumps(payload)`) with
  the webhook's secret: `X-Signature-256: sha256=<hex HMAC-SHA256>`. Checked on the raw bytes,
  in constant time, before anything is parsed. The answers, none of which writes anything:
  413 body over the cap (read no further) · 401 no signature · 403 wrong signature ·
  400 not JSON, or an event without its task · 200 `ping`, and events the service does not act on
  (CVAT counts a 4xx as a failed delivery of a genuine, signed event; 200 with `ignored` and a
  log line says "received, nothing to do") · 202 queued: the worker asks CVAT and submits later,
  so CVAT has its answer at once.
- `GET /runs`: what was submitted (or skipped) for which task and annotation version; behind
  `Authorization: Bearer $CVAT_KFP_RUNS_TOKEN`, as it names tasks and runs.
- `GET /healthz`: open; 503 when the background worker has died.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cvat_kfp.pipelines.webhook.rules import Rules
from cvat_kfp.pipelines.webhook.store import Store
from cvat_kfp.pipelines.webhook.worker import Worker

log = logging.getLogger("cvat_kfp.webhook")

SECRET_ENV = "CVAT_WEBHOOK_SECRET"
RUNS_TOKEN_ENV = "CVAT_KFP_RUNS_TOKEN"
MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_HEADER = "X-Signature-256"


class BodyTooLarge(Exception):
    pass


def sign(secret: str, body: bytes) -> str:
    """The X-Signature-256 value CVAT sends for `body` (cvat/apps/webhooks/utils.py)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, delivery: str, message: str, **extra: Any) -> JSONResponse:
    level = logging.INFO if status < 400 else logging.WARNING
    log.log(level, "delivery %s: %d %s", delivery, status, message)
    key = "ignored" if status == 200 and "ignored" not in extra else "detail"
    return JSONResponse({key: message, **extra}, status_code=status)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def create_app(
    rules: Rules,
    store: Store,
    worker: Worker,
    *,
    secret: str,
    runs_token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    if not secret:
        raise ValueError(f"no webhook secret: set {SECRET_ENV} (the secret given to CVAT)")

    async def receive(request: Request) -> JSONResponse:
        delivery = (request.client.host if request.client else "?") + " " + request.url.path
        try:
            body = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            return _answer(413, delivery, f"body over {max_body_bytes} bytes; refused")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return _answer(
                401,
                delivery,
                f"no {SIGNATURE_HEADER} header: set the webhook's "
                "secret in CVAT (cvat-kfp webhook register does)",
            )
        if not hmac.compare_digest(signature.encode(), sign(secret, body).encode()):
            return _answer(
                403,
                delivery,
                f"{SIGNATURE_HEADER} does not match the body: the "
                f"secret in CVAT differs from {SECRET_ENV}, or the "
                "body was altered",
            )
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _answer(400, delivery, f"the body is not JSON: {error}")
        if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
            return _answer(400, delivery, 'the body is not a CVAT event: no "event" field')
        event = payload["event"]
        delivery += f" {event} (webhook {payload.get('webhook_id', '?')})"
        if event == "ping":
            return _answer(200, delivery, "pong", ignored=False, pong=True)
        if event == "update:job":
            job = payload.get("job")
            task_id = _int(job.get("task_id")) if isinstance(job, dict) else None
            if task_id is None:
                return _answer(400, delivery, 'update:job without "job": {"task_id": ...}')
            project_id = _int(job.get("project_id"))
            rule = rules.for_task(task_id, project_id)
            if rule is not None and not _job_may_finish(job, rule.when):
                return _answer(
                    200,
                    delivery,
                    f"job {job.get('id')} of task {task_id} is "
                    f"{job.get('state')!r} in stage {job.get('stage')!r}: its task is "
                    "not done",
                )
        elif event == "update:task":
            task = payload.get("task")
            task_id = _int(task.get("id")) if isinstance(task, dict) else None
            if task_id is None:
                return _answer(400, delivery, 'update:task without "task": {"id": ...}')
            project_id = _int(task.get("project_id"))
        else:
            return _answer(
                200,
                delivery,
                f"event {event!r} is not one the service acts on (update:job, update:task, ping)",
            )
        where = f"task {task_id}" + (f" of project {project_id}" if project_id else "")
        if rules.for_task(task_id, project_id) is None:
            return _answer(
                200,
                delivery,
                f"{where}: no rule in {rules.source} for it or its project; nothing submitted",
            )
        worker.notify(task_id, f"{event} delivery")
        return _answer(202, delivery, f"{where}: queued for a check", queued=task_id)

    async def runs(request: Request) -> JSONResponse:
        if not runs_token:
            return JSONResponse(
                {"detail": f"GET /runs is off: set {RUNS_TOKEN_ENV} to turn it on"}, status_code=403
            )
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {runs_token}".encode()):
            log.warning(
                "GET /runs from %s: missing or wrong bearer token",
                request.client.host if request.client else "?",
            )
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse({"runs": [record.as_json() for record in store.all()]})

    async def healthz(request: Request) -> JSONResponse:
        if not worker.alive:
            return JSONResponse({"status": "worker stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    return Starlette(
        routes=[
            Route("/webhook", receive, methods=["POST"]),
            Route("/runs", runs, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _job_may_finish(job: dict, when: str) -> bool:
    """Whether this job's change can be the one that completes its task (else: nothing to do)."""
    return job.get("state") == "completed" or (
        when == "acceptance" and job.get("stage") == "acceptance"
    )


def runs_token_from_env() -> str | None:
    return os.environ.get(RUNS_TOKEN_ENV) or None


def secret_from_env() -> str:
    return os.environ.get(SECRET_ENV, "")
