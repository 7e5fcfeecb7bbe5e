"""Durable checkpoints: a local or mounted path, or a gs:// URI, mirrored from local ones.

Training always writes checkpoints to a local directory (tf.train.CheckpointManager); TensorFlow's
own gs:// cannot reach the test emulator, and one code path for every scheme is simpler. Each new
checkpoint is then uploaded through the storage module, and on start the newest complete one is
downloaded back. The durable location holds:

    ckpt-<step>/      the checkpoint's files, and the storage module's _SUCCESS marker, written last
    latest.json       {"step", "checkpoint", ...}: written after the checkpoint it names is complete
    best/             the checkpoint with the best validation AP so far (Model Garden's exporter)
    events/<name>/    TensorBoard event files (train/, validation/)
    metrics.json      the final metrics of a finished run

A reader trusts only directories with the _SUCCESS marker: a checkpoint whose upload was cut
short (the pod died mid-upload) is ignored, with a log line, and overwritten later.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..common import storage

CONFIG_FILE = "params.yaml"  # the effective ExperimentConfig, in the Model artifact
MODEL_METADATA_FILE = "model.json"  # the Model artifact's metadata (run.py writes it)
LATEST_FILE = "latest.json"
METRICS_FILE = "metrics.json"
BEST_DIR = "best"
EVENTS_DIR = "events"
CHECKPOINT_STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's index of a directory
CHECKPOINT_NAME = re.compile(r"ckpt-(\d+)")
DEFAULT_KEEP = 3


def checkpoint_step(prefix: str | os.PathLike) -> int:
    """The step in a checkpoint prefix such as /model/ckpt-150."""
    match = CHECKPOINT_NAME.fullmatch(Path(prefix).name)
    if not match:
        raise ValueError(f"{prefix}: not a checkpoint prefix of the form ckpt-<step>")
    return int(match.group(1))


def checkpoint_files(prefix: str | os.PathLike) -> list[Path]:
    """The files of the local checkpoint `prefix` (its .index and .data-* shards)."""
    prefix = Path(prefix)
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    if not any(f.suffix == ".index" for f in files):
        raise FileNotFoundError(f"{prefix}: no such checkpoint (no {prefix.name}.index)")
    return files


def latest_local_checkpoint(local_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint prefix that tf.train.CheckpointManager knows in `local_dir`."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(local_dir))


def latest_local_step(local_dir: str | os.PathLike) -> int | None:
    prefix = latest_local_checkpoint(local_dir)
    return checkpoint_step(prefix) if prefix else None


def register_local_checkpoint(local_dir: str | os.PathLike, name: str) -> None:
    """Make `name` the newest checkpoint in `local_dir`'s index, as CheckpointManager writes it.

    Relative names, so the directory still works once the Model artifact has moved.
    """
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(local_dir))
    known = [Path(p).name for p in state.all_model_checkpoint_paths] if state else []
    names = [n for n in known if n != name] + [name]
    lines = [f'model_checkpoint_path: "{name}"'] + [
        f'all_model_checkpoint_paths: "{n}"' for n in names
    ]
    (Path(local_dir) / CHECKPOINT_STATE_FILE).write_text("\n".join(lines) + "\n")


class DurableCheckpoints:
    """The checkpoints kept at `uri`: publish local ones there, restore the newest from there."""

    def __init__(self, uri: str, keep: int = DEFAULT_KEEP, log: Callable[[str], None] = print):
        if keep < 1:
            raise ValueError(f"keep must be at least 1 checkpoint, got {keep}")
        self.uri = str(uri)
        self.keep = keep
        self.log = log

    # --- reading ------------------------------------------------------------------------------

    def steps(self) -> dict[int, bool]:
        """Every ckpt-<step> directory at the location: step -> complete (has its marker)."""
        try:
            names = storage.list_files(self.uri)
        except storage.ObjectNotFoundError:
            return {}
        found: dict[int, bool] = {}
        for name in names:
            folder, _, rest = name.partition("/")
            match = CHECKPOINT_NAME.fullmatch(folder)
            if match and rest:
                step = int(match.group(1))
                found[step] = found.get(step, False) or rest == storage.MARKER
        return found

    def newest_complete_step(self) -> int | None:
        steps = self.steps()
        complete = [step for step, done in steps.items() if done]
        newest = max(complete, default=None)
        for step in sorted(s for s, done in steps.items() if not done):
            if newest is None or step > newest:
                self.log(
                    f"ignoring {self._checkpoint_uri(step)}: incomplete (no {storage.MARKER} "
                    "marker: its upload was interrupted)"
                )
        return newest

    def read_json(self, name: str) -> dict | None:
        """The JSON object `name` at the location, or None when there is none."""
        with tempfile.TemporaryDirectory() as scratch:
            try:
                local = storage.download_file(self._uri(name), Path(scratch) / "file.json")
            except storage.ObjectNotFoundError:
                return None
            return json.loads(local.read_text(encoding="utf-8"))

    def latest(self) -> dict | None:
        """latest.json: the newest published checkpoint's step and what was saved with it."""
        return self.read_json(LATEST_FILE)

    def restore_latest(self, local_dir: str | os.PathLike) -> int | None:
        """Download the newest complete checkpoint into `local_dir` unless it has one as new.

        Returns the step of the checkpoint `local_dir` now starts from (None: none anywhere).
        """
        local_dir = Path(local_dir)
        local_step = latest_local_step(local_dir) if local_dir.is_dir() else None
        durable_step = self.newest_complete_step()
        if durable_step is None or (local_step is not None and local_step >= durable_step):
            return local_step
        uri = self._checkpoint_uri(durable_step)
        storage.download_directory(uri, local_dir, require_complete=True)
        register_local_checkpoint(local_dir, f"ckpt-{durable_step}")
        self.log(f"restored the checkpoint of step {durable_step} from {uri}")
        return durable_step

    def restore_directory(self, name: str, local_dir: str | os.PathLike) -> bool:
        """Download the complete directory `name` (best/, events/...) into `local_dir`."""
        uri = self._uri(name)
        if not storage.is_complete(uri):
            return False
        storage.download_directory(uri, local_dir, require_complete=True)
        return True

    # --- writing ------------------------------------------------------------------------------

    def publish(self, prefix: str | os.PathLike, state: dict | None = None) -> str:
        """Upload the local checkpoint `prefix`, then point latest.json at it, then prune.

        `state` (JSON-able) is saved in latest.json beside the step, e.g. the loss at that step.
        """
        step = checkpoint_step(prefix)
        uri = self._checkpoint_uri(step)
        with tempfile.TemporaryDirectory() as staging:
            for file in checkpoint_files(prefix):
                _link_or_copy(file, Path(staging) / file.name)
            storage.upload_directory(staging, uri)
        self.write_json(LATEST_FILE, {**(state or {}), "step": step, "checkpoint": f"ckpt-{step}"})
        self._prune(step)
        return uri

    def publish_directory(self, local_dir: str | os.PathLike, name: str) -> str | None:
        """Upload the local directory `local_dir` as `name` (marker last); None if it is absent."""
        if not Path(local_dir).is_dir() or not any(Path(local_dir).iterdir()):
            return None
        return storage.upload_directory(local_dir, self._uri(name))

    def write_json(self, name: str, data: dict) -> str:
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "file.json"
            local.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            return storage.upload_file(local, self._uri(name))

    def _prune(self, newest_step: int) -> None:
        """Keep the newest `keep` complete checkpoints; drop older ones and stale partial ones."""
        steps = self.steps()
        kept = sorted(step for step, done in steps.items() if done)[-self.keep :]
        for step, done in sorted(steps.items()):
            if step not in kept and (done or step < newest_step):
                self._delete_checkpoint(step)

    def _delete_checkpoint(self, step: int) -> None:
        """Marker first: a reader never takes a half-deleted checkpoint for a complete one."""
        uri = self._checkpoint_uri(step)
        names = storage.list_files(uri)
        for name in sorted(names, key=lambda n: n != storage.MARKER):
            storage.delete_file(storage.join_uri(uri, name))

    def _uri(self, name: str) -> str:
        return storage.join_uri(self.uri, name)

    def _checkpoint_uri(self, step: int) -> str:
        return self._uri(f"ckpt-{step}")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
