"""The rules file: which CVAT project or task trains which pipeline, with what, and when.

```yaml
experiment: cvat-kfp                 # optional: the KFP experiment of every run
reconcile_interval_s: 300            # optional: how often the watched projects are re-read
rules:
  - project: 7                       # every task of CVAT project 7 ...
    scope: task                      # ... trains on its own when its jobs are done (default);
                                     #     `project`: once every task of the project is done
    when: completed                  # every annotation job `completed` (default), or `acceptance`:
                                     #     every job in the acceptance stage (or completed)
    pipeline: tfod_training          # or maskrcnn_training
    preset: retinanet-mobilenetv2-light
    hyperparameters: {num_steps: 2000}
    checkpoint_root: gs://bucket/checkpoints
    preannotate: next-unannotated    # the project's first task with no annotations; or a task id
    parameters: {gpu_count: 1}       # any other pipeline parameter
  - task: 12                         # a task rule wins over its project's rule
    pipeline: maskrcnn_training
```

Everything is checked when the file loads: an unknown key lists the valid ones, and the pipeline
parameters are checked against the pipeline, so a mistake surfaces at start, not at submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cvat_kfp.pipelines import parameters

TOP_KEYS = ("experiment", "reconcile_interval_s", "rules")
RULE_KEYS = (
    "project",
    "task",
    "scope",
    "when",
    "pipeline",
    "preset",
    "hyperparameters",
    "checkpoint_root",
    "preannotate",
    "parameters",
    "experiment",
)
SCOPES = ("task", "project")
WHEN = ("completed", "acceptance")
TRAINING_PIPELINES = ("tfod_training", "maskrcnn_training")
NEXT_UNANNOTATED = "next-unannotated"
# What the service fills in itself, from the CVAT event: a rule may not set them.
FILLED_BY_SERVICE = ("cvat_url", "task_ids", "project_ids", "job_ids", "source")
DEFAULT_RECONCILE_INTERVAL_S = 300.0


class RulesError(ValueError):
    """The rules file cannot be used; the message names the file, the rule and what to fix."""


@dataclass(frozen=True)
class Rule:
    project_id: int | None
    task_id: int | None
    scope: str
    when: str
    pipeline: str
    experiment: str
    preannotate: str | int | None  # NEXT_UNANNOTATED, a task id, or None
    arguments: dict[str, Any] = field(default_factory=dict)  # checked pipeline arguments

    @property
    def target(self) -> str:
        return f"task {self.task_id}" if self.task_id is not None else f"project {self.project_id}"


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    experiment: str = "cvat-kfp"
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    source: str = ""

    def for_task(self, task_id: int, project_id: int | None) -> Rule | None:
        """The task's own rule, else its project's, else None."""
        for rule in self.rules:
            if rule.task_id == task_id:
                return rule
        if project_id is None:
            return None
        for rule in self.rules:
            if rule.project_id == project_id and rule.task_id is None:
                return rule
        return None

    @property
    def watched_projects(self) -> list[int]:
        return sorted({r.project_id for r in self.rules if r.project_id is not None})

    @property
    def watched_tasks(self) -> list[int]:
        return sorted({r.task_id for r in self.rules if r.task_id is not None})


def load_rules(path: str | Path) -> Rules:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RulesError(f"cannot read the rules file {path}: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RulesError(f"{path} is not valid YAML: {error}") from None
    return parse_rules(document, str(path))


def parse_rules(document: Any, source: str = "the rules") -> Rules:
    if not isinstance(document, Mapping):
        raise RulesError(f"{source}: expected a mapping with a `rules:` list, got {document!r}")
    _check_keys(document, TOP_KEYS, source)
    experiment = document.get("experiment", "cvat-kfp")
    if not isinstance(experiment, str) or not experiment.strip():
        raise RulesError(f"{source}: `experiment` must be a non-empty string")
    interval = document.get("reconcile_interval_s", DEFAULT_RECONCILE_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise RulesError(f"{source}: `reconcile_interval_s` must be a positive number of seconds")
    entries = document.get("rules")
    if not isinstance(entries, list) or not entries:
        raise RulesError(f"{source}: `rules` must be a non-empty list of rules")
    rules = [
        _parse_rule(entry, f"{source}, rule {i + 1}", experiment) for i, entry in enumerate(entries)
    ]
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.target in seen:
            raise RulesError(
                f"{source}: rules {seen[rule.target] + 1} and {i + 1} are both for {rule.target}; "
                "keep one"
            )
        seen[rule.target] = i
    return Rules(tuple(rules), experiment, float(interval), source)


def _check_keys(mapping: Mapping, valid: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in mapping if k not in valid]
    if unknown:
        raise RulesError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the valid keys are: {', '.join(valid)}"
        )


def _positive_id(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RulesError(
            f"{where}: `{what}` must be a CVAT {what} id (a positive integer), got {value!r}"
        )
    return value


def _parse_rule(entry: Any, where: str, default_experiment: str) -> Rule:
    if not isinstance(entry, Mapping):
        raise RulesError(f"{where}: expected a mapping, got {entry!r}")
    _check_keys(entry, RULE_KEYS, where)
    if ("project" in entry) == ("task" in entry):
        raise RulesError(f"{where}: give exactly one of `project: ID` or `task: ID`")
    project_id = _positive_id(entry["project"], "project", where) if "project" in entry else None
    task_id = _positive_id(entry["task"], "task", where) if "task" in entry else None

    scope = entry.get("scope", "task")
    if scope not in SCOPES:
        raise RulesError(f"{where}: `scope` must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "project" and task_id is not None:
        raise RulesError(f"{where}: `scope: project` needs `project: ID`, not `task:`")
    when = entry.get("when", "completed")
    if when not in WHEN:
        raise RulesError(f"{where}: `when` must be one of {', '.join(WHEN)}, got {when!r}")

    pipeline = entry.get("pipeline")
    if pipeline not in TRAINING_PIPELINES:
        raise RulesError(
            f"{where}: `pipeline` must be one of {', '.join(TRAINING_PIPELINES)}, got {pipeline!r}"
        )
    experiment = entry.get("experiment", default_experiment)
    if not isinstance(experiment, str) or not experiment.strip():
        raise RulesError(f"{where}: `experiment` must be a non-empty string")

    preannotate = entry.get("preannotate")
    if preannotate is not None and preannotate != NEXT_UNANNOTATED:
        if isinstance(preannotate, str) and preannotate.strip().isdigit():
            preannotate = int(preannotate)
        if isinstance(preannotate, bool) or not isinstance(preannotate, int) or preannotate <= 0:
            raise RulesError(
                f"{where}: `preannotate` must be {NEXT_UNANNOTATED!r} (the project's first task "
                f"without annotations) or a CVAT task id, got {preannotate!r}"
            )
    if preannotate == NEXT_UNANNOTATED and project_id is None:
        raise RulesError(f"{where}: `preannotate: {NEXT_UNANNOTATED}` needs a `project:` rule")

    arguments = dict(entry.get("parameters") or {})
    if not isinstance(entry.get("parameters") or {}, Mapping):
        raise RulesError(f"{where}: `parameters` must be a mapping of pipeline parameters")
    for name in ("preset", "checkpoint_root"):
        if name in entry:
            if name in arguments:
                raise RulesError(f"{where}: `{name}` is given twice (also under `parameters`)")
            arguments[name] = entry[name]
    if "hyperparameters" in entry:
        hyperparameters = entry["hyperparameters"]
        if "hyperparameters" in arguments:
            raise RulesError(f"{where}: `hyperparameters` is given twice (also under `parameters`)")
        if isinstance(hyperparameters, Mapping):
            # The pipeline takes them as YAML text, one `key: value` per line.
            hyperparameters = yaml.safe_dump(dict(hyperparameters), sort_keys=False).strip()
        elif not isinstance(hyperparameters, str):
            raise RulesError(f"{where}: `hyperparameters` must be a mapping (key: value)")
        arguments["hyperparameters"] = hyperparameters
    reserved = [name for name in FILLED_BY_SERVICE if name in arguments]
    if reserved:
        raise RulesError(
            f"{where}: {', '.join(reserved)} are set by the service from the CVAT event and "
            "its --cvat-url; remove them from the rule"
        )
    if preannotate is not None and "preannotate_task_id" in arguments:
        raise RulesError(
            f"{where}: give `preannotate:` or parameters.preannotate_task_id, not both"
        )
    try:
        checked = parameters.check_arguments(pipeline, arguments)
    except parameters.ParameterError as error:
        raise RulesError(f"{where}: {error}") from None
    _check_training(pipeline, checked, where)
    return Rule(project_id, task_id, scope, when, pipeline, experiment, preannotate, checked)


def _check_training(pipeline: str, arguments: dict[str, Any], where: str) -> None:
    """The preset fits the pipeline and the hyperparameters fit the preset, as training will
    check them: better refused at start than failing hours later in the training pod."""
    from cvat_kfp.components.training.hyperparameters import (
        HyperparameterError,
        parse_hyperparameters,
    )
    from cvat_kfp.components.training.presets import get_preset

    defaults = parameters.pipeline_parameters(pipeline)
    preset_name = arguments.get("preset", defaults["preset"].default)
    try:
        preset = get_preset(preset_name)
    except Exception as error:  # PresetError: lists the presets
        raise RulesError(f"{where}: {error}") from None
    if preset.include_mask != (pipeline == "maskrcnn_training"):
        kind = "a Mask R-CNN" if preset.include_mask else "a box detector"
        raise RulesError(
            f"{where}: preset {preset_name!r} is {kind}, not for {pipeline}; "
            f"{pipeline}'s presets: {defaults['preset'].description}"
        )
    try:
        parse_hyperparameters(arguments.get("hyperparameters") or None, preset)
    except HyperparameterError as error:
        raise RulesError(f"{where}: {error}") from None
