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

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cvat_sdk.core.progress import BaseProgressReporter
from cvat_sdk.core.proxies.types import Location

from ..common.cvat_client import (
    CvatCaller,
    CvatClient,
    CvatServerError,
    check_cvat_url,
    connect,
    credentials_from_env,
)


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
    check_cvat_url(server_url)
    credentials, credentials_source = credentials_from_env()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    call = CvatCaller(server_url, credentials_source, retries, retry_delay, log)
    with CvatClient(server_url, call, poll_interval, timeout) as client:
        connect(client, call, credentials)
        targets = _plan(
            client, call, task_ids, project_ids, job_ids, completed_jobs_only=completed_jobs_only
        )
        log(f"exporting {len(targets)} archive(s) as {format_name!r} with images to {dest_dir}")
        return [_export(call, target, dest_dir, format_name) for target in targets]


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


def _completed_job_targets(call: CvatCaller, tasks) -> list[_Target]:
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


def _export(call: CvatCaller, target: _Target, dest_dir: Path, format_name: str) -> ServerExport:
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
