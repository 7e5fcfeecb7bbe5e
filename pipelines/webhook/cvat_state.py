"""What the service asks CVAT: are a task's (or a project's) jobs done, at which annotation
version; does a task hold annotations; which task to pre-annotate next; and the webhook itself.

Everything goes through cvat-sdk and the suite's CVAT client (components/common/cvat_client):
credentials from the environment (CVAT_ACCESS_TOKEN, or CVAT_USERNAME and CVAT_PASSWORD), retries
with backoff on transient failures, refusals turned into advice.

The annotation version of a done task is a digest of its annotations as CVAT serves them (tags,
shapes and tracks, each in id order): "the same task, annotated the same" has one version however
many deliveries say so and whatever else changes on its jobs (an assignee, a state reopened and
completed again without edits), and any change to the annotations makes a new one. CVAT keeps no
annotation version of its own (the API's `version` is always 0) and a job's `updated_date` moves
on any change to the job. A project's version covers all its tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cvat_sdk.core.helpers import get_paginated_collection

from cvat_kfp.components.common.cvat_client import (
    CvatCaller,
    CvatClient,
    CvatServerError,
    connect,
    credentials_from_env,
)

log = logging.getLogger("cvat_kfp.webhook")

WEBHOOK_EVENTS = ("update:job", "update:task")
ANNOTATION_KINDS = ("tags", "shapes", "tracks")


@dataclass(frozen=True)
class Completion:
    """Whether a task's (or project's) annotation jobs are all done."""

    target: str  # "task 12" or "project 7"
    complete: bool
    summary: str  # "3 of 4 annotation jobs completed", for the log
    task_ids: tuple[int, ...] = field(default=())
    # each task's latest job update: CVAT moves a job's updated_date whenever its annotations
    # change, so a task whose stamp has not moved holds the annotations it held then
    task_stamps: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AnnotationContent:
    """What a done target's tasks hold: the annotation version, and which tasks hold any."""

    version: str  # "sha256:" and 16 hex digits of the digest
    annotated_task_ids: tuple[int, ...]


