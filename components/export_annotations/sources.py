"""Where a CVAT export comes from: a local folder or archive, or a gs://, http(s):// URI.

`fetch_source` turns any of them into a local folder holding the export:

- a local folder is used in place and never modified;
- an archive (zip, tar, tar.gz/bz2/xz, recognised by content) is extracted safely into
  `work_dir`; when it holds exactly one top-level folder (macOS `__MACOSX`/`.DS_Store` aside),
  that folder is returned;
- a remote URI is downloaded into `work_dir` first: an object is then extracted if it is an
  archive, a gs:// prefix is downloaded as a folder. When a name is both an object and a prefix,
  the object wins (end the URI with "/" to mean the folder);
- any other single file (a TFRecord, a lone annotations file) is returned in a folder of its own,
  for the format readers to recognise or refuse. A file named like an archive whose content is
  not one (often an HTML error or login page) is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from cvat_kfp.components.common import storage

from ..common.archives import (
    ARCHIVE_SUFFIXES,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_TOTAL_BYTES,
    ArchiveError,
    archive_format,
    extract_archive,
    has_archive_suffix,
)

# Files that archivers on macOS add beside the real content.
IGNORED_TOP_LEVEL = frozenset({"__MACOSX", ".DS_Store"})


def fetch_source(
    source: str,
    work_dir: str | os.PathLike,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> Path:
    """Return a local folder holding the CVAT export at `source`.

    Downloads and extractions go into `work_dir` (created if needed); the limits bound what an
    archive may extract to.
    """
    source = str(source).strip()
    if not source:
        raise ValueError(
            "no export source given: pass a folder, an archive, or a gs:// or https:// URI"
        )
    storage.backend_for(source)  # refuses an unsupported scheme, naming the supported ones
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    limits = {"max_total_bytes": max_total_bytes, "max_entries": max_entries}
    if storage.is_local(source):
        return _fetch_local(source, work_dir, limits)
    return _fetch_remote(source, work_dir, limits)


def _fetch_local(source: str, work_dir: Path, limits: dict) -> Path:
    path = storage.local_path(source)
    if path.is_dir():
        return path
    if not path.is_file():
        raise storage.ObjectNotFoundError(f"export source {source}: no such file or folder")
    return _open_file(path, source, work_dir, limits, owned=False)


def _fetch_remote(source: str, work_dir: Path, limits: dict) -> Path:
    label = storage.redacted(source)
    download_dir = Path(tempfile.mkdtemp(prefix="download-", dir=work_dir))
    if storage.is_directory(source) and (source.endswith("/") or not storage.is_file(source)):
        return storage.download_directory(source, download_dir)
    if storage.is_file(source):
        local = storage.download_file(source, download_dir / _remote_file_name(source))
        return _open_file(local, label, work_dir, limits, owned=True)
    raise storage.ObjectNotFoundError(
        f"export source {label}: not found (no such object, and no files under it as a folder)"
    )


def _open_file(path: Path, label: str, work_dir: Path, limits: dict, *, owned: bool) -> Path:
    """The folder for one file: its extracted content, or a folder holding just the file.

    An `owned` file is our own download: removed once extracted, or returned in its download
    folder instead of being linked or copied.
    """
    if archive_format(path) is None:
        if has_archive_suffix(path.name):
            raise ArchiveError(
                f"{label}: named like an archive but its content is not one (it starts with "
                f"{_head(path)!r}); if it was downloaded, the server may have sent an error page."
            )
        return _folder_holding(path, work_dir, owned)
    # Named after the archive, not the random scratch folder: readers name groups after the
    # export's folder (a MOT sequence without seqinfo.ini), and the Dataset must not change
    # from one run to the next.
    extracted = Path(tempfile.mkdtemp(prefix="extracted-", dir=work_dir)) / _archive_stem(path)
    extracted.mkdir()
    extract_archive(path, extracted, label=label, **limits)
    if owned:
        path.unlink()
    root = _single_top_level_folder(extracted) or extracted
    if not any(p.is_file() for p in root.rglob("*")):
        raise ArchiveError(f"{label}: the archive is empty (no files). Export it from CVAT again.")
    return root


def _archive_stem(path: Path) -> str:
    """`task_7_mot` for task_7_mot.zip or .tar.gz; "export" when nothing is left."""
    name = path.name
    suffix = next((s for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else path.stem
    return stem if stem.strip(".") else "export"


def _folder_holding(path: Path, work_dir: Path, owned: bool) -> Path:
    if owned:
        return path.parent  # our download folder holds this one file
    folder = Path(tempfile.mkdtemp(prefix="file-", dir=work_dir))
    try:
        os.link(path, folder / path.name)  # no copy of a large file when on the same disk
    except OSError:
        shutil.copyfile(path, folder / path.name)
    return folder


def _single_top_level_folder(root: Path) -> Path | None:
    entries = [entry for entry in root.iterdir() if entry.name not in IGNORED_TOP_LEVEL]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return None


def _remote_file_name(uri: str) -> str:
    """The last path segment of the URI, or "download" when it has none usable."""
    if storage.scheme_of(uri) == "gs":
        name = PurePosixPath(uri[len("gs://") :]).name  # "#" and "?" are plain characters here
    else:
        name = PurePosixPath(urlsplit(uri).path).name
    return name if name not in ("", ".", "..") and "\\" not in name else "download"


def _head(path: Path, size: int = 32) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)
