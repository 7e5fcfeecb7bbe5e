"""The hyperparameters users type, in Onepanel's keys, checked and completed with preset defaults.

Input is YAML (`key: value` lines; empty means all defaults: nothing is required). Onepanel's older
`key=value` lines are read too, and dashes may stand for underscores (`num-steps`), as Onepanel's
workflows accepted both. An unknown key, a wrong type or a value out of range is an error that
names the key, the value and what is expected; so is a YAML alias (`*name`), which could expand a
few lines into billions of values.

Keys (defaults come from the preset; see presets.py):

- `num_steps`: training steps. For Mask R-CNN presets, steps per epoch (Onepanel's meaning).
- `batch_size`: images per step, over all GPUs together (it must divide evenly among them).
- `initial_learning_rate` (alias `learning_rate`): SGD learning rate after warmup.
- `num_clones`: how many GPUs to train on (Onepanel's name); default all visible ones, 0 = CPU.
- `schedule_step_1`, `schedule_lr_1`, `schedule_step_2`, `schedule_lr_2` (detection presets):
  the learning rate drops to `schedule_lr_1` at `schedule_step_1` and to `schedule_lr_2` at
  `schedule_step_2`; each rate defaults to a tenth of the one before. Without schedule steps the
  learning rate follows a cosine decay to 0 over `num_steps`.
- `warmup_steps`, `warmup_learning_rate`: a linear ramp from `warmup_learning_rate` (default 0)
  to the learning rate over the first steps. The default warmup is the preset's, shortened to a
  tenth of the run for short runs.
- `image_size`: the model's square input in pixels (long image side resized to it, then padded);
  a multiple of 2**max_level of the preset's feature pyramid (128 for RetinaNet and SpineNet,
  64 for the R-CNN FPNs), 128 to 2048.
- `checkpoint_interval`: steps between checkpoints (a restart loses at most this many steps).
- `eval_interval`: steps between evaluations on the val split (Mask R-CNN presets: default once
  per epoch). Both intervals are capped at the run's length: a larger value means "at the end".
- `seed`: the run's random seed (the input pipeline's shuffling).
- `stage_1_epochs`, `stage_2_epochs`, `stage_3_epochs` (Mask R-CNN presets): Onepanel's staged
  schedule. Stage 1 trains the heads (backbone frozen), stage 2 the backbone from stage 4 up,
  stage 3 all layers at a tenth of the learning rate. The numbers are per stage, NOT cumulative:
  1/1/1 trains three epochs, one per stage, and 1/2/3 six. Onepanel's docs called them
  cumulative, but its final workflow added them up and defaulted to 1/1/1; we follow that code.
  A stage of 0 epochs is skipped. The run is `num_steps` x (the three added up) steps.
- `model_garden_overrides`: a nested mapping (dotted keys allowed: `task.model.anchor.num_scales:
  4`) applied last to Model Garden's ExperimentConfig, strictly: a key Model Garden does not have
  is an error naming it. Anything the keys above do not cover goes here.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import yaml

from .presets import Preset, get_preset

MIN_IMAGE_SIZE = 128
MAX_IMAGE_SIZE = 2048
STAGE_LAYERS = ("heads", "4+", "all")  # Matterport's `layers` names, which Onepanel users know
STAGE_3_LEARNING_RATE_FACTOR = 0.1
SHORT_RUN_WARMUP_FRACTION = 10  # a default warmup never takes more than a tenth of the run

ALIASES = {"learning_rate": "initial_learning_rate"}
ONEPANEL_HINTS = {
    "image_height": "use image_size (a square input)",
    "image_width": "use image_size (a square input)",
    "min_dimension": "use image_size (the long side)",
    "max_dimension": "use image_size (the long side)",
    "momentum_optimizer_value": "use model_garden_overrides: "
    "{trainer.optimizer_config.optimizer.sgd.momentum: 0.9}",
    "first_stage_max_proposals": "use model_garden_overrides: "
    "{task.model.roi_generator.test_num_proposals: 100}",
    "second_stage_max_detections_max_total_detections": "use model_garden_overrides: "
    "{task.model.detection_generator.max_num_detections: 100}",
}
KEY_VALUE_LINE = re.compile(r"\s*([A-Za-z_][\w-]*)\s*=(.*)")


class HyperparameterError(ValueError):
    """Hyperparameters that cannot be used; the message names the key and what is expected."""


@dataclass(frozen=True)
class TrainingStage:
    """One stage of the Mask R-CNN schedule: global steps [first_step, end_step).

    `layers` is what trains: "heads" (RPN, box and mask heads and the FPN; backbone frozen), "4+"
    (the heads plus the backbone from stage 4 up: its layers at output stride 16 and coarser,
    ResNet's conv4_x and conv5_x, MobileNetV2's blocks from the first 64-channel one), "all".
    Frozen layers keep their BatchNorm statistics (inference mode, as Keras' trainable=False).
    """

    layers: str
    first_step: int
    end_step: int
    learning_rate: float


def stage_at(stages: Sequence[TrainingStage], step: int) -> TrainingStage | None:
    """The stage of `stages` that global `step` belongs to (the last one at or past the end)."""
    for stage in stages:
        if step < stage.end_step:
            return stage
    return stages[-1] if stages else None


@dataclass(frozen=True)
class Hyperparameters:
    """Complete, checked hyperparameters (no value left to default)."""

    num_steps: int
    batch_size: int
    initial_learning_rate: float
    image_size: int
    warmup_steps: int
    warmup_learning_rate: float
    checkpoint_interval: int
    eval_interval: int
    seed: int = 0
    num_clones: int | None = None
    schedule_step_1: int | None = None
    schedule_lr_1: float | None = None
    schedule_step_2: int | None = None
    schedule_lr_2: float | None = None
    stage_1_epochs: int | None = None
    stage_2_epochs: int | None = None
    stage_3_epochs: int | None = None
    model_garden_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def staged(self) -> bool:
        """True for the Mask R-CNN staged schedule (num_steps is steps per epoch)."""
        return self.stage_1_epochs is not None

    @property
    def epochs(self) -> tuple[int, int, int]:
        return (self.stage_1_epochs or 0, self.stage_2_epochs or 0, self.stage_3_epochs or 0)

    @property
    def total_steps(self) -> int:
        """The global step the run ends at."""
        return self.num_steps * sum(self.epochs) if self.staged else self.num_steps

    @property
    def stages(self) -> tuple[TrainingStage, ...]:
        """The stages that run (0-epoch stages left out), in order; empty when not staged."""
        if not self.staged:
            return ()
        stages, step = [], 0
        factors = (1.0, 1.0, STAGE_3_LEARNING_RATE_FACTOR)
        for layers, epochs, factor in zip(STAGE_LAYERS, self.epochs, factors):
            if epochs:
                end = step + epochs * self.num_steps
                stages.append(TrainingStage(layers, step, end, self.initial_learning_rate * factor))
                step = end
        return tuple(stages)

    @property
    def start_learning_rate(self) -> float:
        """The learning rate after warmup (a run of stage 3 alone starts at its tenth)."""
        return self.stages[0].learning_rate if self.staged else self.initial_learning_rate

    def learning_rate_drops(self) -> list[tuple[int, float]]:
        """(global step, new learning rate) for each change of the rate after the start."""
        if not self.staged:
            schedule = [
                (self.schedule_step_1, self.schedule_lr_1),
                (self.schedule_step_2, self.schedule_lr_2),
            ]
            return [(step, rate) for step, rate in schedule if step is not None]
        changes = zip(self.stages, self.stages[1:])
        return [
            (new.first_step, new.learning_rate)
            for old, new in changes
            if new.learning_rate != old.learning_rate
        ]

    def stage_at(self, step: int) -> TrainingStage | None:
        """The stage that global `step` belongs to (the last one at or past the end)."""
        return stage_at(self.stages, step)

    def to_dict(self) -> dict[str, Any]:
        """Every value, for artifact metadata and logs."""
        return asdict(self)


# --- the keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One user-facing key: how to read its value and the range it must be in."""

    name: str
    read: Callable[[str, Any], Any]
    check: Callable[[Any], bool] = lambda value: True
    expected: str = ""


def read_int(key: str, value: Any) -> int:
    number = _number(value)
    if number is None or not float(number).is_integer():
        raise HyperparameterError(f"{key} must be a whole number, got {value!r}")
    return int(number)


def read_float(key: str, value: Any) -> float:
    number = _number(value)
    if number is None:
        raise HyperparameterError(f"{key} must be a number, got {value!r}")
    return float(number)


def read_mapping(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise HyperparameterError(
            f"{key} must be a mapping of Model Garden config keys, e.g. "
            f"{{task: {{model: {{anchor: {{num_scales: 4}}}}}}}}, got {value!r}"
        )
    return expand_dotted_keys(value, key)


def _number(value: Any) -> int | float | None:
    """A finite number from an int, a float or numeric text (YAML 1.1 reads `1e-4` as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


def at_least(minimum):
    return lambda value: value >= minimum


def learning_rate(value) -> bool:
    return 0 < value <= 1


COMMON_KEYS = [
    Key("num_steps", read_int, at_least(1), "at least 1"),
    Key("batch_size", read_int, at_least(1), "at least 1"),
    Key("initial_learning_rate", read_float, learning_rate, "above 0 and at most 1"),
    Key("num_clones", read_int, at_least(0), "a GPU count, at least 0 (0 trains on CPU)"),
    Key("warmup_steps", read_int, at_least(0), "at least 0"),
    Key("warmup_learning_rate", read_float, lambda v: 0 <= v <= 1, "from 0 to 1"),
    Key("image_size", read_int),  # checked against the preset in _check_image_size
    Key("checkpoint_interval", read_int, at_least(1), "at least 1 step"),
    Key("eval_interval", read_int, at_least(1), "at least 1 step"),
    Key("seed", read_int, at_least(0), "at least 0"),
    Key("model_garden_overrides", read_mapping),
]
SCHEDULE_KEYS = [
    Key("schedule_step_1", read_int, at_least(1), "at least 1"),
    Key("schedule_lr_1", read_float, learning_rate, "above 0 and at most 1"),
    Key("schedule_step_2", read_int, at_least(1), "at least 1"),
    Key("schedule_lr_2", read_float, learning_rate, "above 0 and at most 1"),
]
STAGE_KEYS = [
    Key(f"stage_{n}_epochs", read_int, at_least(0), "at least 0 (0 skips the stage)")
    for n in (1, 2, 3)
]


def keys_for(preset: Preset) -> dict[str, Key]:
    """The keys a preset accepts: the common ones plus the schedule or the stage keys."""
    extra = STAGE_KEYS if preset.include_mask else SCHEDULE_KEYS
    return {key.name: key for key in COMMON_KEYS + extra}


# --- parsing --------------------------------------------------------------------------------


def parse_hyperparameters(
    source: str | Mapping[str, Any] | None, preset: Preset | str
) -> Hyperparameters:
    """Read YAML text (or an already parsed mapping) into complete Hyperparameters for `preset`.

    Raises HyperparameterError on invalid YAML (with line and column), an unknown key (listing
    the valid ones), a wrong type or an out-of-range value (naming the key and the range).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    given = normalize_keys(load_mapping(source), preset)
    keys = keys_for(preset)
    values = {name: keys[name].read(name, value) for name, value in given.items()}
    for name, value in values.items():
        key = keys[name]
        if not key.check(value):
            raise HyperparameterError(f"{name} must be {key.expected}, got {given[name]!r}")
    return complete(values, preset)


def load_mapping(source: str | Mapping[str, Any] | None) -> dict[Any, Any]:
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, str):
        raise HyperparameterError(f"hyperparameters must be YAML text, got {type(source).__name__}")
    key_values = read_key_value_lines(source)
    if key_values is not None:
        return key_values
    try:
        loaded = yaml.load(source, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise HyperparameterError(f"hyperparameters are not valid YAML: {_describe(e)}") from None
    if loaded is None:
        return {}
    if isinstance(loaded, Mapping):
        return dict(loaded)
    raise HyperparameterError(
        f"hyperparameters must be `key: value` lines (YAML), got {source.strip()[:60]!r}"
    )


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice is an error (PyYAML keeps the last)
    and an alias (`*name`) is refused: each one repeats a whole node, so ten lines of aliases
    of aliases expand to billions of values (a "billion laughs" document)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise HyperparameterError(
                f"hyperparameters use the YAML alias *{event.anchor} (line "
                f"{event.start_mark.line + 1}): aliases and anchors are not accepted, as each "
                "alias repeats a whole section and a few of them can expand to billions of "
                "values. Write the values out instead."
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise HyperparameterError(f"{key!r} is given twice (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _describe(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error)
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def read_key_value_lines(text: str) -> dict[str, Any] | None:
    """Onepanel's older `key=value` lines (values read as YAML scalars), else None."""
    pairs: dict[str, Any] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = KEY_VALUE_LINE.fullmatch(line)
        if not match:
            return None
        key, value = match.group(1), match.group(2).strip()
        if key in pairs:
            raise HyperparameterError(f"{key!r} is given twice")
        try:
            pairs[key] = yaml.load(value, Loader=UniqueKeyLoader) if value else None
        except yaml.YAMLError:
            pairs[key] = value
    return pairs or None


def normalize_keys(given: Mapping[Any, Any], preset: Preset) -> dict[str, Any]:
    """Keys as canonical names (dashes to underscores, aliases resolved); None values dropped."""
    valid = keys_for(preset)
    normalized: dict[str, Any] = {}
    originals: dict[str, str] = {}
    for raw_key, value in given.items():
        name = canonical_name(raw_key)
        if name not in valid:
            raise HyperparameterError(unknown_key_message(raw_key, name, preset))
        if name in originals:
            raise HyperparameterError(
                f"{name} is given twice (as {originals[name]!r} and {raw_key!r})"
            )
        originals[name] = str(raw_key)
        if value is not None:  # `key:` with no value means the default
            normalized[name] = value
    return normalized


def canonical_name(raw_key: Any) -> str:
    name = str(raw_key).strip().lower().replace("-", "_")
    return ALIASES.get(name, name)


def unknown_key_message(raw_key: Any, name: str, preset: Preset) -> str:
    valid = keys_for(preset)
    other = SCHEDULE_KEYS if preset.include_mask else STAGE_KEYS
    if name in {key.name for key in other}:
        what = "Mask R-CNN presets" if not preset.include_mask else "detection presets"
        why = (
            "its learning rate follows the stages (stage 3 at a tenth)"
            if preset.include_mask
            else "it trains in one stage"
        )
        return (
            f"{raw_key!r} is only for {what}; preset {preset.name!r} does not take it: {why}. "
            f"Valid keys: {', '.join(valid)}"
        )
    hint = ONEPANEL_HINTS.get(name)
    if hint is None:
        close = difflib.get_close_matches(name, list(valid) + list(ALIASES), n=1, cutoff=0.6)
        hint = f"did you mean {ALIASES.get(close[0], close[0])!r}?" if close else None
    return (
        f"unknown hyperparameter {raw_key!r}{f' ({hint})' if hint else ''}. "
        f"Valid keys for preset {preset.name!r}: {', '.join(valid)}"
    )


# --- defaults and the checks that involve several keys --------------------------------------


def complete(values: dict[str, Any], preset: Preset) -> Hyperparameters:
    """Fill in the preset's defaults, then check what only the whole set can tell."""
    merged = {"image_size": preset.image_size, **preset.defaults, **values}
    merged.setdefault("warmup_learning_rate", 0.0)
    merged["model_garden_overrides"] = copy.deepcopy(merged.get("model_garden_overrides", {}))
    _check_image_size(merged["image_size"], preset)
    if preset.include_mask:
        merged.setdefault("eval_interval", merged["num_steps"])  # once per epoch
        _check_stages(merged)
    else:
        _fill_schedule(merged)
    draft = Hyperparameters(**merged)
    return replace(
        draft,
        warmup_steps=_warmup_steps(draft, values.get("warmup_steps"), preset),
        checkpoint_interval=min(draft.checkpoint_interval, draft.total_steps),
        eval_interval=min(draft.eval_interval, draft.total_steps),
    )


def _check_image_size(size: int, preset: Preset) -> None:
    multiple = preset.size_multiple
    if size % multiple or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        suggestion = max(MIN_IMAGE_SIZE, min(MAX_IMAGE_SIZE, round(size / multiple) * multiple))
        raise HyperparameterError(
            f"image_size must be a multiple of {multiple} from {MIN_IMAGE_SIZE} to "
            f"{MAX_IMAGE_SIZE} for preset {preset.name!r} (its feature pyramid halves the image "
            f"down to 1/{multiple}), got {size}; try {suggestion}"
        )


def _check_stages(merged: dict[str, Any]) -> None:
    epochs = [merged[f"stage_{n}_epochs"] for n in (1, 2, 3)]
    if sum(epochs) == 0:
        raise HyperparameterError(
            "stage_1_epochs, stage_2_epochs and stage_3_epochs are all 0: nothing to train. "
            "Give at least one stage an epoch"
        )


def _fill_schedule(merged: dict[str, Any]) -> None:
    """Check the two learning-rate steps and default each rate to a tenth of the one before."""
    step_1, step_2 = merged.get("schedule_step_1"), merged.get("schedule_step_2")
    num_steps = merged["num_steps"]
    for n, step in ((1, step_1), (2, step_2)):
        if step is None and merged.get(f"schedule_lr_{n}") is not None:
            raise HyperparameterError(
                f"schedule_lr_{n} needs schedule_step_{n}: the step at which it takes over"
            )
    if step_2 is not None and step_1 is None:
        raise HyperparameterError("schedule_step_2 needs schedule_step_1 before it")
    if step_1 is not None and step_2 is not None and not step_1 < step_2:
        raise HyperparameterError(
            f"schedule_step_1 must come before schedule_step_2, got {step_1} and {step_2}"
        )
    for n, step in ((1, step_1), (2, step_2)):
        if step is not None and step > num_steps:
            raise HyperparameterError(
                f"schedule_step_{n} must be at most num_steps ({num_steps}), got {step}: a later "
                "step never takes effect (Onepanel's defaults of 900000 and 1200000 did not). "
                "Leave the schedule steps out for a cosine decay over the run"
            )
    previous = merged["initial_learning_rate"]
    for n, step in ((1, step_1), (2, step_2)):
        if step is not None:
            merged.setdefault(f"schedule_lr_{n}", previous / 10)
            previous = merged[f"schedule_lr_{n}"]


def _warmup_steps(hp: Hyperparameters, given: int | None, preset: Preset) -> int:
    """The user's warmup, checked; else the preset's, shortened to fit a short run."""
    drops = hp.learning_rate_drops()
    limit = drops[0][0] if drops else hp.total_steps
    if given is None:
        default = preset.defaults.get("warmup_steps", 0)
        return min(default, hp.total_steps // SHORT_RUN_WARMUP_FRACTION, limit)
    if given >= hp.total_steps:
        raise HyperparameterError(
            f"warmup_steps must be smaller than the run's {hp.total_steps} steps, got {given}"
        )
    if given > limit:
        raise HyperparameterError(
            f"warmup_steps must end by the first learning-rate drop (step {limit}), got {given}"
        )
    return given


# --- model_garden_overrides -----------------------------------------------------------------


def expand_dotted_keys(mapping: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """`{"a.b": 1}` as `{"a": {"b": 1}}`, recursively; keys must be text."""
    expanded: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key.strip():
            raise HyperparameterError(f"{where}: keys must be Model Garden names, got {key!r}")
        if isinstance(value, Mapping):
            value = expand_dotted_keys(value, f"{where}.{key}")
        *parents, leaf = key.strip().split(".")
        node = expanded
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HyperparameterError(f"{where}: {key!r} conflicts with another entry")
        if leaf in node:
            node[leaf] = _merge(node[leaf], value, f"{where}: {key!r}")
        else:
            node[leaf] = value
    return expanded


def _merge(base: Any, extra: Any, what: str) -> dict[str, Any]:
    """Two sections given for one key, merged; the same setting given twice is an error."""
    if not (isinstance(base, dict) and isinstance(extra, dict)):
        raise HyperparameterError(f"{what} is given twice")
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value, what) if key in merged else value
    return merged
