"""Safe archive extraction: good archives come out byte-identical, hostile ones are refused."""

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from cvat_kfp.components.common.archives import (
    ArchiveError,
    archive_format,
    extract_archive,
)

FILES = {
    "export/annotations/instances_default.json": b'{"images": []}',
    "export/images/a.jpg": os.urandom(50_000),
    "export/images/sub dir/ü.png": b"\x89PNG" + bytes(1000),
}


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_zip(path: Path, entries) -> Path:
    """entries: (name, data) pairs, or ZipInfo/data pairs for special entries."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members, mode: str = "w") -> Path:
    """members: (name, data) pairs for files, or TarInfo objects for anything else."""
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    assert not [p.name for p in dest.parent.iterdir() if ".partial-" in p.name]


# --- good archives ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda p: make_zip(p, FILES.items()), "export.zip"),
        (lambda p: make_tar(p, FILES.items(), "w"), "export.tar"),
        (lambda p: make_tar(p, FILES.items(), "w:gz"), "export.tar.gz"),
        (lambda p: make_tar(p, FILES.items(), "w:bz2"), "export.tar.bz2"),
        (lambda p: make_tar(p, FILES.items(), "w:xz"), "export.tar.xz"),
        (lambda p: make_tar(p, FILES.items(), "w:gz"), "misnamed.zip"),  # content decides
        (lambda p: make_zip(p, FILES.items()), "no_extension"),
    ],
)
def test_good_archives_extract_byte_identically(tmp_path, make, name):
    archive = make(tmp_path / name)
    dest = extract_archive(archive, tmp_path / "out")
    assert read_tree(dest) == FILES


def test_format_is_read_from_content(tmp_path):
    assert archive_format(make_zip(tmp_path / "a.bin", FILES.items())) == "zip"
    assert archive_format(make_zip(tmp_path / "empty.zip", [])) == "zip"
    assert archive_format(make_tar(tmp_path / "a.zip", FILES.items(), "w:xz")) == "tar.xz"
    assert archive_format(make_tar(tmp_path / "a.dat", FILES.items(), "w:bz2")) == "tar.bz2"
    v7 = make_tar(tmp_path / "v7.tar", [("a.txt", b"x")], "w")
    data = bytearray(v7.read_bytes())
    data[257:265] = bytes(8)  # no "ustar" magic, as in pre-POSIX tars; checksum must still match
    header = data[:512]
    header[148:156] = b" " * 8
    data[148:156] = b"%06o\x00 " % sum(header)
    v7.write_bytes(bytes(data))
    assert archive_format(v7) == "tar"
    (tmp_path / "a.json").write_text('{"images": []}')
    assert archive_format(tmp_path / "a.json") is None
    (tmp_path / "empty").write_bytes(b"")
    assert archive_format(tmp_path / "empty") is None


def test_directory_entries_and_dot_slash_prefixes_are_fine(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar",
        [tar_entry("./", tarfile.DIRTYPE), tar_entry("./d/", tarfile.DIRTYPE), ("./d/x", b"x")],
    )
    assert read_tree(extract_archive(archive, tmp_path / "out")) == {"d/x": b"x"}


# --- hostile paths ------------------------------------------------------------------------------

BAD_NAMES = [
    ("../evil.txt", "'..'"),
    ("export/../../evil.txt", "'..'"),
    ("/tmp/evil.txt", "absolute path"),
    ("C:/evil.txt", "drive letter"),
    ("C:evil.txt", "drive letter"),
    ("..\\evil.txt", "backslash"),
    ("export\\..\\..\\evil.txt", "backslash"),
]


@pytest.mark.parametrize("name, reason", BAD_NAMES)
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_paths_that_escape_are_refused(tmp_path, kind, name, reason):
    entries = [("export/ok.txt", b"ok"), (name, b"evil")]
    if kind == "zip":
        archive = make_zip(tmp_path / "bad.zip", entries)
    else:
        archive = make_tar(tmp_path / "bad.tar.gz", entries, "w:gz")
    with pytest.raises(ArchiveError, match=f"bad.*entry .* refused: its path .*{reason}"):
        extract_archive(archive, tmp_path / "out")
    assert_nothing_left(tmp_path / "out")
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize(
    "member, problem",
    [
        (tar_entry("link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link to '/etc/passwd'"),
        (tar_entry("link", tarfile.SYMTYPE, "../../outside"), "symbolic link to '../../outside'"),
        (tar_entry("link", tarfile.SYMTYPE, "export/ok.txt"), "symbolic link"),  # inside, too
        (tar_entry("hard", tarfile.LNKTYPE, "../../etc/passwd"), "hard link"),
        (tar_entry("hard", tarfile.LNKTYPE, "export/ok.txt"), "hard link"),
        (tar_entry("dev", tarfile.CHRTYPE), "device, fifo"),
        (tar_entry("disk", tarfile.BLKTYPE), "device, fifo"),
        (tar_entry("pipe", tarfile.FIFOTYPE), "device, fifo"),
    ],
)
def test_links_and_special_tar_entries_are_refused(tmp_path, member, problem):
    archive = make_tar(tmp_path / "bad.tar", [("export/ok.txt", b"ok"), member])
    with pytest.raises(ArchiveError, match=f"entry '{member.name}' refused: it is a.* {problem}"):
        extract_archive(archive, tmp_path / "out")
    assert_nothing_left(tmp_path / "out")


def test_a_symlink_then_a_file_through_it_never_writes_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = make_tar(
        tmp_path / "bad.tar",
        [tar_entry("escape", tarfile.SYMTYPE, str(outside)), ("escape/pwned.txt", b"x")],
    )
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_archive(archive, tmp_path / "out")
    assert not list(outside.iterdir())


@pytest.mark.parametrize(
    "mode, problem",
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFCHR | 0o644, "device, fifo or socket"),
        (stat.S_IFIFO | 0o644, "device, fifo or socket"),
    ],
)
def test_zip_links_and_special_entries_are_refused(tmp_path, mode, problem):
    info = zipfile.ZipInfo("export/link")
    info.create_system = 3  # Unix: the mode lives in the high bits of external_attr
    info.external_attr = mode << 16
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("export/ok.txt", b"ok")
        zf.writestr(info, b"/etc/passwd")
    with pytest.raises(ArchiveError, match=f"entry 'export/link' refused: it is a {problem}"):
        extract_archive(tmp_path / "bad.zip", tmp_path / "out")
    assert_nothing_left(tmp_path / "out")


def test_encrypted_zip_entries_are_refused(tmp_path):
    data = bytearray(make_zip(tmp_path / "plain.zip", [("export/secret.txt", b"x")]).read_bytes())
    # zipfile cannot encrypt; set the "encrypted" flag in the local and central headers instead.
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + flag_offset] |= 0x1
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="'export/secret.txt' refused: it is encrypted"):
        extract_archive(tmp_path / "bad.zip", tmp_path / "out")


# --- bombs and limits ---------------------------------------------------------------------------


def test_too_many_entries_are_refused(tmp_path):
    entries = [(f"export/{i}.txt", b"x") for i in range(6)]
    for archive in (
        make_zip(tmp_path / "many.zip", entries),
        make_tar(tmp_path / "many.tar.gz", entries, "w:gz"),
    ):
        with pytest.raises(ArchiveError, match=f"{archive.name}: more than 5 entries.*max_entries"):
            extract_archive(archive, tmp_path / "out", max_entries=5)
        assert_nothing_left(tmp_path / "out")
        assert read_tree(extract_archive(archive, tmp_path / "out", max_entries=6))
        os.rename(tmp_path / "out", tmp_path / f"done-{archive.name}")


def test_zip_bomb_that_declares_its_size_is_refused_before_writing(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", [("bomb.bin", bytes(20_000_000))])
    assert archive.stat().st_size < 50_000
    with pytest.raises(ArchiveError, match="declare 20000000 bytes in all, more than 1000000"):
        extract_archive(archive, tmp_path / "out", max_total_bytes=1_000_000)
    assert_nothing_left(tmp_path / "out")


def test_zip_bomb_with_lying_sizes_is_refused(tmp_path):
    # The central directory claims 100 bytes; the data inflates to 20 MB.
    with zipfile.ZipFile(tmp_path / "liar.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("export/bomb.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, bytes(20_000_000))
        info.file_size = 100
    with pytest.raises(ArchiveError, match="'export/bomb.bin' cannot be read.*sizes lie"):
        extract_archive(tmp_path / "liar.zip", tmp_path / "out", max_total_bytes=1_000_000)
    assert_nothing_left(tmp_path / "out")


def test_tar_bomb_is_stopped_by_the_bytes_actually_written(tmp_path):
    archive = make_tar(tmp_path / "bomb.tar.gz", [("a.bin", bytes(600_000))] * 4, "w:gz")
    with pytest.raises(ArchiveError, match="'a.bin': extracting would exceed 1000000 bytes"):
        extract_archive(archive, tmp_path / "out", max_total_bytes=1_000_000)
    assert_nothing_left(tmp_path / "out")


# --- damaged, unsupported, misuse ---------------------------------------------------------------


def test_truncated_archive_is_reported_as_damaged(tmp_path):
    whole = make_tar(tmp_path / "whole.tar.gz", FILES.items(), "w:gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match="cut.tar.gz.*(damaged|truncated)"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "out")
    assert_nothing_left(tmp_path / "out")


def test_compressed_file_without_a_tar_inside_is_refused(tmp_path):
    import gzip

    (tmp_path / "notes.gz").write_bytes(gzip.compress(b"just some text, not a tar" * 10))
    with pytest.raises(ArchiveError, match="notes.gz: unreadable tar archive .gz-compressed"):
        extract_archive(tmp_path / "notes.gz", tmp_path / "out")


def test_unsupported_and_non_archives_say_so(tmp_path):
    (tmp_path / "x.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(100))
    with pytest.raises(ArchiveError, match="x.7z: 7z archives are not supported.*zip"):
        extract_archive(tmp_path / "x.7z", tmp_path / "out")
    (tmp_path / "page.zip").write_bytes(b"<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(ArchiveError, match="page.zip: not a zip or tar archive"):
        extract_archive(tmp_path / "page.zip", tmp_path / "out", label="https://h/page.zip")


def test_destination_must_be_absent_or_empty(tmp_path):
    archive = make_zip(tmp_path / "a.zip", FILES.items())
    (tmp_path / "empty").mkdir()
    assert read_tree(extract_archive(archive, tmp_path / "empty")) == FILES
    with pytest.raises(ValueError, match="must be absent or an empty folder"):
        extract_archive(archive, tmp_path / "empty")


def test_entries_that_clash_are_refused(tmp_path):
    archive = make_tar(tmp_path / "clash.tar", [("a", b"file"), ("a/b", b"under a file")])
    with pytest.raises(ArchiveError, match="'a/b' refused: it clashes with another entry"):
        extract_archive(archive, tmp_path / "out")
