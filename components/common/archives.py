"""Safe extraction of zip and tar archives (plain, gzip, bzip2, xz), recognised by content.

Refused, with the archive and the entry named: paths with "..", absolute paths, drive letters and
backslashes; links of every kind, even ones that stay inside (CVAT exports hold none, and with no
links on disk no later entry can write through one); device, fifo and other special entries;
encrypted zip entries; more entries or more bytes than the limits allow. Bytes are counted as
they are written, so an archive whose declared sizes lie cannot get past the limit.

We never call tarfile's extract/extractall: every file is written by our own code, so the
behaviour does not depend on the Python version's tarfile extraction filters. Extraction goes into
a staging folder renamed into place at the end: the destination exists only when complete.
"""

from __future__ import annotations

import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .storage import safe_relative_path

DEFAULT_MAX_TOTAL_BYTES = 50 * 2**30
DEFAULT_MAX_ENTRIES = 1_000_000
CHUNK_BYTES = 1 << 20

ZIP = "zip"
TAR = "tar"
TAR_GZ = "tar.gz"
TAR_BZ2 = "tar.bz2"
TAR_XZ = "tar.xz"
_TAR_MODES = {TAR: "r:", TAR_GZ: "r:gz", TAR_BZ2: "r:bz2", TAR_XZ: "r:xz"}

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

_COMPRESSED_MAGIC = {b"\x1f\x8b": TAR_GZ, b"BZh": TAR_BZ2, b"\xfd7zXZ\x00": TAR_XZ}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; the end record of an empty zip
_UNSUPPORTED_MAGIC = {
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "RAR",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,  # zipfile: "password required"
)
REPACK_HINT = "Re-create the archive as a plain .zip or .tar.gz of the CVAT export folder."


class ArchiveError(ValueError):
    """An archive that cannot be extracted safely; the message names it, the entry and the fix."""


