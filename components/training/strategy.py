"""Where training runs: the GPUs to use, the tf.distribute strategy, precision and XLA.

MirroredStrategy across the GPUs in use when there are two or more, OneDeviceStrategy for one,
TensorFlow's default strategy on CPU. Mixed precision and XLA are GPU-only: on CPU they are slow
or unsupported, so a config asking for them is overridden (with a log line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

CPU_DTYPE = "float32"


class DeviceError(ValueError):
    """The requested GPUs are not there."""


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


def plan_devices(num_clones: int | None = None, gpus: Sequence[str] | None = None) -> DevicePlan:
    """Use `num_clones` GPUs (Onepanel's name for the GPU count), or all visible ones when None.

    `gpus` are the visible GPUs (default: asked from TensorFlow; tests pass a list).
    """
    gpus = list(visible_gpus() if gpus is None else gpus)
    if num_clones is None:
        return DevicePlan(tuple(gpus))
    if isinstance(num_clones, bool) or not isinstance(num_clones, int) or num_clones < 0:
        raise DeviceError(f"num_clones must be a whole number of GPUs >= 0, got {num_clones!r}")
    if num_clones > len(gpus):
        raise DeviceError(
            f"num_clones is {num_clones}, but {len(gpus)} GPU(s) are visible"
            f"{' (' + ', '.join(gpus) + ')' if gpus else ''}. Ask for at most {len(gpus)} "
            "(0 trains on CPU), or request more GPUs for the pod (the pipeline's GPU limit)."
        )
    return DevicePlan(tuple(gpus[:num_clones]))


def create_strategy(plan: DevicePlan):
    """The tf.distribute strategy for `plan`."""
    import tensorflow as tf

    if plan.num_gpus >= 2:
        return tf.distribute.MirroredStrategy(devices=list(plan.gpus))
    if plan.num_gpus == 1:
        return tf.distribute.OneDeviceStrategy(plan.gpus[0])
    return tf.distribute.get_strategy()


def configure_runtime(config, plan: DevicePlan, log: Callable[[str], None] = print) -> None:
    """Make `config.runtime` (and the input dtypes) match the plan: CPU means float32, no XLA."""
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
