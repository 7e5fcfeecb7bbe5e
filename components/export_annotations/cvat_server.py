"""Pull "COCO 1.0" exports with images from a CVAT server through cvat-sdk; the server converts.

Credentials come only from the environment, which the pipeline fills from a Kubernetes Secret:
CVAT_ACCESS_TOKEN (a personal access token), or CVAT_USERNAME and CVAT_PASSWORD; optional
CVAT_ORGANIZATION is the slug of the organization that owns the resources.

One archive per task or job, each with the group that must not be split apart. A project is
exported task by task: a project-wide archive would not say which task an image came from, and
tasks (often videos) are what must stay whole. With completed_jobs_only, a task whose annotation
jobs are all completed is exported whole; otherwise each completed job is exported alone (group:
its task).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import urllib3
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.client import AccessTokenCredentials, Client, Config, PasswordCredentials
from cvat_sdk.core.exceptions import BackgroundRequestException
from cvat_sdk.core.progress import BaseProgressReporter
from cvat_sdk.core.proxies.types import Location
from cvat_sdk.version import VERSION as SDK_VERSION

TOKEN_VAR = "CVAT_ACCESS_TOKEN"
USERNAME_VAR = "CVAT_USERNAME"
PASSWORD_VAR = "CVAT_PASSWORD"
ORGANIZATION_VAR = "CVAT_ORGANIZATION"

MAX_RETRY_DELAY = 60.0
# 409: CVAT refuses a second identical export while the first runs; it is worth waiting for.
TRANSIENT_STATUSES = (409, 429)


class CvatServerError(RuntimeError):
    """CVAT could not be reached, refused, failed or took too long; the message says what to do."""


@dataclass
class ServerExport:
    archive: Path  # the downloaded "COCO 1.0" zip with images
    resource: str  # e.g. "task 12", "task 12 in project 3", "job 45", "job 45 in task 12"
    group: str  # what must not be split apart: its task, e.g. "task-12"


def export_from_cvat(
    server_url: str,
    dest_dir: Path,
    *,
    task_ids: Iterable[int] = (),
    project_ids: Iterable[int] = (),
    job_ids: Iterable[int] = (),
    completed_jobs_only: bool = False,
    format_name: str = "COCO 1.0",
    poll_interval: float = 2.0,
    timeout: float = 3600,
    retries: int = 5,
    retry_delay: float = 2.0,
    log: Callable[[str], Any] = print,
) -> list[ServerExport]:
    """Export tasks, projects (task by task) and jobs with images; one zip each in dest_dir.

    `timeout` bounds the wait for the server to prepare one export; `retries` is how many times a
    transient failure (connection error, HTTP 5xx, 409, 429) is retried, after `retry_delay`
    seconds, doubling each time. Raises CvatServerError with what to do about it.
    """
    credentials, credentials_source = _credentials_from_env()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    call = _Caller(server_url, credentials_source, retries, retry_delay, log)
    with _ExportClient(server_url, call, poll_interval, timeout) as client:
        _connect(client, call, credentials)
        targets = _plan(
            client, call, task_ids, project_ids, job_ids, completed_jobs_only=completed_jobs_only
        )
        log(f"exporting {len(targets)} archive(s) as {format_name!r} with images to {dest_dir}")
        return [_export(call, target, dest_dir, format_name) for target in targets]


def _credentials_from_env():
    token = os.environ.get(TOKEN_VAR, "").strip()
    if token:
        return AccessTokenCredentials(token), TOKEN_VAR
    username = os.environ.get(USERNAME_VAR, "").strip()
    password = os.environ.get(PASSWORD_VAR, "")
    if username and password:
        return PasswordCredentials(username, password), f"{USERNAME_VAR}/{PASSWORD_VAR}"
    half_set = f" ({USERNAME_VAR} is set, {PASSWORD_VAR} is not)" if username else ""
    raise CvatServerError(
        f"no CVAT credentials in the environment{half_set}: set {TOKEN_VAR} (a personal access "
        f"token) or {USERNAME_VAR} and {PASSWORD_VAR}. The pipeline sets them from a Kubernetes "
        "Secret; credentials are never pipeline parameters."
    )


class _Caller:
    """Calls the server: retries transient failures with backoff, turns refusals into advice."""

    def __init__(self, server_url, credentials_source, retries, retry_delay, log):
        self.server_url = server_url
        self.credentials_source = credentials_source
        self.retries = retries
        self.retry_delay = retry_delay
        self.log = log

    def __call__(self, what: str, action: Callable, *, resource: str = "", login: bool = False):
        """`what` completes "could not ...", `resource` names what a 404 did not find."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                if not _is_transient(error):
                    raise self._refusal(what, error, resource, login) from None
                if attempt == self.retries:
                    raise CvatServerError(
                        f"could not {what} on {self.server_url} after {attempt + 1} attempts: "
                        f"{_describe(error)}"
                    ) from error
                delay = max(self._backoff(attempt), _retry_after(error))
                self.log(
                    f"could not {what} ({_describe(error)}); "
                    f"retry {attempt + 1} of {self.retries} in {delay:.3g} s"
                )
                time.sleep(delay)
            except BackgroundRequestException as error:
                raise CvatServerError(f"CVAT failed to {what}: {error}") from None

    def _backoff(self, attempt: int) -> float:
        return min(self.retry_delay * 2**attempt, MAX_RETRY_DELAY)

    def _refusal(self, what, error, resource, login) -> CvatServerError:
        status = getattr(error, "status", None)
        if status == 401 or (login and status in (400, 403)):
            return CvatServerError(
                f"CVAT at {self.server_url} rejected the credentials from "
                f"{self.credentials_source} (HTTP {status}) when trying to {what}: check them "
                "in the Kubernetes Secret the pipeline reads them from (a token may have expired)"
            )
        if status == 404 and resource:
            return CvatServerError(
                f"{resource} not found on {self.server_url} (or no access to it with the "
                f"credentials from {self.credentials_source}{self._organization_hint()})"
            )
        if status == 403:
            return CvatServerError(
                f"CVAT at {self.server_url} refused to let the user from "
                f"{self.credentials_source} {what} (HTTP 403: no permission"
                f"{self._organization_hint()}): {_describe(error)}"
            )
        return CvatServerError(f"could not {what} on {self.server_url}: {_describe(error)}")

    @staticmethod
    def _organization_hint() -> str:
        organization = os.environ.get(ORGANIZATION_VAR, "").strip()
        if organization:
            return f"; in the organization {organization!r} from {ORGANIZATION_VAR}"
        return f"; if an organization owns it, set {ORGANIZATION_VAR} to its slug"


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib3.exceptions.HTTPError):
        return True  # connection refused or reset, read timeout
    status = error.status or 0
    return status >= 500 or status in TRANSIENT_STATUSES


