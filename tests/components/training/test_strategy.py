"""Device plans, strategies and CPU/GPU runtime settings, without GPUs (device lists injected)."""

import pytest
import tensorflow as tf
import tf_keras
from official.core import exp_factory
from official.vision import registry_imports  # noqa: F401  (registers the experiments)

from cvat_kfp.components.training.strategy import (
    DeviceError,
    DevicePlan,
    configure_runtime,
    create_strategy,
    plan_devices,
    set_precision_policy,
)

TWO_GPUS = ["/gpu:0", "/gpu:1"]


def gpu_config():
    """A COCO config as a GPU run would have it: mixed float16 and XLA."""
    config = exp_factory.get_exp_config("retinanet_mobile_coco")
    config.runtime.mixed_precision_dtype = "float16"
    config.runtime.loss_scale = "dynamic"
    config.runtime.enable_xla = True
    config.task.train_data.dtype = config.task.validation_data.dtype = "float16"
    return config


@pytest.mark.parametrize(
    ("gpus", "strategy_name", "described"),
    [
        ([], "off", "CPU"),
        (["/gpu:0"], "one_device", "1 GPU"),
        (TWO_GPUS, "mirrored", "2 GPUs"),
    ],
)
def test_all_visible_gpus_are_used_by_default(gpus, strategy_name, described):
    plan = plan_devices(gpus=gpus)
    assert plan.gpus == tuple(gpus)
    assert plan.strategy_name == strategy_name
    assert plan.on_gpu == bool(gpus)
    assert plan.describe().startswith(described)


def test_num_clones_picks_that_many_gpus():
    assert plan_devices(1, gpus=TWO_GPUS).gpus == ("/gpu:0",)
    assert plan_devices(2, gpus=TWO_GPUS).strategy_name == "mirrored"
    assert plan_devices(0, gpus=TWO_GPUS) == DevicePlan()  # 0: train on CPU


def test_more_clones_than_gpus_names_both_counts():
    with pytest.raises(DeviceError, match=r"num_clones is 3, but 2 GPU\(s\) are visible"):
        plan_devices(3, gpus=TWO_GPUS)
    with pytest.raises(DeviceError, match=r"num_clones is 1, but 0 GPU\(s\) are visible"):
        plan_devices(1, gpus=[])


@pytest.mark.parametrize("num_clones", [-1, 1.5, True, "2"])
def test_num_clones_must_be_a_gpu_count(num_clones):
    with pytest.raises(DeviceError, match="num_clones must be a whole number"):
        plan_devices(num_clones, gpus=TWO_GPUS)


def test_cpu_run_turns_mixed_precision_and_xla_off():
    config, lines = gpu_config(), []
    configure_runtime(config, DevicePlan(), log=lines.append)
    runtime = config.runtime
    assert (runtime.mixed_precision_dtype, runtime.loss_scale, runtime.enable_xla) == (
        "float32",
        None,
        False,
    )
    assert (runtime.num_gpus, runtime.distribution_strategy) == (0, "off")
    assert config.task.train_data.dtype == config.task.validation_data.dtype == "float32"
    assert any("mixed precision float16 turned off" in line for line in lines)
    assert any("XLA" in line for line in lines)


def test_gpu_run_keeps_the_configs_precision():
    config = gpu_config()
    configure_runtime(config, DevicePlan(tuple(TWO_GPUS)), log=print)
    assert config.runtime.mixed_precision_dtype == "float16"
    assert config.runtime.enable_xla is True
    assert (config.runtime.num_gpus, config.runtime.distribution_strategy) == (2, "mirrored")


def test_cpu_plan_gets_the_default_strategy_and_float32_policy():
    assert create_strategy(DevicePlan()) is tf.distribute.get_strategy()
    config = gpu_config()
    configure_runtime(config, DevicePlan(), log=lambda line: None)
    assert set_precision_policy(config) == "float32"
    assert tf_keras.mixed_precision.global_policy().name == "float32"


def test_one_device_plan_gets_a_one_device_strategy():
    strategy = create_strategy(DevicePlan(("/cpu:0",)))  # a CPU stands in for the GPU
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)


def test_an_older_driver_than_555_is_refused_when_gpus_are_visible():
    with pytest.raises(DeviceError) as error:
        plan_devices(gpus=TWO_GPUS, driver_version=lambda: "535.183.01")
    message = str(error.value)
    assert "driver is 535.183.01" in message and "555 or newer" in message
    assert "minor-version compatibility" in message and "PTX" in message
    assert "num_clones: 0" in message
    with pytest.raises(DeviceError, match="driver is 525.60.13"):
        plan_devices(1, gpus=TWO_GPUS, driver_version=lambda: "525.60.13")


def test_a_recent_or_unreadable_driver_passes_and_cpu_plans_do_not_ask():
    for version in ("555.42.06", "570.86.15", None):
        assert plan_devices(gpus=TWO_GPUS, driver_version=lambda v=version: v).num_gpus == 2

    def not_asked():
        raise AssertionError("the driver was queried for a CPU plan")

    assert plan_devices(0, gpus=TWO_GPUS, driver_version=not_asked) == DevicePlan()
    assert plan_devices(gpus=[], driver_version=not_asked) == DevicePlan()


def test_the_driver_version_is_read_from_nvidia_smi_without_nvml(monkeypatch, tmp_path):
    from cvat_kfp.components.training import strategy

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 550.54.15\necho 550.54.15\n")
    fake.chmod(0o755)
    monkeypatch.setattr(strategy, "_nvml_driver_version", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert strategy.nvidia_driver_version() == "550.54.15"
    with pytest.raises(DeviceError, match="driver is 550.54.15"):
        plan_devices(gpus=["/gpu:0"])
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert strategy.nvidia_driver_version() is None
