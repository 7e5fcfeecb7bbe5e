"""TFRecord shards sized by bytes that look finished only at the end.

TensorFlow is imported in a background thread once the writer is made (the conversion makes it
after parsing the annotations, so the JSON parse's peak and TensorFlow's ~800 MB are never
resident together); the import takes seconds, during which the workers go on with the images.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

# A TFRecord frames each record with a length, a length CRC and a data CRC.
RECORD_FRAMING_BYTES = 16
# Records written while TensorFlow is still importing wait in memory, up to this many bytes.
STARTUP_BUFFER_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Shard:
    path: Path
    num_examples: int
    num_bytes: int


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


class ShardedTFRecordWriter:
    """Writes records into shards, starting a new one once the current one holds `shard_size_bytes`.

    Shards are written under hidden temporary names (`.train-00000.tfrecord.tmp`) and renamed to
    `train-00000-of-00003.tfrecord` by finish(), once the count is known; leaving the `with`
    block without finish() (an error, a refusal) removes them, so a failed or killed run never
    leaves shards that look finished. There is always at least one shard, possibly empty.

    Until TensorFlow's import (started here) is done, written records wait in memory, up to
    STARTUP_BUFFER_BYTES; then write() waits for the import.
    """

    def __init__(self, directory: str | Path, prefix: str, shard_size_bytes: int):
        if shard_size_bytes <= 0:
            raise ValueError(f"shard_size_bytes must be positive, got {shard_size_bytes}")
        self.directory = Path(directory)
        self.prefix = prefix
        self.shard_size_bytes = shard_size_bytes
        self._temp_paths: list[Path] = []
        self._counts: list[list[int]] = []  # [examples, bytes] per shard
        self._writer = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._tensorflow_import = _import_tensorflow_in_background()

    def __enter__(self) -> ShardedTFRecordWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()

    def write(self, record: bytes) -> None:
        self._pending.append(record)
        self._pending_bytes += len(record)
        importing = self._tensorflow_import is not None and self._tensorflow_import.is_alive()
        if not importing or self._pending_bytes >= STARTUP_BUFFER_BYTES:
            self._write_pending()

    def _write_pending(self) -> None:
        if self._tensorflow_import is not None:
            self._tensorflow_import.join()
        for record in self._pending:
            self._write_now(record)
        self._pending, self._pending_bytes = [], 0

    def _write_now(self, record: bytes) -> None:
        if self._writer is None:
            self._open_next_shard()
        self._writer.write(record)
        counts = self._counts[-1]
        counts[0] += 1
        counts[1] += len(record) + RECORD_FRAMING_BYTES
        if counts[1] >= self.shard_size_bytes:
            self._close_current_shard()

    def finish(self) -> list[Shard]:
        """Close the last shard and give every shard its final `-of-` name."""
        self._write_pending()
        if not self._temp_paths:
            self._open_next_shard()
        self._close_current_shard()
        shards = []
        for index, (temp, (examples, size)) in enumerate(zip(self._temp_paths, self._counts)):
            final = self.directory / shard_name(self.prefix, index, len(self._temp_paths))
            os.replace(temp, final)
            shards.append(Shard(final, examples, size))
        self._temp_paths = []
        return shards

    def abort(self) -> None:
        """Remove every shard not yet finished."""
        self._pending, self._pending_bytes = [], 0
        self._close_current_shard()
        for temp in self._temp_paths:
            temp.unlink(missing_ok=True)
        self._temp_paths = []

    def _open_next_shard(self) -> None:
        temp = self.directory / f".{self.prefix}-{len(self._temp_paths):05d}.tfrecord.tmp"
        self._temp_paths.append(temp)
        self._counts.append([0, 0])
        import tensorflow as tf

        self._writer = tf.io.TFRecordWriter(str(temp))

    def _close_current_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _import_tensorflow_in_background() -> threading.Thread | None:
    """A started thread importing TensorFlow; None when it is imported already.

    Not a daemon: an interpreter exiting mid-import would tear TensorFlow down half loaded.
    """
    if "tensorflow" in sys.modules:
        return None
    thread = threading.Thread(
        target=importlib.import_module, args=("tensorflow",), name="import-tensorflow"
    )
    thread.start()
    return thread
