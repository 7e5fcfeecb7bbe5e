"""Per-class score thresholds: the table evaluate-model calibrates, as an exported model carries it.

evaluate-model writes the table (thresholds.json; how it is chosen: evaluate_model/thresholds.py),
export-model copies it into export.json under "score_thresholds" and into the model card, and
whatever runs the exported model (preannotate, the CVAT function) asks `score_thresholds` for it
when the user gives no threshold of their own. A class the table does not calibrate (no
validation objects, ...) keeps DEFAULT_SCORE_THRESHOLD; the table says why.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..common.report import markdown_cell

DEFAULT_SCORE_THRESHOLD = 0.5
# A score_threshold argument meaning "not given: the model's calibrated per-class thresholds".
MODEL_THRESHOLDS = -1.0
EXPORT_KEY = "score_thresholds"  # in export.json
THRESHOLDS_FILE = "thresholds.json"  # in evaluate-model's evaluation output
EXPORT_METADATA_FILE = "export.json"  # inference.predictor's, repeated to avoid importing TF


class ThresholdsError(ValueError):
    """A thresholds table that cannot be used: says which file and what is wrong."""


def check_thresholds(table, where: str) -> None:
    """A table has a 'classes' list, each with a name and a threshold in [0, 1]."""
    if not isinstance(table, dict) or not isinstance(table.get("classes"), list):
        raise ThresholdsError(
            f"{where}: expected an object with a 'classes' list (evaluate-model's "
            "thresholds.json); re-run evaluate-model with val_tfrecords to make one"
        )
    for index, row in enumerate(table["classes"]):
        if not (isinstance(row, dict) and isinstance(row.get("name"), str)
                and _is_score(row.get("threshold"))):  # fmt: skip
            raise ThresholdsError(
                f"{where}: class entry {index} ({row!r:.120}) needs a 'name' and a 'threshold' "
                "between 0 and 1"
            )


def _is_score(value) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


def read_thresholds(path: str | os.PathLike) -> dict:
    """A thresholds.json, checked."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdsError(
            f"{path}: no such file; give the evaluation output of evaluate-model"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ThresholdsError(f"{path} is not a readable JSON file: {error}") from None
    check_thresholds(table, str(path))
    return table


def evaluation_thresholds(evaluation_dir: str | os.PathLike, class_names: Iterable[str]) -> dict:
    """The thresholds.json of an evaluation output, checked to be for these classes."""
    path = Path(evaluation_dir) / THRESHOLDS_FILE
    table = read_thresholds(path)
    theirs, ours = [row["name"] for row in table["classes"]], list(class_names)
    if theirs != ours:
        raise ThresholdsError(
            f"{path} holds thresholds for the classes {theirs}, the model has {ours}: give the "
            "evaluation of this model"
        )
    return table


def thresholds_by_name(table: dict) -> dict[str, float]:
    return {row["name"]: float(row["threshold"]) for row in table["classes"]}


def score_thresholds(model_dir: str | os.PathLike) -> dict[str, float]:
    """The per-class score thresholds an exported model carries (export.json), label name →
    threshold; {} for a model without them (a trained Model, or exported without evaluation)."""
    path = Path(model_dir) / EXPORT_METADATA_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ThresholdsError(f"{path} is not a readable JSON file: {error}") from None
    table = info.get(EXPORT_KEY) if isinstance(info, dict) else None
    if table is None:
        return {}
    check_thresholds(table, f"{path} ({EXPORT_KEY})")
    return thresholds_by_name(table)


@dataclass(frozen=True)
class ScoreThresholds:
    """The score threshold of each label, and where it comes from, for messages and reports."""

    by_label: dict[str, float]
    source: str  # "given", "calibrated" (the model's), "default" (the model has none)
    defaulted: tuple[str, ...] = field(default=())  # labels at the default: the model had none

    def of(self, label: str) -> float:
        return self.by_label.get(label, DEFAULT_SCORE_THRESHOLD)

    def describe(self) -> str:
        if self.source == "given":
            return f"{next(iter(self.by_label.values()), DEFAULT_SCORE_THRESHOLD):g} (given)"
        if self.source == "default":
            return (
                f"{DEFAULT_SCORE_THRESHOLD:g} (default: the model carries no calibrated "
                "thresholds; export it with evaluate-model's evaluation to have them)"
            )
        parts = [f"{label} {value:.3f}" for label, value in self.by_label.items()]
        text = "per class, calibrated on the validation split: " + ", ".join(parts)
        if self.defaulted:
            text += f" ({', '.join(self.defaulted)}: default {DEFAULT_SCORE_THRESHOLD:g})"
        return text


def resolve_score_thresholds(
    model_dir: str | os.PathLike, labels: Iterable[str], score_threshold: float
) -> ScoreThresholds:
    """Each label's threshold: `score_threshold` for all when given (0..1); with
    MODEL_THRESHOLDS, the model's calibrated ones, DEFAULT_SCORE_THRESHOLD where it has none."""
    labels = list(labels)
    if score_threshold != MODEL_THRESHOLDS:
        if not 0.0 <= score_threshold <= 1.0:
            raise ThresholdsError(
                f"score_threshold must be in [0, 1], or {MODEL_THRESHOLDS:g} for the model's "
                f"calibrated per-class thresholds; got {score_threshold}"
            )
        return ScoreThresholds(dict.fromkeys(labels, float(score_threshold)), "given")
    calibrated = score_thresholds(model_dir)
    if not calibrated:
        return ScoreThresholds(dict.fromkeys(labels, DEFAULT_SCORE_THRESHOLD), "default")
    missing = tuple(label for label in labels if label not in calibrated)
    by_label = {label: calibrated.get(label, DEFAULT_SCORE_THRESHOLD) for label in labels}
    return ScoreThresholds(by_label, "calibrated", missing)


def thresholds_markdown(table: dict) -> str:
    """A table a reader can check: class, threshold, how it was chosen, P/R/F1 on val."""
    lines = [
        "| class | score threshold | chosen | val objects | precision | recall | F1 |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in table["classes"]:
        if row.get("calibrated"):
            how = f"highest F1 on {table.get('split') or 'val'}"
            stats = [f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}"]
        else:
            how = markdown_cell(row.get("reason", "default"))
            stats = ["", "", ""]
        lines.append(
            f"| {markdown_cell(row['name'])} | {row['threshold']:.3f} | {how} | "
            f"{row.get('val_objects', '')} | " + " | ".join(stats) + " |"
        )
    return "\n".join(lines) + "\n"