def has_archive_suffix(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_format(path: str | os.PathLike) -> str | None:
    """ "zip", "tar", "tar.gz", "tar.bz2" or "tar.xz" read from the first bytes; None otherwise.

    Raises ArchiveError for archive formats we recognise but do not read (7z, RAR, zstd).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise ArchiveError(f"{path}: {name} archives are not supported. {REPACK_HINT}")
    if head.startswith(_ZIP_MAGIC):
        return ZIP
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar" or (len(head) == 512 and tarfile.is_tarfile(path)):
        return TAR
    return None


def extract_archive(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    label: str | None = None,
) -> Path:
    """Extract `archive` into `dest` (absent or empty) and return `dest`.

    `label` names the archive in errors (e.g. the URI it was downloaded from). On any error
    nothing is left at `dest`.
    """
    archive, dest = Path(archive), Path(dest)
    label = label or str(archive)
    kind = archive_format(archive)
    if kind is None:
        raise ArchiveError(f"{label}: not a zip or tar archive. {REPACK_HINT}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest}: the extraction destination must be absent or an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        limits = _Limits(label, max_total_bytes, max_entries)
        if kind == ZIP:
            _extract_zip(archive, staging, limits)
        else:
            _extract_tar(archive, kind, staging, limits)
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


class _Limits:
    """Counts entries and written bytes against the limits; the errors say what to do."""

    def __init__(self, label: str, max_total_bytes: int, max_entries: int):
        self.label = label
        self.max_total_bytes = max_total_bytes
        self.max_entries = max_entries
        self.entries = 0
        self.total_bytes = 0

    def count_entries(self, count: int = 1) -> None:
        self.entries += count
        if self.entries > self.max_entries:
            raise ArchiveError(
                f"{self.label}: more than {self.max_entries} entries. If the export really is "
                "that large, raise max_entries; otherwise the archive is malformed or hostile."
            )

    def check_declared(self, total_bytes: int) -> None:
        """Refuse at once an archive whose own listing says it is too large."""
        if total_bytes > self.max_total_bytes:
            raise ArchiveError(
                f"{self.label}: its entries declare {total_bytes} bytes in all, more than "
                f"{self.max_total_bytes}. If the export really is that large, raise "
                "max_total_bytes; otherwise the archive is a decompression bomb."
            )

    def count_bytes(self, name: str, count: int) -> None:
        self.total_bytes += count
        if self.total_bytes > self.max_total_bytes:
            raise ArchiveError(
                f"{self.label}: entry {name!r}: extracting would exceed {self.max_total_bytes} "
                "bytes in all. If the export really is that large, raise max_total_bytes; "
                "otherwise the archive is a decompression bomb."
            )


def _refuse(label: str, name: str, problem: str) -> ArchiveError:
    return ArchiveError(f"{label}: entry {name!r} refused: {problem}. {REPACK_HINT}")


def _target(label: str, root: Path, name: str) -> Path:
    try:
        relative = safe_relative_path(name)
    except ValueError as exc:
        raise _refuse(label, name, f"its path {exc}") from exc
    return root.joinpath(*relative.parts)


def _is_root(name: str) -> bool:
    return all(part in ("", ".") for part in name.split("/"))


def _write(label: str, name: str, stream, target: Path, limits: _Limits) -> None:
    """Copy `stream` to `target`, counting the bytes actually written against the limit."""
    _make_dir(label, name, target.parent)
    try:
        out = open(target, "wb")
    except IsADirectoryError as exc:
        raise _refuse(label, name, f"it clashes with another entry ({exc.strerror})") from exc
    with out:
        while True:
            with _reading(label, name):
                chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                return
            limits.count_bytes(name, len(chunk))
            out.write(chunk)


@contextmanager
def _reading(label: str, name: str) -> Iterator[None]:
    """Errors while reading the archive mean it is damaged (or lies); local write errors pass."""
    try:
        yield
    except NotImplementedError as exc:
        raise _refuse(label, name, f"its compression method is not supported ({exc})") from exc
    except _READ_ERRORS as exc:
        raise ArchiveError(
            f"{label}: entry {name!r} cannot be read ({exc}): the archive is damaged, truncated "
            "or its sizes lie. Download or export it again."
        ) from exc


def _make_dir(label: str, name: str, target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file already holds that name
        raise _refuse(label, name, f"it clashes with another entry ({exc.strerror})") from exc


# --- zip ----------------------------------------------------------------------------------------


def _extract_zip(archive: Path, root: Path, limits: _Limits) -> None:
    label = limits.label
    try:
        zf = zipfile.ZipFile(archive)
    except _READ_ERRORS as exc:
        raise ArchiveError(f"{label}: unreadable zip ({exc}); download it again.") from exc
    with zf:
        infos = zf.infolist()
        limits.count_entries(len(infos))
        limits.check_declared(sum(info.file_size for info in infos))
        for info in infos:
            _extract_zip_entry(zf, info, root, limits)


def _extract_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, limits) -> None:
    label, name = limits.label, info.filename
    problem = _zip_entry_problem(info)
    if problem:
        raise _refuse(label, name, problem)
    if info.is_dir():
        if not _is_root(name):
            _make_dir(label, name, _target(label, root, name))
        return
    target = _target(label, root, name)
    with _reading(label, name):
        stream = zf.open(info)
    with stream:
        _write(label, name, stream, target, limits)


def _zip_entry_problem(info: zipfile.ZipInfo) -> str | None:
    if info.flag_bits & 0x1:
        return "it is encrypted; export without a password"
    mode = info.external_attr >> 16
    file_type = mode & 0o170000
    if file_type == 0o120000:
        return "it is a symbolic link (links are refused, even ones that stay inside)"
    if file_type not in (0, 0o100000, 0o040000):
        return "it is a device, fifo or socket, not a regular file"
    return None


# --- tar ----------------------------------------------------------------------------------------


def _extract_tar(archive: Path, kind: str, root: Path, limits: _Limits) -> None:
    label = limits.label
    try:
        tf = tarfile.open(archive, _TAR_MODES[kind])
    except _READ_ERRORS as exc:
        inner = "" if kind == TAR else f" ({kind.split('.')[1]}-compressed, but no tar inside?)"
        raise ArchiveError(f"{label}: unreadable tar archive{inner}: {exc}. {REPACK_HINT}") from exc
    with tf:
        while True:
            try:
                member = tf.next()
            except _READ_ERRORS as exc:
                raise ArchiveError(
                    f"{label}: damaged or truncated after {limits.entries} entries ({exc}). "
                    "Download or export it again."
                ) from exc
            if member is None:
                return
            limits.count_entries()
            _extract_tar_member(tf, member, root, limits)
            # tarfile keeps every header it has read; dropping them bounds memory for huge archives.
            tf.members = []


def _extract_tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, root: Path, limits) -> None:
    label, name = limits.label, member.name
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        raise _refuse(
            label,
            name,
            f"it is a {kind} link to {member.linkname!r} (links are refused, even ones that "
            "stay inside; archive with tar --dereference)",
        )
    if member.isdir():
        if not _is_root(name):
            _make_dir(label, name, _target(label, root, name))
        return
    if not member.isreg():
        raise _refuse(label, name, "it is a device, fifo or other special entry, not a file")
    target = _target(label, root, name)
    with _reading(label, name):
        stream = tf.extractfile(member)
    with stream:
        _write(label, name, stream, target, limits)