def _describe(error: Exception) -> str:
    if not isinstance(error, ApiException):
        return str(getattr(error, "reason", None) or error)
    body = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else error.body
    body = " ".join((body or "").split())[:300]
    return f"HTTP {error.status} {error.reason or ''}".rstrip() + (f": {body}" if body else "")


def _retry_after(error: Exception) -> float:
    headers = getattr(error, "headers", None) or {}
    try:
        return min(float(headers.get("Retry-After", 0)), MAX_RETRY_DELAY)
    except ValueError:
        return 0.0  # an HTTP date: the backoff will do


class _ExportClient(Client):
    """cvat-sdk's Client whose waits for server-side exports log, retry polls and time out."""

    def __init__(self, server_url: str, call: _Caller, poll_interval: float, timeout: float):
        super().__init__(
            server_url, config=Config(status_check_period=poll_interval), check_server_version=False
        )
        # One retry layer, ours, which logs: urllib3's default in the SDK would silently retry
        # each request 3 more times under each of ours.
        self.api_client.rest_client.pool_manager.connection_pool_kw["retries"] = False
        self.call = call
        self.export_timeout = timeout

    def wait_for_completion(self, rq_id: str, *, status_check_period=None, log_prefix=None):
        period = status_check_period or self.config.status_check_period
        deadline = time.monotonic() + self.export_timeout
        shown = None
        while True:
            request, response = self.call(
                "check the export status", partial(self.api_client.requests_api.retrieve, rq_id)
            )
            status = request.status.value
            progress = getattr(request, "progress", None)
            what = _operation_name(request.operation)
            if (status, progress) != shown:
                self.call.log(f"{what}: export {status}" + _percent(progress))
                shown = (status, progress)
            if status == "finished":
                return request, response
            if status == "failed":
                raise BackgroundRequestException(getattr(request, "message", "") or "no reason")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CvatServerError(
                    f"CVAT did not finish exporting {what} within {self.export_timeout:g} s "
                    f"(last status: {status}{_percent(progress)}); it may still finish on the "
                    "server: raise the timeout, or check the server's export workers"
                )
            time.sleep(min(period, remaining))


