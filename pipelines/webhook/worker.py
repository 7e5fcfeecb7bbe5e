"""The background worker: turns "task 12 changed" into at most one training run per annotation
version, submits it to Kubeflow Pipelines with retries, and reconciles the watched projects.

The HTTP handlers only enqueue (`notify`), so CVAT gets its answer at once. Everything slow (CVAT
API calls, compiling and submitting the pipeline) happens here, in one thread, in this order:

1. Checks: for each task notified (or found by the periodic reconciliation), ask CVAT whether the
   rule's target (the task, or its whole project) is done and at which annotation version. Done
   and not yet recorded → a `pending` row in SQLite, before anything is submitted.
2. Submissions: each due `pending` row; first look its deterministic run name up in KFP (a run
   submitted just before a crash, whose row still says pending, is found, not submitted again),
   then submit. A failure (KFP down, refusing) leaves the row pending with the next attempt's
   time, backing off; the run is delayed, never lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from cvat_kfp.pipelines.webhook.cvat_state import CvatAccess, CvatServerError, CvatSession
from cvat_kfp.pipelines.webhook.rules import NEXT_UNANNOTATED, Rule, Rules
from cvat_kfp.pipelines.webhook.store import Record, Store

log = logging.getLogger("cvat_kfp.webhook")
MAX_CHECK_ATTEMPTS = 8  # CVAT checks of one task; submissions are retried without end


@dataclass(frozen=True)
class KfpTarget:
    host: str | None = None  # None: $KF_PIPELINES_ENDPOINT
    namespace: str | None = None


def run_name_for(pipeline: str, target: str, version: str) -> str:
    """Deterministic: the same target and annotation version always give the same run name."""
    return f"{pipeline} for CVAT {target}, annotations {version}"


def find_run(run_name: str, kfp: KfpTarget) -> tuple[str, str] | None:
    """(run id, URL) of a run with exactly this display name on the cluster, else None."""
    from cvat_kfp.pipelines import cluster

    host = cluster.resolve_host(kfp.host)
    client = cluster.connect(host, kfp.namespace)
    name_filter = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": run_name}]}
    )
    try:
        response = client.list_runs(page_size=10, namespace=kfp.namespace, filter=name_filter)
    except Exception as error:  # urllib3 and kfp_server_api errors alike
        raise cluster.ClusterError(cluster._explain(host, error)) from None
    for run in response.runs or []:
        if run.display_name == run_name:
            return run.run_id, f"{host}/#/runs/details/{run.run_id}"
    return None


class Worker:
    def __init__(
        self,
        rules: Rules,
        store: Store,
        cvat: CvatAccess,
        kfp: KfpTarget,
        *,
        retry_base_s: float = 5.0,
        retry_max_s: float = 300.0,
    ):
        self.rules = rules
        self.store = store
        self.cvat = cvat
        self.kfp = kfp
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._to_check: dict[int, str] = {}  # task id -> why (first reason kept)
        self._check_retry_at: dict[int, float] = {}
        self._check_attempts: dict[int, int] = {}
        self._reconcile_at = 0.0  # at start: catch what happened while the service was down
        self._thread: threading.Thread | None = None

    # --- called from the HTTP handlers (any thread)

    def notify(self, task_id: int, reason: str) -> None:
        with self._lock:
            self._to_check.setdefault(task_id, reason)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="cvat-kfp-webhook-worker", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    # --- the loop

    def _loop(self) -> None:
        log.info(
            "worker started: %d rule(s); reconciling every %g s",
            len(self.rules.rules),
            self.rules.reconcile_interval_s,
        )
        while not self._stop.is_set():
            self._wake.clear()  # before the cycle: a notify during it wakes the next one
            try:
                self.run_once()
            except Exception:  # keep serving: one bad cycle must not end the worker
                log.exception("worker cycle failed; retrying in %g s", self.retry_base_s)
                self._stop.wait(self.retry_base_s)
            self._wake.wait(self._sleep_s())

    def _sleep_s(self) -> float:
        now = time.time()
        moments = [self._reconcile_at]
        next_due = self.store.next_due_at()
        if next_due is not None:
            moments.append(next_due)
        moments += list(self._check_retry_at.values())
        return max(0.05, min(moments) - now)

    def run_once(self) -> None:
        """One cycle: the checks due (notified, retried, reconciled), then the submissions due."""
        now = time.time()
        with self._lock:
            checks = dict(self._to_check)
            self._to_check.clear()
        for task_id, at in list(self._check_retry_at.items()):
            if at <= now:
                checks.setdefault(task_id, "retry")
                del self._check_retry_at[task_id]
        reconcile = now >= self._reconcile_at
        if checks or reconcile:
            self._check(checks, reconcile)
        for record in self.store.due():
            if self._stop.is_set():
                return
            self._submit(record)

    def _check(self, checks: dict[int, str], reconcile: bool) -> None:
        try:
            with self.cvat.session() as cvat:
                if reconcile:
                    for task_id in self._watched_tasks(cvat):
                        checks.setdefault(task_id, "reconciliation")
                    self._reconcile_at = time.time() + self.rules.reconcile_interval_s
                done_projects: set[int] = set()
                for task_id, reason in checks.items():
                    try:
                        self._check_task(cvat, task_id, reason, done_projects)
                        self._check_attempts.pop(task_id, None)
                    except CvatServerError as error:
                        self._retry_check(task_id, str(error))
        except CvatServerError as error:  # CVAT unreachable or refusing the credentials
            for task_id in checks:
                self._retry_check(task_id, str(error))
            if reconcile:
                self._reconcile_at = time.time() + min(
                    self.retry_max_s, self.rules.reconcile_interval_s
                )

    def _retry_check(self, task_id: int, error: str) -> None:
        attempts = self._check_attempts.get(task_id, 0) + 1
        if attempts > MAX_CHECK_ATTEMPTS:  # e.g. the task was deleted
            self._check_attempts.pop(task_id, None)
            log.warning(
                "task %d: cannot check it in CVAT (%s); gave up after %d attempts, the "
                "periodic reconciliation will look at its project again",
                task_id,
                error,
                MAX_CHECK_ATTEMPTS,
            )
            return
        self._check_attempts[task_id] = attempts
        delay = min(self.retry_base_s * 2 ** (attempts - 1), self.retry_max_s)
        self._check_retry_at[task_id] = time.time() + delay
        log.warning("task %d: cannot check it in CVAT (%s); retry in %g s", task_id, error, delay)

    def _watched_tasks(self, cvat: CvatSession) -> list[int]:
        task_ids = list(self.rules.watched_tasks)
        for project_id in self.rules.watched_projects:
            task_ids += [task.id for task in cvat.project_tasks(project_id)]
        return list(dict.fromkeys(task_ids))

    def _check_task(
        self, cvat: CvatSession, task_id: int, reason: str, done_projects: set[int]
    ) -> None:
        task = cvat.task(task_id)
        rule = self.rules.for_task(task_id, task.project_id)
        where = f"task {task_id}" + (f" (project {task.project_id})" if task.project_id else "")
        if rule is None:
            log.info(
                "%s: no rule in %s for it or its project; nothing to do (%s)",
                where,
                self.rules.source,
                reason,
            )
            return
        if rule.scope == "project":
            if rule.project_id in done_projects:
                return  # one check of the project per cycle
            done_projects.add(rule.project_id)
            state = cvat.project_completion(rule.project_id, rule.when)
        else:
            state = cvat.task_completion(task_id, rule.when)
        if not state.complete:
            log.info("%s: %s; not training yet (%s)", state.target, state.summary, reason)
            return
        content = cvat.annotation_content(state)
        key = f"{state.target.replace(' ', ':')}@{content.version}"
        recorded = self.store.get(key)
        if recorded is not None:
            log.info(
                "%s: annotations %s already handled (%s%s); not submitting again (%s)",
                state.target,
                content.version,
                recorded.state,
                f", run {recorded.run_id}" if recorded.run_id else "",
                reason,
            )
            return
        run_name = run_name_for(rule.pipeline, state.target, content.version)
        common = dict(
            key=key,
            target=state.target,
            version=content.version,
            pipeline=rule.pipeline,
            experiment=rule.experiment,
            run_name=run_name,
        )
        if not content.annotated_task_ids:
            problem = (
                f"{state.target}: {state.summary}, but no annotations in "
                f"{'it' if rule.scope == 'task' else 'any of its tasks'}: nothing to "
                "train on; not submitted (annotate, then complete a job again)"
            )
            if self.store.add(**common, arguments="{}", state="skipped", last_error=problem):
                log.warning(problem)
            return
        arguments = self._arguments(cvat, rule, state.target, state.task_ids, task_id)
        if self.store.add(**common, arguments=json.dumps(arguments, sort_keys=True)):
            log.info(
                "%s: %s, annotations %s; recorded, submitting %s as %r (%s)",
                state.target,
                state.summary,
                content.version,
                rule.pipeline,
                run_name,
                reason,
            )

    def _arguments(
        self, cvat: CvatSession, rule: Rule, target: str, task_ids: tuple[int, ...], task_id: int
    ) -> dict[str, Any]:
        arguments = dict(rule.arguments)
        arguments["cvat_url"] = self.cvat.url
        if rule.scope == "project":
            arguments["project_ids"] = str(rule.project_id)
        else:
            arguments["task_ids"] = str(task_id)
        if rule.preannotate == NEXT_UNANNOTATED:
            following = cvat.first_unannotated_task(rule.project_id, exclude=set(task_ids))
            if following is None:
                log.info(
                    "%s: project %d has no task without annotations left to pre-annotate",
                    target,
                    rule.project_id,
                )
            else:
                arguments["preannotate_task_id"] = str(following)
        elif rule.preannotate is not None:
            arguments["preannotate_task_id"] = str(rule.preannotate)
        return arguments

    def _submit(self, record: Record) -> None:
        from cvat_kfp.pipelines import cluster
        from cvat_kfp.pipelines.parameters import ParameterError

        try:
            found = find_run(record.run_name, self.kfp)
            if found:
                run_id, url = found
                self.store.mark_submitted(record.key, run_id, url)
                log.info(
                    "%s: run %r is already on the cluster (%s; submitted before a restart);"
                    " recorded, not submitted again",
                    record.target,
                    record.run_name,
                    run_id,
                )
                return
            submitted = cluster.submit(
                record.pipeline,
                json.loads(record.arguments),
                host=self.kfp.host,
                namespace=self.kfp.namespace,
                experiment=record.experiment,
                run_name=record.run_name,
            )
        except (cluster.ClusterError, ParameterError, OSError) as error:
            delay = min(self.retry_base_s * 2**record.attempts, self.retry_max_s)
            attempts = self.store.mark_failed_attempt(record.key, str(error), time.time() + delay)
            log.warning(
                "%s: submission attempt %d failed (%s); next attempt in %g s",
                record.target,
                attempts,
                error,
                delay,
            )
            return
        self.store.mark_submitted(record.key, submitted.run_id, submitted.url)
        log.info("%s: submitted run %s (%s)", record.target, submitted.run_id, submitted.url)
