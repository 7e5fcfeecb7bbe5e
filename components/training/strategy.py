"""Where training runs: the GPUs to use, the tf.distribute strategy, precision and XLA.

MirroredStrategy across the GPUs in use when there are two or more, OneDeviceStrategy for one,
TensorFlow's default strategy on CPU. float16 mixed precision on GPU; mixed precision and XLA are
GPU-only: on CPU they are slow or unsupported, so a config asking for them is overridden (with a
log line). experiment.build_experiment_config applies both, once, for the plan of a run.

GPU runs need an NVIDIA driver of MIN_DRIVER_VERSION or newer: plan_devices refuses an older one.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CPU_DTYPE = "float32"
GPU_DTYPE = "float16"
# TensorFlow 2.20's CUDA 12.5 wheels. An older driver runs CUDA 12 only through minor-version
# compatibility, which cannot JIT-compile PTX; this TensorFlow build ships no SASS for Hopper
# (H100/H200), so its kernels there exist only as PTX and fail to load.
MIN_DRIVER_VERSION = 555  # the driver's major version (CUDA 12.5's branch)
DRIVER_QUERY_TIMEOUT_S = 20


class DeviceError(ValueError):
    """The requested GPUs are not there, or their driver is too old."""


@dataclass(frozen=True)
class DevicePlan:
    """The devices a run uses; `gpus` empty means CPU."""

    gpus: tuple[str, ...] = ()

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def strategy_name(self) -> str:
        """Model Garden's `runtime.distribution_strategy` name for this plan."""
        return {0: "off", 1: "one_device"}.get(self.num_gpus, "mirrored")

    def describe(self) -> str:
        if not self.on_gpu:
            return "CPU (default strategy)"
        if self.num_gpus == 1:
            return f"1 GPU ({self.gpus[0]}, OneDeviceStrategy)"
        return f"{self.num_gpus} GPUs ({', '.join(self.gpus)}, MirroredStrategy)"


def visible_gpus() -> list[str]:
    """The GPUs TensorFlow sees, as device names ("/gpu:0", ...)."""
    import tensorflow as tf

    return [f"/gpu:{index}" for index, _ in enumerate(tf.config.list_physical_devices("GPU"))]


def plan_devices(
    num_clones: int | None = None,
    gpus: Sequence[str] | None = None,
    driver_version: Callable[[], str | None] | None = None,
) -> DevicePlan:
    """Use `num_clones` GPUs (Onepanel's name for the GPU count), or all visible ones when None.

    `gpus` are the visible GPUs (default: asked from TensorFlow; tests pass a list), and
    `driver_version` reads the NVIDIA driver's version (default: NVML, else nvidia-smi). A plan
    with GPUs whose driver is older than MIN_DRIVER_VERSION raises DeviceError.
    """
    gpus = list(visible_gpus() if gpus is None else gpus)
    if num_clones is None:
        return _checked(DevicePlan(tuple(gpus)), driver_version)
    if isinstance(num_clones, bool) or not isinstance(num_clones, int) or num_clones < 0:
        raise DeviceError(f"num_clones must be a whole number of GPUs >= 0, got {num_clones!r}")
    if num_clones > len(gpus):
        raise DeviceError(
            f"num_clones is {num_clones}, but {len(gpus)} GPU(s) are visible"
            f"{' (' + ', '.join(gpus) + ')' if gpus else ''}. Ask for at most {len(gpus)} "
            "(0 trains on CPU), or request more GPUs for the pod (the pipeline's GPU limit)."
        )
    return _checked(DevicePlan(tuple(gpus[:num_clones])), driver_version)


def _checked(plan: DevicePlan, driver_version: Callable[[], str | None] | None) -> DevicePlan:
    if plan.on_gpu:
        check_driver_version((driver_version or nvidia_driver_version)())
    return plan