def _operation_name(operation) -> str:
    target = operation.target
    return f"{target} {getattr(operation, f'{target}_id', None) or '?'}"


def _percent(progress) -> str:
    return f" ({progress:.0%})" if progress else ""


def _connect(client: _ExportClient, call: _Caller, credentials) -> None:
    version = call("reach CVAT", client.get_server_version)
    call.log(f"CVAT {version} at {client.api_map.host} (cvat-sdk {SDK_VERSION})")
    call(f"log in with {call.credentials_source}", partial(client.login, credentials), login=True)
    organization = os.environ.get(ORGANIZATION_VAR, "").strip()
    if organization:
        client.organization_slug = organization
    user = call("check the credentials", client.users.retrieve_current_user, login=True)
    where = f" in the organization {organization!r}" if organization else ""
    call.log(f"signed in as {user.username!r} ({call.credentials_source}){where}")


@dataclass
class _Target:
    entity: Any  # a cvat-sdk Task or Job, which can export_dataset
    resource: str
    group: str
    archive_name: str


def _plan(client, call, task_ids, project_ids, job_ids, *, completed_jobs_only) -> list[_Target]:
    """What to export: tasks (given, or of the projects), then jobs not in those tasks."""
    tasks = _tasks(client, call, task_ids, project_ids)
    if completed_jobs_only and tasks:
        targets = _completed_job_targets(call, tasks)
    else:
        targets = [_task_target(task, label) for task, label in tasks]
    archives = {target.archive_name for target in targets}
    for job_id in dict.fromkeys(job_ids):
        resource = f"job {job_id}"
        job = call(f"read {resource}", partial(client.jobs.retrieve, job_id), resource=resource)
        if {f"task-{job.task_id}.zip", f"job-{job_id}.zip"} & archives:
            call.log(f"{resource}: skipped, already exported (with task {job.task_id})")
            continue
        if job.state != "completed":
            call.log(f"{resource}: exported as asked although its state is {job.state!r}")
        targets.append(_Target(job, resource, f"task-{job.task_id}", f"job-{job_id}.zip"))
    if not targets:
        raise CvatServerError("nothing to export: every task asked for is empty (no images)")
    return targets


def _tasks(client, call, task_ids, project_ids) -> list[tuple[Any, str]]:
    """(task, label) for each task asked for, by id or through its project; empty ones skipped."""
    tasks: dict[int, tuple[Any, str]] = {}
    for task_id in task_ids:
        resource = f"task {task_id}"
        task = call(f"read {resource}", partial(client.tasks.retrieve, task_id), resource=resource)
        tasks.setdefault(task.id, (task, resource))
    for project_id in project_ids:
        resource = f"project {project_id}"
        project = call(
            f"read {resource}", partial(client.projects.retrieve, project_id), resource=resource
        )
        project_tasks = call(f"list the tasks of {resource}", project.get_tasks)
        call.log(f"{resource} ({project.name!r}): {len(project_tasks)} task(s), one archive each")
        if not project_tasks:
            raise CvatServerError(f"{resource} ({project.name!r}) has no tasks to export")
        for task in project_tasks:
            tasks.setdefault(task.id, (task, f"task {task.id} in {resource}"))
    non_empty = []
    for task, label in tasks.values():
        if task.size == 0:
            call.log(f"{label}: skipped, it has no images")
        else:
            non_empty.append((task, label))
    return non_empty


