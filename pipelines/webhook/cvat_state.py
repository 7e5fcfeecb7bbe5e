"""What the service asks CVAT: are a task's (or a project's) jobs done, at which annotation
version; does a task hold annotations; which task to pre-annotate next; and the webhook itself.

Everything goes through cvat-sdk and the suite's CVAT client (components/common/cvat_client):
credentials from the environment (CVAT_ACCESS_TOKEN, or CVAT_USERNAME and CVAT_PASSWORD), retries
with backoff on transient failures, refusals turned into advice.

The annotation version of a task is the latest `updated_date` of its annotation jobs (CVAT
touches a job when its annotations, state or stage change), so "the same task, annotated the
same" has one version however many deliveries say so, and reopening a job, editing and
completing it again makes a new one. A project's version is the latest over all its tasks' jobs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


@dataclass(frozen=True)
class Completion:
    """Whether a task's (or project's) annotation jobs are all done, and at which version."""

    target: str  # "task 12" or "project 7"
    complete: bool
    version: str  # the annotation version; "" when there are no annotation jobs
    summary: str  # "3 of 4 annotation jobs completed", for the log
    task_ids: tuple[int, ...] = field(default=())


def _job_done(job: Any, when: str) -> bool:
    if job.state == "completed":
        return True
    return when == "acceptance" and getattr(job, "stage", None) == "acceptance"


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _annotation_jobs(jobs: list[Any]) -> list[Any]:
    # Ground-truth jobs and consensus replicas review frames the annotation jobs already hold.
    return [job for job in jobs if getattr(job, "type", "annotation") == "annotation"]


def completion(target: str, jobs: list[Any], when: str) -> Completion:
    """`jobs`: every job of the target (cvat-sdk models); `when`: "completed" or "acceptance"."""
    annotation_jobs = _annotation_jobs(jobs)
    task_ids = tuple(sorted({job.task_id for job in annotation_jobs}))
    if not annotation_jobs:
        return Completion(target, False, "", "no annotation jobs", task_ids)
    done = [job for job in annotation_jobs if _job_done(job, when)]
    word = "completed" if when == "completed" else "completed or in acceptance"
    summary = f"{len(done)} of {len(annotation_jobs)} annotation job(s) {word}"
    version = _timestamp(max(job.updated_date for job in annotation_jobs))
    return Completion(target, len(done) == len(annotation_jobs), version, summary, task_ids)


class CvatSession:
    """One signed-in cvat-sdk client; open it with `CvatAccess.session()`."""

    def __init__(self, client: CvatClient, call: CvatCaller):
        self.client = client
        self.call = call

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

    def has_annotations(self, task_id: int) -> bool:
        annotations = self.call(
            f"read the annotations of task {task_id}",
            partial(self.client.api_client.tasks_api.retrieve_annotations, task_id),
            resource=f"task {task_id}",
        )[0]
        return bool(annotations.shapes or annotations.tracks or annotations.tags)

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
        credentials_from_env()  # no credentials: fail at start, with the variables to set

    @contextlib.contextmanager
    def session(self) -> Iterator[CvatSession]:
        credentials, source = credentials_from_env()
        call = CvatCaller(self.url, source, self.retries, self.retry_delay, self.log_line)
        with CvatClient(self.url, call, poll_interval=2.0, timeout=60.0) as client:
            connect(client, call, credentials)
            yield CvatSession(client, call)


__all__ = ["CvatAccess", "CvatServerError", "CvatSession", "Completion", "completion"]
