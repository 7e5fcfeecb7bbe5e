"""fetch_source: folders, archives, file://, gs:// (local emulator) and http:// (local server)."""

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from cvat_kfp.components.common import storage
from cvat_kfp.components.common.archives import ArchiveError
from cvat_kfp.components.common.storage import ObjectNotFoundError, UnsupportedSchemeError
from cvat_kfp.components.export_annotations.sources import fetch_source
from tests.gcs_emulator import create_bucket

EXPORT = {
    "annotations/instances_default.json": b'{"images": [], "annotations": []}',
    "images/a.jpg": os.urandom(20_000),
    "images/b.jpg": os.urandom(10_000),
}


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_tree(root: Path, files: dict[str, bytes] = EXPORT) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def make_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def make_tar_gz(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


# --- local --------------------------------------------------------------------------------------


def test_a_local_folder_is_used_in_place_and_left_untouched(tmp_path):
    folder = write_tree(tmp_path / "export")
    before = snapshot(folder)
    assert fetch_source(str(folder), tmp_path / "work") == folder
    assert fetch_source(f"file://{folder}", tmp_path / "work") == folder
    assert snapshot(folder) == before
    assert not list((tmp_path / "work").iterdir())


@pytest.mark.parametrize("make", [make_zip, make_tar_gz])
def test_a_local_archive_is_extracted_and_its_single_folder_unwrapped(tmp_path, make):
    archive = make(tmp_path / "task_1.zip", EXPORT, prefix="task_1-coco/")
    root = fetch_source(str(archive), tmp_path / "work")
    assert root.name == "task_1-coco" and root.is_relative_to(tmp_path / "work")
    assert read_tree(root) == EXPORT
    assert archive.exists()  # the user's archive is never removed


def test_macos_junk_beside_the_single_folder_does_not_stop_unwrapping(tmp_path):
    files = {f"export/{name}": data for name, data in EXPORT.items()}
    files["__MACOSX/export/._a.jpg"] = b"resource fork"
    files[".DS_Store"] = b"finder"
    root = fetch_source(str(make_zip(tmp_path / "e.zip", files)), tmp_path / "work")
    assert root.name == "export" and read_tree(root) == EXPORT


def test_an_archive_with_several_top_level_entries_is_returned_whole(tmp_path):
    root = fetch_source(str(make_zip(tmp_path / "e.zip", EXPORT)), tmp_path / "work")
    assert read_tree(root) == EXPORT
    assert root.name == "e"  # named after the archive, the same on every run
    root = fetch_source(str(make_tar_gz(tmp_path / "task 1.tar.gz", EXPORT)), tmp_path / "work")
    assert root.name == "task 1" and read_tree(root) == EXPORT


def test_only_one_level_is_unwrapped(tmp_path):
    archive = make_zip(tmp_path / "e.zip", EXPORT, prefix="outer/inner/")
    root = fetch_source(str(archive), tmp_path / "work")
    assert root.name == "outer" and read_tree(root / "inner") == EXPORT


def test_a_lone_non_archive_file_comes_in_a_folder_of_its_own(tmp_path):
    record = tmp_path / "train.tfrecord"
    record.write_bytes(b"\x00" * 100)
    root = fetch_source(str(record), tmp_path / "work")
    assert read_tree(root) == {"train.tfrecord": b"\x00" * 100}
    assert record.read_bytes() == b"\x00" * 100


def test_missing_local_source_is_named(tmp_path):
    with pytest.raises(ObjectNotFoundError, match="export source .*nowhere.zip: no such file"):
        fetch_source(str(tmp_path / "nowhere.zip"), tmp_path / "work")


@pytest.mark.parametrize("files", [{}, {"empty-dir/": b""}])
def test_an_empty_archive_is_refused(tmp_path, files):
    archive = make_zip(tmp_path / "empty.zip", files)
    with pytest.raises(ArchiveError, match="empty.zip: the archive is empty"):
        fetch_source(str(archive), tmp_path / "work")


def test_an_archive_name_with_other_content_is_refused(tmp_path):
    page = tmp_path / "export.zip"
    page.write_bytes(b"<!DOCTYPE html><html>Please sign in</html>")
    with pytest.raises(ArchiveError, match=r"named like an archive.*b'<!DOCTYPE html>.*error page"):
        fetch_source(str(page), tmp_path / "work")


def test_unsupported_scheme_lists_the_supported_ones(tmp_path):
    with pytest.raises(UnsupportedSchemeError, match=r"s3://.*file://, gs://, http://, https://"):
        fetch_source("s3://bucket/export.zip", tmp_path / "work")
    with pytest.raises(ValueError, match="no export source given"):
        fetch_source("  ", tmp_path / "work")


def test_hostile_archive_is_refused_with_its_source_named(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"ok.txt": b"ok", "../../evil.txt": b"x"})
    with pytest.raises(ArchiveError, match=r"evil.zip: entry '../../evil.txt' refused"):
        fetch_source(str(archive), tmp_path / "work")
    assert not (tmp_path / "evil.txt").exists()


