"""Each progress line appears once in a component's log, as the KFP executor configures logging."""

import logging
import sys

import orbit
import pytest
import tensorflow as tf

from cvat_kfp.components.training import engine  # noqa: F401  (installs the absl log filter)


class _CountingTrainer(orbit.AbstractTrainer):
    """Just enough of a trainer for orbit's Controller: each step adds one to the global step."""

    def __init__(self):
        self.global_step = tf.Variable(0, dtype=tf.int64)

    def train(self, num_steps):
        self.global_step.assign_add(tf.cast(num_steps, tf.int64))
        return {"loss": 0.5}


class _CurrentStdout:
    """sys.stdout as it is when a line is written (capsys swaps it), like a process's stdout."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture()
def executor_logging(capsys):
    """The root logger as kfp.dsl.executor_main sets it up: INFO and above to stdout."""
    root = logging.getLogger()
    handler = logging.StreamHandler(_CurrentStdout())
    handler.setFormatter(logging.Formatter("[KFP Executor %(asctime)s %(levelname)s]: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield capsys
    root.removeHandler(handler)
    root.setLevel(level)


def test_orbit_controller_lines_appear_once(executor_logging):
    trainer = _CountingTrainer()
    controller = orbit.Controller(
        trainer=trainer, global_step=trainer.global_step, steps_per_loop=1
    )

    controller.train(steps=2)

    lines = executor_logging.readouterr().out.splitlines()
    progress = [line.split("]: ", 1)[-1] for line in lines if "train | step:" in line]
    assert any("training until step 2" in line for line in progress), lines
    assert len(progress) >= 2 and len(progress) == len(set(progress)), progress


def test_our_own_log_lines_still_reach_the_executors_handler(executor_logging):
    logging.getLogger("cvat_kfp.components.training.run").info("step 4: saved ckpt-4")

    out = executor_logging.readouterr().out
    assert out.count("step 4: saved ckpt-4") == 1 and "[KFP Executor" in out
