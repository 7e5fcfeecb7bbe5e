"""Run a pipeline on this machine with kfp.local, one progress line per stage.

kfp.local streams every task's full log (TensorFlow included) to stdout. Here that stream goes to
`<work_dir>/logs/<run>.log`, and the console gets one line when a stage starts and one when it
ends. A failing stage is reported by its own error message (the exception its process ended
with, read from its log), then the path of the full log; what can be checked before anything runs
is (parameters, local input paths). kfp.local ignores what only a cluster can honour (GPUs,
resources, tolerations, node selectors, secrets, retries, caching).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cvat_kfp.components.common import storage
from cvat_kfp.pipelines import parameters

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
KFP_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - |^-{20,}$")  # kfp.local's own lines
EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*): (?P<message>.*)$")
FAILURE_LOG_LINES = 200  # enough for the traceback of the stage's exception
FALLBACK_LOG_LINES = 15  # shown when a stage died without a Python traceback (killed, ...)
# Parameters naming an input that must already exist; on this machine a plain path is checked
# before anything runs (pretrained_checkpoint_uri is a checkpoint prefix, not a file).
LOCAL_INPUTS = {
    "source": "a CVAT export (folder, .zip or .tar.gz)",
    "init_model_uri": "an earlier run's `model` folder",
    "predictions_uri": "a preannotate step's `predictions` folder",
}


class LocalRunError(RuntimeError):
    """A stage failed: `stage` (its UI name), `reason` (its own error message, or the end of its
    log when it left no traceback) and `log_path` (the full log)."""

    def __init__(self, message: str, stage: str = "", reason: str = "", log_path=None):
        super().__init__(message)
        self.stage, self.reason, self.log_path = stage, reason, log_path


@dataclass
class LocalRun:
    """Where a local run's outputs landed: task → output name → path (or parameter value)."""

    pipeline: str
    run_dir: Path
    log_path: Path
    elapsed_s: float
    display_names: dict[str, str]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, dict[str, dict]] = field(default_factory=dict)

    def find(self, output_name: str, task_prefix: str = "") -> Path:
        """The one artifact `output_name` of a task whose name starts with `task_prefix`
        (e.g. find("exported_model"), find("metrics", "evaluate-model"))."""
        matches = [
            outputs[output_name]
            for task, outputs in self.outputs.items()
            if task.startswith(task_prefix) and output_name in outputs
        ]
        if len(matches) != 1:
            raise KeyError(
                f"{len(matches)} outputs named {output_name!r} from tasks {task_prefix!r}* in "
                f"{self.run_dir}; the outputs are: {self.outputs}"
            )
        return matches[0]

    def find_metadata(self, output_name: str, task_prefix: str = "") -> dict:
        matches = [
            outputs[output_name]
            for task, outputs in self.metadata.items()
            if task.startswith(task_prefix) and output_name in outputs
        ]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} artifacts {output_name!r} from {task_prefix!r}*")
        return matches[0]

    def table(self) -> str:
        """Every output of every stage, with its path (or value)."""
        rows = []
        for task, outputs in self.outputs.items():
            for name, value in outputs.items():
                shown = str(value) if isinstance(value, Path) else json.dumps(value)
                rows.append((self.display_names.get(task, task), name, shown))
        width_task = max((len(r[0]) for r in rows), default=4)
        width_name = max((len(r[1]) for r in rows), default=6)
        return "\n".join(f"  {t:<{width_task}}  {n:<{width_name}}  {v}" for t, n, v in rows)