def _task_target(task, label: str) -> _Target:
    return _Target(task, label, f"task-{task.id}", f"task-{task.id}.zip")


def _completed_job_targets(call: _Caller, tasks) -> list[_Target]:
    targets: list[_Target] = []
    open_states: Counter[str] = Counter()
    for task, label in tasks:
        jobs = call(f"list the jobs of {label}", task.get_jobs)
        # Ground-truth jobs and consensus replicas are review copies of frames the annotation
        # jobs already hold.
        annotation_jobs = [
            job for job in jobs if getattr(job, "type", "annotation") == "annotation"
        ]
        completed = [job for job in annotation_jobs if job.state == "completed"]
        open_states.update(job.state for job in annotation_jobs if job.state != "completed")
        call.log(f"{label}: {_jobs_summary(jobs, annotation_jobs, completed)}")
        if completed and len(completed) == len(annotation_jobs):
            targets.append(_task_target(task, label))
            continue
        if completed and (task.overlap or 0) > 0:
            call.log(f"{label}: its jobs overlap by {task.overlap} frame(s), shared by archives")
        targets += [
            _Target(job, f"job {job.id} in task {task.id}", f"task-{task.id}", f"job-{job.id}.zip")
            for job in completed
        ]
    if not targets:
        states = ", ".join(f"{n} {state}" for state, n in open_states.most_common()) or "none"
        labels = ", ".join(label for _, label in tasks)
        raise CvatServerError(
            f"completed_jobs_only: no annotation job of {labels} is completed (states: {states});"
            " set finished jobs to 'completed' in CVAT, or turn completed_jobs_only off"
        )
    return targets


def _is_annotation_job(job) -> bool:
    # Ground-truth jobs and consensus replicas are review copies of frames that annotation jobs
    # hold already.
    return getattr(job, "type", "annotation") == "annotation"


def _jobs_summary(jobs, annotation_jobs, completed) -> str:
    skipped = Counter(job.state for job in annotation_jobs if job.state != "completed")
    text = f"{len(completed)} of {len(annotation_jobs)} annotation job(s) completed"
    if len(completed) == len(annotation_jobs) and completed:
        text += ", exported whole"
    elif skipped:
        reasons = ", ".join(f"{n} {state}" for state, n in skipped.most_common())
        text += f"; skipped {sum(skipped.values())} not completed ({reasons})"
    if len(jobs) > len(annotation_jobs):
        text += f"; skipped {len(jobs) - len(annotation_jobs)} ground-truth/consensus job(s)"
    return text


def _export(call: _Caller, target: _Target, dest_dir: Path, format_name: str) -> ServerExport:
    archive = dest_dir / target.archive_name
    archive.unlink(missing_ok=True)
    call.log(f"{target.resource}: requesting a {format_name!r} export with images")
    call(
        f"export {target.resource}",
        partial(
            target.entity.export_dataset,
            format_name,
            archive,
            include_images=True,
            location=Location.LOCAL,  # not the task's cloud target storage, if it has one
            pbar=_DownloadLog(call.log, target.resource),
        ),
        resource=target.resource,
    )
    call.log(f"{target.resource}: downloaded {_size(archive.stat().st_size)} to {archive}")
    return ServerExport(archive, target.resource, target.group)


class _DownloadLog(BaseProgressReporter):
    """Logs a download's size when it starts, then at each tenth of it."""

    def __init__(self, log, what: str):
        super().__init__()
        self.log, self.what = log, what
        self.total = self.done = self.tenths_shown = 0

    def start2(self, total: int, **kwargs) -> None:
        super().start2(total, **kwargs)
        self.total, self.done, self.tenths_shown = total or 0, 0, 0
        size = _size(self.total) if self.total else "size unknown"
        self.log(f"{self.what}: downloading ({size})")

    def advance(self, delta: int) -> None:
        super().advance(delta)
        self.done += delta
        tenths = self.done * 10 // self.total if self.total else 0
        if self.tenths_shown < tenths < 10:
            self.tenths_shown = tenths
            self.log(f"{self.what}: downloaded {_size(self.done)} of {_size(self.total)}")


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"