def check_driver_version(version: str | None) -> None:
    """Raise DeviceError when the NVIDIA driver `version` ("550.54.15") is below the floor.

    None (no NVML, no nvidia-smi: the version cannot be read) passes: TensorFlow then reports
    what it finds itself.
    """
    if version is None:
        return
    found = _version_tuple(version)
    if found is None or found >= (MIN_DRIVER_VERSION,):
        return
    floor = MIN_DRIVER_VERSION
    raise DeviceError(
        f"the node's NVIDIA driver is {version}, but training on GPU needs driver {floor} or "
        "newer: TensorFlow's CUDA 12.5 runs on an older driver only through CUDA's minor-version "
        "compatibility, which cannot JIT-compile PTX, and on H100/H200 GPUs this TensorFlow build "
        f"has only PTX kernels. Run on nodes with driver >= {floor} (upgrade the driver, or pick "
        "such nodes with the pipeline's node_selector), or set num_clones: 0 to train on CPU."
    )


def _version_tuple(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version.strip().split("."))
    except ValueError:
        return None


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version from NVML (libnvidia-ml, which the container runtime mounts
    with the `utility` capability), else from nvidia-smi; None when neither is there."""
    return _nvml_driver_version() or _nvidia_smi_driver_version()


def _nvml_driver_version() -> str | None:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        buffer = ctypes.create_string_buffer(96)
        if nvml.nvmlSystemGetDriverVersion(buffer, ctypes.c_uint(len(buffer))) != 0:
            return None
        return buffer.value.decode("ascii", "replace") or None
    finally:
        nvml.nvmlShutdown()


def _nvidia_smi_driver_version() -> str | None:
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None
    try:
        done = subprocess.run(
            [nvidia_smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=DRIVER_QUERY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    return lines[0] if done.returncode == 0 and lines else None


def create_strategy(plan: DevicePlan):
    """The tf.distribute strategy for `plan`."""
    import tensorflow as tf

    if plan.num_gpus >= 2:
        return tf.distribute.MirroredStrategy(devices=list(plan.gpus))
    if plan.num_gpus == 1:
        return tf.distribute.OneDeviceStrategy(plan.gpus[0])
    return tf.distribute.get_strategy()


def runtime_settings(plan: DevicePlan) -> dict:
    """`runtime` of a config for `plan`: float16 mixed precision on GPU only; XLA off (the COCO
    configs' TPU settings)."""
    return {
        "distribution_strategy": plan.strategy_name,
        "num_gpus": plan.num_gpus,
        "mixed_precision_dtype": GPU_DTYPE if plan.on_gpu else CPU_DTYPE,
        "loss_scale": "dynamic" if plan.on_gpu else None,
        "enable_xla": False,
    }


def input_dtype(plan: DevicePlan) -> str:
    """The dtype the input pipeline feeds the model: the mixed-precision compute dtype on GPU."""
    return GPU_DTYPE if plan.on_gpu else CPU_DTYPE


def configure_runtime(config, plan: DevicePlan, log: Callable[[str], None] = print) -> None:
    """Make `config.runtime` (and the input dtypes) match the plan: CPU means float32, no XLA.

    Applied after the user's model_garden_overrides: on GPU these may change the precision and
    XLA, on CPU they cannot."""
    runtime = config.runtime
    runtime.num_gpus = plan.num_gpus
    runtime.distribution_strategy = plan.strategy_name
    if plan.on_gpu:
        return
    if runtime.mixed_precision_dtype not in (None, CPU_DTYPE):
        log(f"CPU run: mixed precision {runtime.mixed_precision_dtype} turned off (float32)")
    if runtime.enable_xla:
        log("CPU run: XLA (jit_compile) turned off")
    runtime.mixed_precision_dtype = CPU_DTYPE
    runtime.loss_scale = None
    runtime.enable_xla = False
    for data in (config.task.train_data, config.task.validation_data):
        data.dtype = CPU_DTYPE


def set_precision_policy(config) -> str:
    """Set the global Keras precision policy from `config.runtime`, as Model Garden's train.py."""
    from official.modeling import performance

    dtype = config.runtime.mixed_precision_dtype or CPU_DTYPE
    performance.set_mixed_precision_policy(dtype)
    return dtype
