"""Durable checkpoints on a local path and on gs:// (the local GCS emulator): publish, restore."""

import json

import pytest
import tensorflow as tf

from cvat_kfp.components.common import storage
from cvat_kfp.components.training.checkpoints import (
    DurableCheckpoints,
    checkpoint_files,
    checkpoint_step,
    latest_local_step,
    register_local_checkpoint,
)
from tests.gcs_emulator import create_bucket, gcs_emulator, gcs_server  # noqa: F401


@pytest.fixture(params=["local", "gs"])
def location(request, tmp_path):
    """A durable checkpoint location: a local path, or a gs:// prefix on the emulator."""
    if request.param == "local":
        return str(tmp_path / "durable")
    request.getfixturevalue("gcs_emulator")
    create_bucket("checkpoints")
    return "gs://checkpoints/runs/one"


def save_checkpoints(local_dir, steps) -> list[str]:
    """Local checkpoints ckpt-<step> of a variable holding the step."""
    value = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(value=value), str(local_dir), 10)
    prefixes = []
    for step in steps:
        value.assign(float(step))
        prefixes.append(manager.save(checkpoint_number=step))
    return prefixes


def restored_value(prefix) -> float:
    value = tf.Variable(-1.0)
    tf.train.Checkpoint(value=value).restore(prefix).assert_existing_objects_matched()
    return float(value.numpy())


def test_publish_then_restore_into_an_empty_directory(location, tmp_path):
    durable = DurableCheckpoints(location, log=print)
    for prefix in save_checkpoints(tmp_path / "writer", [2, 4]):
        durable.publish(prefix, {"loss": 0.5})

    assert durable.steps() == {2: True, 4: True}
    assert durable.latest() == {"step": 4, "checkpoint": "ckpt-4", "loss": 0.5}
    fresh = tmp_path / "fresh_pod"
    assert durable.restore_latest(fresh) == 4
    assert latest_local_step(fresh) == 4
    assert restored_value(tf.train.latest_checkpoint(str(fresh))) == 4.0
    # Relative names: the directory still works once moved (as KFP moves a Model artifact).
    assert 'model_checkpoint_path: "ckpt-4"' in (fresh / "checkpoint").read_text()
    moved = tmp_path / "moved"
    fresh.rename(moved)
    assert latest_local_step(moved) == 4


def test_only_the_newest_checkpoints_are_kept(location, tmp_path):
    durable = DurableCheckpoints(location, keep=2, log=print)
    for prefix in save_checkpoints(tmp_path / "writer", [1, 2, 3, 4]):
        durable.publish(prefix)
    assert durable.steps() == {3: True, 4: True}


def test_an_interrupted_upload_is_ignored_then_cleaned_up(location, tmp_path):
    lines = []
    durable = DurableCheckpoints(location, log=lines.append)
    prefixes = dict(zip([2, 3, 4, 6], save_checkpoints(tmp_path / "writer", [2, 3, 4, 6])))
    durable.publish(prefixes[2])
    for step in (3, 6):  # uploads cut short: files without the _SUCCESS marker
        index = checkpoint_files(prefixes[step])[-1]
        storage.upload_file(index, storage.join_uri(location, f"ckpt-{step}/{index.name}"))

    assert durable.newest_complete_step() == 2
    assert any("ckpt-6" in line and "incomplete" in line for line in lines)
    assert durable.restore_latest(tmp_path / "fresh_pod") == 2

    durable.publish(prefixes[4])  # the partial ckpt-3 is stale now; ckpt-6 will be rewritten
    assert durable.steps() == {2: True, 4: True, 6: False}


def test_a_local_checkpoint_as_new_is_not_downloaded_again(location, tmp_path):
    durable = DurableCheckpoints(location, log=print)
    durable.publish(save_checkpoints(tmp_path / "writer", [4])[0])
    local = tmp_path / "same_pod"
    save_checkpoints(local, [6])
    assert durable.restore_latest(local) == 6
    assert not (local / "ckpt-4.index").exists()


def test_an_empty_location_has_nothing_to_restore(location, tmp_path):
    durable = DurableCheckpoints(location, log=print)
    assert durable.steps() == {}
    assert durable.latest() is None
    assert durable.read_json("metrics.json") is None
    assert durable.restore_latest(tmp_path / "fresh_pod") is None
    assert durable.restore_directory("best", tmp_path / "best") is False


def test_directories_and_json_round_trip(location, tmp_path):
    durable = DurableCheckpoints(location, log=print)
    best = tmp_path / "best"
    save_checkpoints(best, [7])
    (best / "info.json").write_text(json.dumps({"AP": 0.5}))
    assert durable.publish_directory(tmp_path / "missing", "best") is None
    durable.publish_directory(best, "best")
    durable.write_json("metrics.json", {"global_step": 7})

    restored = tmp_path / "restored_best"
    assert durable.restore_directory("best", restored)
    assert json.loads((restored / "info.json").read_text()) == {"AP": 0.5}
    assert restored_value(tf.train.latest_checkpoint(str(restored))) == 7.0
    assert durable.read_json("metrics.json") == {"global_step": 7}
    assert durable.steps() == {}  # best/ is not a ckpt-<step> directory


def test_register_local_checkpoint_keeps_the_ones_known(tmp_path):
    save_checkpoints(tmp_path, [1, 2])
    save_checkpoints(tmp_path / "elsewhere", [5])
    for file in checkpoint_files(tmp_path / "elsewhere" / "ckpt-5"):
        file.rename(tmp_path / file.name)
    register_local_checkpoint(tmp_path, "ckpt-5")
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in state.all_model_checkpoint_paths] == [
        "ckpt-1",
        "ckpt-2",
        "ckpt-5",
    ]
    assert latest_local_step(tmp_path) == 5


def test_checkpoint_step_and_files():
    assert checkpoint_step("/model/ckpt-150") == 150
    with pytest.raises(ValueError, match="ckpt-<step>"):
        checkpoint_step("/model/best_ckpt-3")
    with pytest.raises(FileNotFoundError, match="no ckpt-9.index"):
        checkpoint_files("/nonexistent/ckpt-9")