class _ProgressStream(io.TextIOBase):
    """Receives kfp.local's stdout: copies it to the log, prints a line per stage transition."""

    def __init__(self, log: TextIO, console: TextIO, display_names: dict[str, str], verbose):
        self.log, self.console, self.verbose = log, console, verbose
        self.display_names = display_names
        self.started: dict[str, float] = {}
        self.finished = 0
        self.current_task_lines: deque[str] = deque(maxlen=FAILURE_LOG_LINES)
        self.running_task: str | None = None
        self.failed_task: str | None = None
        self.failed_task_lines: list[str] = []
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.console.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(ANSI_ESCAPE.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def _name(self, task: str) -> str:
        return self.display_names.get(task, task)

    def _line(self, line: str) -> None:
        self.current_task_lines.append(line)
        if started := TASK_STARTED.search(line):
            task = started.group(1)
            self.started[task] = time.monotonic()
            self.running_task = task
            self.current_task_lines.clear()
            if not self.verbose:
                self.console.write(f"  ▶ {self._name(task)} ...\n")
        elif finished := TASK_FINISHED.search(line):
            task, status = finished.groups()
            seconds = time.monotonic() - self.started.get(task, time.monotonic())
            if status == "SUCCESS":
                self.finished += 1
                self.running_task = None
                if not self.verbose:
                    self.console.write(f"  ✓ {self._name(task)} ({seconds:.0f} s)\n")
            elif self.failed_task is None:  # the first failure is the cause; later ones follow
                self.failed_task = task
                self.failed_task_lines = list(self.current_task_lines)[:-1]
                self.console.write(f"  ✗ {self._name(task)} failed after {seconds:.0f} s\n")
        self.console.flush()


def display_names(pipeline) -> dict[str, str]:
    """Task name (what kfp.local calls a task) → the name the Kubeflow UI shows."""
    spec = pipeline.pipeline_spec
    names = {}
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    for dag in dags:
        for task_name, task in dag.tasks.items():
            names[task_name] = task.task_info.name or task_name
    return names


def stage_error(lines: list[str]) -> str | None:
    """The exception a stage's Python process ended with, from the end of its log: the message
    (with the exception's type unless it is one of the suite's own, whose messages say it all),
    or None when the lines hold no traceback."""
    lines = [line.rstrip() for line in lines]
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    if not frames:
        return None
    last_frame = lines[frames[-1]]
    indent = len(last_frame) - len(last_frame.lstrip()) - 2  # frames sit 2 deeper than the rest
    start = frames[-1] + 1
    while start < len(lines) and (not lines[start].strip() or _indent(lines[start]) > indent):
        start += 1  # the frame's source line and ^^^ markers
    message_lines = []
    for line in lines[start:]:
        if KFP_LOG_LINE.match(line):
            break
        message_lines.append(line[indent:] if _indent(line) >= indent else line.strip())
    while message_lines and not message_lines[-1].strip():
        message_lines.pop()
    if not message_lines:
        return None
    first = EXCEPTION_LINE.match(message_lines[0])
    if first and first["type"].startswith("cvat_kfp."):
        message_lines[0] = first["message"]
    elif first:
        message_lines[0] = f"{first['type'].rsplit('.', 1)[-1]}: {first['message']}"
    return "\n".join(message_lines)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def check_local_inputs(arguments: Mapping[str, Any]) -> None:
    """A local input path that does not exist, as a ParameterError before anything runs."""
    for name, what in LOCAL_INPUTS.items():
        value = arguments.get(name)
        if not isinstance(value, str) or not value.strip() or not storage.is_local(value):
            continue
        path = storage.local_path(value)
        if not path.exists():
            raise parameters.ParameterError(
                f"{name} {value}: no such file or folder on this machine; give {what} that "
                f"exists here, or a gs:// or https:// URI"
            )


def _collect_outputs(run: LocalRun, execution_order: list[str]) -> None:
    """Each task's outputs, in the order the tasks ran."""
    position = {task: index for index, task in enumerate(execution_order)}
    task_dirs = [p for p in run.run_dir.iterdir() if p.is_dir()]
    for task_dir in sorted(task_dirs, key=lambda p: (position.get(p.name, len(position)), p.name)):
        executor_output = task_dir / "executor_output.json"
        if not executor_output.is_file():
            continue
        recorded = json.loads(executor_output.read_text())
        outputs: dict[str, Any] = dict(recorded.get("parameterValues", {}))
        metadata: dict[str, dict] = {}
        for name, artifact_list in recorded.get("artifacts", {}).items():
            artifact = artifact_list["artifacts"][0]
            outputs[name] = Path(artifact["uri"])
            metadata[name] = artifact.get("metadata", {})
        for path in sorted(task_dir.iterdir()):  # outputs a task wrote without metadata
            if path.name != "executor_output.json" and path.name not in outputs:
                outputs[path.name] = path
        run.outputs[task_dir.name] = outputs
        run.metadata[task_dir.name] = metadata


def _indented(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


@contextlib.contextmanager
def quiet_kfp_local():
    """Hide kfp.local's warnings that are expected on a laptop."""
    with warnings.catch_warnings():
        # our image is not a plain Python image; cluster-only settings have no effect locally
        warnings.filterwarnings("ignore", message=".*non-Python base image")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
        warnings.filterwarnings("ignore", message=".*have no effect.*local")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def run_locally(
    pipeline_name: str,
    arguments: Mapping[str, Any],
    work_dir: str | Path = "runs",
    *,
    verbose: bool = False,
    console: TextIO | None = None,
) -> LocalRun:
    """Run `pipeline_name` with `arguments` under kfp.local (SubprocessRunner, this Python).

    Outputs go to `<work_dir>/<pipeline>-<timestamp>/<task>/<output>`; the full log to
    `<work_dir>/logs/`. Raises ParameterError before running for a bad argument or a local input
    that does not exist, and LocalRunError (the stage, its own error message, the log's path)
    when a stage fails.
    """
    from kfp import local

    console = console or sys.stdout
    checked = parameters.check_arguments(pipeline_name, arguments)
    check_local_inputs(checked)
    pipeline = parameters.load(pipeline_name)
    work_dir = Path(work_dir).resolve()
    (work_dir / "logs").mkdir(parents=True, exist_ok=True)
    before = {p.name for p in work_dir.iterdir()}
    log_path = work_dir / "logs" / f"{pipeline_name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    names = display_names(pipeline)

    console.write(f"{pipeline_name}: running locally (kfp.local); full log: {log_path}\n")
    started = time.monotonic()
    with quiet_kfp_local(), log_path.open("w", encoding="utf-8") as log:
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(work_dir),
            raise_on_error=True,
        )
        progress = _ProgressStream(log, console, names, verbose)
        try:
            with contextlib.redirect_stdout(progress):
                pipeline(**checked)
        except RuntimeError as error:
            # with raise_on_error, kfp.local raises before logging the failed status
            task = progress.failed_task or progress.running_task
            if task and not progress.failed_task:
                seconds = time.monotonic() - progress.started.get(task, started)
                console.write(f"  ✗ {names.get(task, task)} failed after {seconds:.0f} s\n")
            lines = progress.failed_task_lines or list(progress.current_task_lines)
            where = f"stage {names.get(task, task)!r}" if task else "the run"
            reason = stage_error(lines)
            if reason is not None:
                shown = f"{pipeline_name}: {where} failed:\n{_indented(reason)}\n"
            else:  # no traceback (a killed process, a kfp.local error): the end of the log
                reason = "\n".join(line for line in lines if line.strip())
                reason = "\n".join(reason.splitlines()[-FALLBACK_LOG_LINES:])
                shown = (
                    f"{pipeline_name}: {where} failed "
                    f"({ANSI_ESCAPE.sub('', str(error))}); last log lines:\n{_indented(reason)}\n"
                )
            raise LocalRunError(
                f"{shown}Full log: {log_path}",
                stage=names.get(task, task) if task else "",
                reason=reason,
                log_path=log_path,
            ) from None
    new_dirs = sorted(
        p for p in work_dir.iterdir() if p.is_dir() and p.name not in before and p.name != "logs"
    )
    if len(new_dirs) != 1:
        raise LocalRunError(f"expected one new run folder in {work_dir}, found {new_dirs}")
    run = LocalRun(pipeline_name, new_dirs[0], log_path, time.monotonic() - started, names)
    _collect_outputs(run, list(progress.started))
    console.write(f"{pipeline_name}: finished in {run.elapsed_s:.0f} s; outputs:\n")
    console.write(run.table() + "\n")
    return run