def test_limits_pass_through(tmp_path):
    archive = make_zip(tmp_path / "e.zip", EXPORT)
    with pytest.raises(ArchiveError, match="more than 2 entries"):
        fetch_source(str(archive), tmp_path / "work", max_entries=2)


# --- http:// ------------------------------------------------------------------------------------


def test_an_http_archive_is_downloaded_extracted_and_the_download_removed(http_files, tmp_path):
    make_tar_gz(http_files.root / "task.tar.gz", EXPORT, prefix="task/")
    work = tmp_path / "work"
    root = fetch_source(http_files.url("task.tar.gz") + "?token=abc", work)
    assert root.name == "task" and read_tree(root) == EXPORT
    assert not list(work.glob("download-*/*"))  # the downloaded archive is gone once extracted


def test_an_http_url_without_a_file_name_is_recognised_by_content(http_files, tmp_path):
    make_zip(http_files.root / "index.html", EXPORT)  # served for the bare "/" URL
    assert read_tree(fetch_source(http_files.url(""), tmp_path / "work")) == EXPORT


def test_a_missing_http_source_is_named(http_files, tmp_path):
    with pytest.raises(ObjectNotFoundError, match=r"/missing.zip\?\.\.\.: not found"):
        fetch_source(http_files.url("missing.zip") + "?sig=secret", tmp_path / "work")


def test_a_hostile_http_archive_names_the_url(http_files, tmp_path):
    make_zip(http_files.root / "evil.zip", {"/etc/cron.d/evil": b"x"})
    with pytest.raises(ArchiveError, match=r"http://127.0.0.1:\d+/evil.zip: entry .* absolute"):
        fetch_source(http_files.url("evil.zip"), tmp_path / "work")


# --- gs:// --------------------------------------------------------------------------------------


def test_a_gcs_archive_object_is_downloaded_and_extracted(gcs_emulator, tmp_path):
    create_bucket("exports")
    archive = make_zip(tmp_path / "task.zip", EXPORT, prefix="task_7/")
    storage.upload_file(archive, "gs://exports/cvat/task.zip")
    root = fetch_source("gs://exports/cvat/task.zip", tmp_path / "work")
    assert root.name == "task_7" and read_tree(root) == EXPORT


def test_a_gcs_prefix_is_downloaded_as_a_folder(gcs_emulator, tmp_path):
    bucket = create_bucket("exports")
    for name, data in EXPORT.items():
        bucket.blob(f"cvat/task_7/{name}").upload_from_string(data)
    for source in ("gs://exports/cvat/task_7", "gs://exports/cvat/task_7/"):
        assert read_tree(fetch_source(source, tmp_path / "work")) == EXPORT


def test_a_gcs_name_that_is_an_object_and_a_prefix(gcs_emulator, tmp_path):
    bucket = create_bucket("exports")
    make_zip(tmp_path / "e.zip", EXPORT)
    bucket.blob("cvat/e").upload_from_filename(str(tmp_path / "e.zip"))
    bucket.blob("cvat/e/other.txt").upload_from_string(b"other")
    assert read_tree(fetch_source("gs://exports/cvat/e", tmp_path / "w1")) == EXPORT
    assert read_tree(fetch_source("gs://exports/cvat/e/", tmp_path / "w2")) == {
        "other.txt": b"other"
    }


def test_a_missing_gcs_source_is_named(gcs_emulator, tmp_path):
    create_bucket("exports")
    with pytest.raises(ObjectNotFoundError, match="gs://exports/nothing: not found"):
        fetch_source("gs://exports/nothing", tmp_path / "work")
