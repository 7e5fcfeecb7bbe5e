"""The score thresholds an exported model carries, and what a user's threshold overrides."""

import json

import pytest

from cvat_kfp.components.inference.thresholds import (
    MODEL_THRESHOLDS,
    ThresholdsError,
    resolve_score_thresholds,
    score_thresholds,
)

TABLE = {
    "default_threshold": 0.5,
    "split": "val",
    "classes": [
        {"id": 1, "name": "circle", "threshold": 0.31, "calibrated": True},
        {"id": 2, "name": "square", "threshold": 0.5, "calibrated": False,
         "reason": "default: no validation objects"},
    ],
}  # fmt: skip


def exported(tmp_path, info):
    (tmp_path / "export.json").write_text(json.dumps(info))
    return tmp_path


def test_an_exported_model_gives_its_thresholds_by_label(tmp_path):
    model = exported(tmp_path, {"preset": "x", "score_thresholds": TABLE})
    assert score_thresholds(model) == {"circle": 0.31, "square": 0.5}


def test_a_model_without_thresholds_gives_none(tmp_path):
    assert score_thresholds(tmp_path) == {}  # a trained Model: no export.json
    assert score_thresholds(exported(tmp_path, {"preset": "x"})) == {}


def test_a_broken_table_is_named(tmp_path):
    model = exported(tmp_path, {"score_thresholds": {"classes": [{"name": "a"}]}})
    with pytest.raises(ThresholdsError, match=r"export.json \(score_thresholds\): class entry 0"):
        score_thresholds(model)
    (tmp_path / "export.json").write_text("{")
    with pytest.raises(ThresholdsError, match="export.json is not a readable JSON file"):
        score_thresholds(model)


def test_not_given_means_the_models_calibrated_thresholds(tmp_path):
    model = exported(tmp_path, {"score_thresholds": TABLE})
    found = resolve_score_thresholds(model, ["circle", "square", "star"], MODEL_THRESHOLDS)
    assert found.source == "calibrated"
    assert found.by_label == {"circle": 0.31, "square": 0.5, "star": 0.5}
    assert found.defaulted == ("star",)
    assert "circle 0.310" in found.describe() and "star: default 0.5" in found.describe()


def test_a_given_threshold_wins_and_no_table_means_the_default(tmp_path):
    model = exported(tmp_path, {"score_thresholds": TABLE})
    given = resolve_score_thresholds(model, ["circle", "square"], 0.7)
    assert given.by_label == {"circle": 0.7, "square": 0.7} and given.source == "given"
    bare = resolve_score_thresholds(tmp_path / "trained", ["circle"], MODEL_THRESHOLDS)
    assert bare.by_label == {"circle": 0.5} and bare.source == "default"
    assert "carries no calibrated thresholds" in bare.describe()
    with pytest.raises(ThresholdsError, match=r"in \[0, 1\], or -1 for the model's calibrated"):
        resolve_score_thresholds(model, ["circle"], 1.5)