def task_annotation_digest(held: dict) -> str:
    """A digest of one task's annotations JSON as CVAT serves it: its tags, shapes and tracks,
    each in id order, so that neither the server's order nor anything but them moves it."""
    canonical = {
        kind: sorted(held.get(kind) or [], key=lambda item: item.get("id") or 0)
        for kind in ANNOTATION_KINDS
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def annotation_version(task_digests: Iterable[tuple[int, str]]) -> str:
    """The annotation version of a target from its (task id, task digest) pairs."""
    combined = "".join(f"{task_id}:{digest}\n" for task_id, digest in sorted(task_digests))
    return "sha256:" + hashlib.sha256(combined.encode()).hexdigest()[:16]


def holds_annotations(held: dict) -> bool:
    """Whether a task's annotations JSON holds any tag, shape or track."""
    return any(held.get(kind) for kind in ANNOTATION_KINDS)


def _job_done(job: Any, when: str) -> bool:
    if job.state == "completed":
        return True
    return when == "acceptance" and getattr(job, "stage", None) == "acceptance"


def _annotation_jobs(jobs: list[Any]) -> list[Any]:
    # Ground-truth jobs and consensus replicas review frames the annotation jobs already hold.
    return [job for job in jobs if getattr(job, "type", "annotation") == "annotation"]


def completion(target: str, jobs: list[Any], when: str) -> Completion:
    """`jobs`: every job of the target (cvat-sdk models); `when`: "completed" or "acceptance"."""
    annotation_jobs = _annotation_jobs(jobs)
    task_ids = tuple(sorted({job.task_id for job in annotation_jobs}))
    latest: dict[int, Any] = {}
    for job in jobs:  # every job: a ground-truth job's edits change what the task holds too
        if job.task_id not in latest or job.updated_date > latest[job.task_id]:
            latest[job.task_id] = job.updated_date
    stamps = {task_id: str(moment) for task_id, moment in latest.items()}
    if not annotation_jobs:
        return Completion(target, False, "no annotation jobs", task_ids)
    done = [job for job in annotation_jobs if _job_done(job, when)]
    word = "completed" if when == "completed" else "completed or in acceptance"
    summary = f"{len(done)} of {len(annotation_jobs)} annotation job(s) {word}"
    return Completion(target, len(done) == len(annotation_jobs), summary, task_ids, stamps)


class CvatSession:
    """One signed-in cvat-sdk client; open it with `CvatAccess.session()`."""

    def __init__(self, client: CvatClient, call: CvatCaller, digests: dict):
        self.client = client
        self.call = call
        self.digests = digests  # task id -> (stamp, digest, holds any), kept by CvatAccess

    def _list(self, what: str, endpoint, **filters) -> list[Any]:
        return self.call(what, partial(get_paginated_collection, endpoint, **filters))

    def task(self, task_id: int) -> Any:
        resource = f"task {task_id}"
        return self.call(
            f"read {resource}", partial(self.client.tasks.retrieve, task_id), resource=resource
        )

    def task_completion(self, task_id: int, when: str) -> Completion:
        jobs = self._list(
            f"list the jobs of task {task_id}",
            self.client.api_client.jobs_api.list_endpoint,
            task_id=task_id,
        )
        return completion(f"task {task_id}", jobs, when)

    def project_tasks(self, project_id: int) -> list[Any]:
        return self._list(
            f"list the tasks of project {project_id}",
            self.client.api_client.tasks_api.list_endpoint,
            project_id=project_id,
        )

    def project_completion(self, project_id: int, when: str) -> Completion:
        jobs = self._list(
            f"list the jobs of project {project_id}",
            self.client.api_client.jobs_api.list_endpoint,
            project_id=project_id,
        )
        return completion(f"project {project_id}", jobs, when)

    def task_annotations(self, task_id: int) -> dict:
        """The task's annotations as CVAT serves them: JSON with tags, shapes and tracks."""
        response = self.call(
            f"read the annotations of task {task_id}",
            partial(
                self.client.api_client.tasks_api.retrieve_annotations,
                task_id,
                _parse_response=False,
            ),
            resource=f"task {task_id}",
        )[1]
        return json.loads(response.data)

    def has_annotations(self, task_id: int) -> bool:
        return holds_annotations(self.task_annotations(task_id))

    def annotation_content(self, state: Completion) -> AnnotationContent:
        """The annotation version of a done target's tasks, and which hold annotations. A task is
        read from CVAT only when its stamp moved since the last read (the digests are kept by
        `CvatAccess`, across sessions); one task's annotations in memory at a time."""
        digests, annotated = [], []
        for task_id in state.task_ids:
            stamp = state.task_stamps.get(task_id, "")
            known = self.digests.get(task_id)
            if known is None or known[0] != stamp or not stamp:
                held = self.task_annotations(task_id)
                known = (stamp, task_annotation_digest(held), holds_annotations(held))
                self.digests[task_id] = known
            digests.append((task_id, known[1]))
            if known[2]:
                annotated.append(task_id)
        return AnnotationContent(annotation_version(digests), tuple(annotated))

    def first_unannotated_task(self, project_id: int, exclude: set[int]) -> int | None:
        """The project's first task (by id) with images and no annotations, not in `exclude`."""
        for task in sorted(self.project_tasks(project_id), key=lambda t: t.id):
            if task.id in exclude or not task.size:
                continue
            if not self.has_annotations(task.id):
                return task.id
        return None

    # --- the webhook, for `cvat-kfp webhook register`

    def ensure_webhook(
        self, *, project_id: int, target_url: str, secret: str, enable_ssl: bool = True
    ) -> tuple[str, Any]:
        """Create the project's webhook to `target_url`, or bring the existing one up to date.

        Returns ("created" | "updated", the webhook). Idempotent: a second call finds the first
        one's webhook by project and URL and changes nothing but what differs from what is asked.
        """
        from cvat_sdk.api_client import models

        api = self.client.api_client.webhooks_api
        existing = [
            webhook
            for webhook in self._list(
                f"list the webhooks of project {project_id}",
                api.list_endpoint,
                project_id=project_id,
                target_url=target_url,
            )
            if webhook.target_url == target_url and webhook.project_id == project_id
        ]
        events = [models.EventsEnum(event) for event in WEBHOOK_EVENTS]
        content_type = models.WebhookContentType("application/json")
        if existing:
            webhook = existing[0]
            patch = models.PatchedWebhookWriteRequest(
                events=events,
                secret=secret,
                is_active=True,
                enable_ssl=enable_ssl,
                content_type=content_type,
            )
            updated, _ = self.call(
                f"update webhook {webhook.id}",
                partial(api.partial_update, webhook.id, patched_webhook_write_request=patch),
                resource=f"webhook {webhook.id}",
            )
            return "updated", updated
        request = models.WebhookWriteRequest(
            target_url=target_url,
            type=models.WebhookType("project"),
            events=events,
            project_id=project_id,
            content_type=content_type,
            secret=secret,
            is_active=True,
            enable_ssl=enable_ssl,
            description="cvat-kfp: trains a model when the task's annotation jobs are done",
        )
        created, _ = self.call(
            f"create a webhook for project {project_id}",
            partial(api.create, webhook_write_request=request),
            resource=f"project {project_id}",
        )
        return "created", created


class CvatAccess:
    """Where CVAT is and how to sign in; `session()` opens a client for a batch of questions."""

    def __init__(
        self,
        url: str,
        *,
        retries: int = 2,
        retry_delay: float = 1.0,
        log_line: Callable[[str], Any] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.retry_delay = retry_delay
        self.log_line = log_line or log.info
        self.digests: dict[int, tuple[str, str, bool]] = {}  # see CvatSession.annotation_content
        credentials_from_env()  # no credentials: fail at start, with the variables to set

    @contextlib.contextmanager
    def session(self) -> Iterator[CvatSession]:
        credentials, source = credentials_from_env()
        call = CvatCaller(self.url, source, self.retries, self.retry_delay, self.log_line)
        with CvatClient(self.url, call, poll_interval=2.0, timeout=60.0) as client:
            connect(client, call, credentials)
            yield CvatSession(client, call, self.digests)


__all__ = [
    "AnnotationContent",
    "CvatAccess",
    "CvatServerError",
    "CvatSession",
    "Completion",
    "annotation_version",
    "completion",
    "task_annotation_digest",
]
