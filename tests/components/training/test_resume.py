"""Resumption for real: kill -9 a training process, start again from the durable location."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import orbit
import pytest
import tensorflow as tf
from official.core import task_factory

from cvat_kfp.components.training.checkpoints import DurableCheckpoints
from cvat_kfp.components.training.engine import build_checkpoint_manager, build_trainer, train
from tests.gcs_emulator import create_bucket, gcs_emulator, gcs_server  # noqa: F401

from ._training_data import REPO_ROOT, make_tfrecords, small_config

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


NUM_STEPS = 16
CHECKPOINT_INTERVAL = 2
KILL_AFTER_STEP = 4
START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_tfrecords(tmp_path_factory.mktemp("tfrecords"))


@pytest.fixture(params=["local", "gs"])
def durable_uri(request, tmp_path):
    """The durable checkpoint location: a local path, or gs:// on the emulator (the child
    process inherits STORAGE_EMULATOR_HOST)."""
    if request.param == "local":
        return str(tmp_path / "durable")
    request.getfixturevalue("gcs_emulator")
    create_bucket("training")
    return "gs://training/runs/shapes"


def start_training(tfrecords, model_dir, durable_uri, log_path) -> subprocess.Popen:
    arguments = {
        "train_dir": str(tfrecords.train_dir),
        "val_dir": str(tfrecords.val_dir),
        "model_dir": str(model_dir),
        "durable_uri": durable_uri,
        "num_steps": NUM_STEPS,
        "checkpoint_interval": CHECKPOINT_INTERVAL,
        "eval_interval": NUM_STEPS,
    }
    command = [sys.executable, "-m", "tests.components.training._training_data"]
    with open(log_path, "wb") as log:  # a file, not a pipe: an unread pipe would stall the child
        return subprocess.Popen(
            [*command, json.dumps(arguments)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its log must be current when killed
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until_past_a_mirrored_step(durable, process, log_path, step: int) -> None:
    """Until `step` is mirrored and training has gone on past it (a kill then loses steps)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        latest = durable.latest()
        if latest and latest["step"] >= step and last_trained_step(log_path) > latest["step"]:
            return
        if process.poll() is not None:
            pytest.fail(f"training exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    pytest.fail(
        f"no checkpoint past step {step} within {START_TIMEOUT_S} s:\n{log_path.read_text()}"
    )


def last_trained_step(log_path) -> int:
    """The last global step orbit reported training to."""
    steps = re.findall(r"train \| step:\s+(\d+) \| steps/sec", log_path.read_text())
    return max(map(int, steps), default=0)


def test_killed_training_resumes_from_the_last_mirrored_checkpoint(
    tfrecords, durable_uri, tmp_path
):
    durable = DurableCheckpoints(durable_uri, log=print)
    log_path = tmp_path / "killed_run.log"
    process = start_training(tfrecords, tmp_path / "killed_pod", durable_uri, log_path)
    try:
        wait_until_past_a_mirrored_step(durable, process, log_path, KILL_AFTER_STEP)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    mirrored = durable.latest()["step"]
    reached = last_trained_step(log_path)
    print(f"killed at step {reached}; the durable location held step {mirrored}")
    assert KILL_AFTER_STEP <= mirrored < NUM_STEPS, "the kill came after the run had finished"

    lines = []
    result = train(  # a new pod: an empty model directory, the same durable location
        small_config(tfrecords, num_steps=NUM_STEPS),
        model_dir=tmp_path / "new_pod",
        durable_uri=durable_uri,
        checkpoint_interval=CHECKPOINT_INTERVAL,
        eval_interval=NUM_STEPS,
        label_map=tfrecords.label_map,
        log=lines.append,
    )
    assert result.resumed_from_step == mirrored
    assert reached - result.resumed_from_step <= CHECKPOINT_INTERVAL  # lost at most one interval
    assert result.global_step == NUM_STEPS
    assert result.steps_trained == NUM_STEPS - mirrored
    assert any(f"restored the checkpoint of step {mirrored}" in line for line in lines)
    assert durable.latest()["step"] == NUM_STEPS
    assert "AP" in result.metrics


# --- optimizer state --------------------------------------------------------------------------


def build(config, model_dir):
    with tf.distribute.get_strategy().scope():
        trainer = build_trainer(config, task_factory.get_task(config.task), model_dir)
    return trainer, build_checkpoint_manager(trainer, model_dir, keep=3)


def training_state(trainer) -> dict:
    """Global step, optimizer iterations and learning rate, momentum slots, weights."""
    optimizer, variables = trainer.optimizer, trainer.model.trainable_variables
    optimizer._create_all_weights(variables)  # slots are made lazily; a restore waits for them
    return {
        "global_step": int(trainer.global_step.numpy()),
        "iterations": int(optimizer.iterations.numpy()),
        "learning_rate": float(optimizer.learning_rate(optimizer.iterations)),
        "slots": [optimizer.get_slot(v, "momentum").numpy() for v in variables],
        "weights": [v.numpy() for v in variables],
    }


def test_optimizer_slots_and_learning_rate_survive_a_restore(tfrecords, tmp_path):
    config = small_config(tfrecords, num_steps=20, warmup_steps=10)  # at 3: mid-warmup
    trainer, manager = build(config, tmp_path / "first")
    orbit.Controller(trainer=trainer, global_step=trainer.global_step, steps_per_loop=3).train(3)
    saved = training_state(trainer)
    durable = DurableCheckpoints(str(tmp_path / "durable"), log=print)
    durable.publish(manager.save(checkpoint_number=3))

    assert durable.restore_latest(tmp_path / "second") == 3
    fresh, fresh_manager = build(config, tmp_path / "second")
    fresh_manager.restore_or_initialize()  # as orbit's Controller does on start
    restored = training_state(fresh)  # slots made after the restore get their saved values

    assert saved["global_step"] == saved["iterations"] == 3
    assert float(fresh.optimizer.learning_rate(0)) != saved["learning_rate"]
    assert any(np.abs(slot).max() > 0 for slot in saved["slots"])
    for key in ("global_step", "iterations", "learning_rate"):
        assert restored[key] == saved[key], key
    for key in ("slots", "weights"):
        assert len(restored[key]) == len(saved[key])
        for after, before in zip(restored[key], saved[key]):
            np.testing.assert_array_equal(after, before)
