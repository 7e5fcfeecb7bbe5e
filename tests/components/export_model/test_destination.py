"""destination_uri: the export copied whole (marker last), never over somebody else's files."""

import json
import shutil

import pytest

from cvat_kfp.components.common import storage
from cvat_kfp.components.export_model.exporter import ExportError, copy_to_destination
from tests.gcs_emulator import create_bucket

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


def export_files(export) -> list[str]:
    return storage.list_files(str(export.output_dir))


def test_a_gcs_destination_gets_the_whole_export_and_the_marker_last(
    retinanet_export, gcs_emulator, tmp_path
):
    create_bucket("models")
    uri = "gs://models/shapes/v1"
    our_id = retinanet_export.metadata["exported_model"]["export_id"]
    assert copy_to_destination(retinanet_export.output_dir, uri, our_id, print) == uri
    assert storage.is_complete(uri)
    manifest = storage.wait_until_complete(uri)  # {name: size}
    assert sorted(manifest) == export_files(retinanet_export)
    copy = storage.download_directory(uri, tmp_path / "copy", require_complete=True)
    assert json.loads((copy / "export.json").read_text())["export_id"] == our_id
    assert (copy / "saved_model" / "saved_model.pb").is_file()

    # the same export again (a retried task): left as it is
    lines = []
    copy_to_destination(retinanet_export.output_dir, uri, our_id, lines.append)
    assert "already holds this export" in lines[0]

    # another export there: refused, nothing touched
    with pytest.raises(ExportError, match=f"already holds export {our_id}; export-model never"):
        copy_to_destination(retinanet_export.output_dir, uri, "another0export1", print)
    assert storage.is_complete(uri)


def test_a_gcs_destination_holding_other_files_is_refused(retinanet_export, gcs_emulator, tmp_path):
    create_bucket("models")
    (tmp_path / "notes.txt").write_text("mine\n")
    storage.upload_file(tmp_path / "notes.txt", "gs://models/shapes/notes.txt")
    with pytest.raises(ExportError, match=r"holds 1 other file\(s\).*gs://models/shapes/v2"):
        copy_to_destination(retinanet_export.output_dir, "gs://models/shapes", "x", print)
    assert storage.list_files("gs://models/shapes") == ["notes.txt"]


def test_an_unfinished_copy_of_the_same_export_is_completed(retinanet_export, gcs_emulator):
    create_bucket("models")
    uri = "gs://models/half"
    our_id = retinanet_export.metadata["exported_model"]["export_id"]
    # an earlier attempt died after export.json but before the rest and the marker
    storage.upload_file(retinanet_export.output_dir / "export.json", f"{uri}/export.json")
    lines = []
    copy_to_destination(retinanet_export.output_dir, uri, our_id, lines.append)
    assert "completing an unfinished copy" in lines[0]
    assert storage.is_complete(uri)
    assert storage.list_files(uri) == sorted([*export_files(retinanet_export), storage.MARKER])


def test_a_local_destination_appears_whole_and_is_not_overwritten(retinanet_export, tmp_path):
    target = tmp_path / "exports" / "shapes"
    our_id = retinanet_export.metadata["exported_model"]["export_id"]
    copy_to_destination(retinanet_export.output_dir, str(target), our_id, print)
    assert storage.is_complete(str(target))
    assert (target / "saved_model" / "saved_model.pb").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left
    with pytest.raises(ExportError, match="never overwrites"):
        copy_to_destination(retinanet_export.output_dir, str(target), "someone-else", print)
    shutil.rmtree(target)
    target.mkdir()  # an empty directory is a fine destination
    copy_to_destination(retinanet_export.output_dir, f"file://{target}", our_id, print)
    assert storage.is_complete(str(target))
