"""Hyperparameters: Onepanel's keys in YAML (or key=value lines), defaults, every error message."""

import time

import pytest

from cvat_kfp.components.training.hyperparameters import (
    HyperparameterError,
    TrainingStage,
    parse_hyperparameters,
)
from cvat_kfp.components.training.presets import PRESETS, get_preset

DETECTOR = "frcnn-res50-coco"
RETINANET = "ssd-mobilenet-v2-coco"
MASKRCNN = "maskrcnn"


def error_for(text, preset=DETECTOR) -> str:
    with pytest.raises(HyperparameterError) as error:
        parse_hyperparameters(text, preset)
    return str(error.value)


# --- defaults -------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", "  \n# nothing\n", {}])
def test_nothing_is_required(empty):
    hp = parse_hyperparameters(empty, DETECTOR)
    preset = get_preset(DETECTOR)
    assert hp.num_steps == preset.defaults["num_steps"] == 10000
    assert hp.batch_size == preset.defaults["batch_size"]
    assert hp.initial_learning_rate == preset.defaults["initial_learning_rate"]
    assert hp.image_size == preset.image_size
    assert hp.num_clones is None and hp.seed == 0 and hp.model_garden_overrides == {}
    assert hp.schedule_step_1 is None and not hp.staged and hp.stages == ()


@pytest.mark.parametrize("preset", PRESETS.values(), ids=lambda p: p.name)
def test_every_preset_has_valid_defaults(preset):
    hp = parse_hyperparameters(None, preset)
    assert hp.staged == preset.include_mask
    assert hp.image_size == preset.image_size
    assert 0 < hp.checkpoint_interval <= hp.total_steps
    assert 0 < hp.eval_interval <= hp.total_steps
    assert hp.warmup_steps < hp.total_steps


def test_preset_can_be_given_by_name_or_object():
    assert parse_hyperparameters(None, RETINANET) == parse_hyperparameters(
        None, get_preset(RETINANET)
    )


# --- reading --------------------------------------------------------------------------------


def test_yaml_keys_override_defaults():
    hp = parse_hyperparameters(
        "num_steps: 200\nbatch_size: 2\ninitial_learning_rate: 0.01\nimage_size: 512\n"
        "num_clones: 2\nseed: 7\nwarmup_steps: 5\nwarmup_learning_rate: 0.001\n",
        DETECTOR,
    )
    assert (hp.num_steps, hp.batch_size, hp.initial_learning_rate) == (200, 2, 0.01)
    assert (hp.image_size, hp.num_clones, hp.seed) == (512, 2, 7)
    assert (hp.warmup_steps, hp.warmup_learning_rate) == (5, 0.001)


def test_dashes_case_and_the_learning_rate_alias_are_accepted():
    hp = parse_hyperparameters("Num-Steps: 300\nlearning_rate: 0.02\nbatch-size: 3", DETECTOR)
    assert (hp.num_steps, hp.initial_learning_rate, hp.batch_size) == (300, 0.02, 3)


def test_onepanel_key_value_lines_are_accepted():
    hp = parse_hyperparameters(
        "num-steps=100\ninitial-learning-rate=0.0003  # as in Onepanel's docs\n\nnum_clones=1",
        DETECTOR,
    )
    assert (hp.num_steps, hp.initial_learning_rate, hp.num_clones) == (100, 0.0003, 1)


def test_mapping_input_and_numbers_written_as_text():
    # YAML 1.1 reads 1e-4 (no dot) as text; it is still a number to the user
    hp = parse_hyperparameters({"initial_learning_rate": "1e-4", "num_steps": 2e3}, DETECTOR)
    assert (hp.initial_learning_rate, hp.num_steps) == (0.0001, 2000)


def test_a_key_without_value_means_its_default():
    hp = parse_hyperparameters("batch_size:\nnum_steps: 50", DETECTOR)
    assert hp.batch_size == get_preset(DETECTOR).defaults["batch_size"]


# --- errors ---------------------------------------------------------------------------------


def test_unknown_key_lists_the_valid_keys_and_suggests_one():
    message = error_for("num_step: 100")
    assert "unknown hyperparameter 'num_step'" in message
    assert "did you mean 'num_steps'?" in message
    for key in ("num_steps", "batch_size", "schedule_lr_2", "model_garden_overrides"):
        assert key in message


def test_onepanel_keys_we_do_not_take_say_what_to_use():
    assert "use image_size" in error_for("image_height: 300", RETINANET)
    assert "trainer.optimizer_config.optimizer.sgd.momentum" in error_for(
        "momentum_optimizer_value: 0.9"
    )


def test_stage_and_schedule_keys_belong_to_their_presets():
    message = error_for("stage_1_epochs: 2", DETECTOR)
    assert "only for Mask R-CNN presets" in message and DETECTOR in message
    message = error_for("schedule_step_1: 10", MASKRCNN)
    assert "only for detection presets" in message and "stage_1_epochs" in message


@pytest.mark.parametrize(
    "text, words",
    [
        ("batch_size: 0", ["batch_size", "at least 1", "got 0"]),
        ("batch_size: two", ["batch_size", "whole number", "'two'"]),
        ("batch_size: 2.5", ["batch_size", "whole number", "2.5"]),
        ("batch_size: true", ["batch_size", "whole number", "True"]),
        ("num_steps: -5", ["num_steps", "at least 1", "-5"]),
        ("initial_learning_rate: 0", ["initial_learning_rate", "above 0", "got 0"]),
        ("initial_learning_rate: 3", ["initial_learning_rate", "at most 1", "got 3"]),
        ("initial_learning_rate: fast", ["initial_learning_rate", "a number", "'fast'"]),
        ("initial_learning_rate: .nan", ["initial_learning_rate", "a number"]),
        ("num_clones: -1", ["num_clones", "GPU count", "-1"]),
        ("warmup_learning_rate: -0.1", ["warmup_learning_rate", "from 0 to 1"]),
        ("checkpoint_interval: 0", ["checkpoint_interval", "at least 1"]),
        ("eval_interval: 0", ["eval_interval", "at least 1"]),
        ("seed: -3", ["seed", "at least 0"]),
        ("model_garden_overrides: 3", ["model_garden_overrides", "mapping"]),
        ("image_size: 300", ["image_size", "multiple of 64", "got 300", "try 320"]),
        ("image_size: 64", ["image_size", "from 128 to 2048", "got 64"]),
        ("image_size: 4096", ["image_size", "from 128 to 2048", "try 2048"]),
    ],
)
def test_wrong_type_or_range_names_key_value_and_expectation(text, words):
    message = error_for(text)
    assert all(word in message for word in words), message


def test_image_size_multiple_follows_the_preset_pyramid():
    assert "multiple of 128" in error_for("image_size: 320", RETINANET)
    assert parse_hyperparameters("image_size: 320", DETECTOR).image_size == 320


def test_invalid_yaml_says_where():
    message = error_for("num_steps: 100\nbatch_size: [2\n")
    assert "not valid YAML" in message and "line 3" in message and "column" in message


def test_text_that_is_not_key_value_lines():
    assert "`key: value` lines" in error_for("train it well please")


def test_a_key_given_twice_is_an_error():
    assert "'num_steps' is given twice (line 2)" in error_for("num_steps: 1\nnum_steps: 2")
    assert "given twice (as 'num_steps' and 'num-steps')" in error_for("num_steps: 1\nnum-steps: 2")


# --- learning-rate schedule ------------------------------------------------------------------


def test_schedule_rates_default_to_a_tenth_of_the_one_before():
    hp = parse_hyperparameters(
        "num_steps: 1000\ninitial_learning_rate: 0.01\nschedule_step_1: 600\nschedule_step_2: 900",
        DETECTOR,
    )
    assert (hp.schedule_step_1, hp.schedule_step_2) == (600, 900)
    assert hp.schedule_lr_1 == pytest.approx(0.001) and hp.schedule_lr_2 == pytest.approx(0.0001)


@pytest.mark.parametrize(
    "text, words",
    [
        ("schedule_step_1: 20000", ["schedule_step_1", "at most num_steps (10000)", "20000"]),
        ("schedule_step_1: 500\nschedule_step_2: 400", ["before schedule_step_2", "500", "400"]),
        ("schedule_step_2: 400", ["schedule_step_2 needs schedule_step_1"]),
        ("schedule_lr_1: 0.001", ["schedule_lr_1 needs schedule_step_1"]),
        ("schedule_step_1: 100\nschedule_lr_1: 0", ["schedule_lr_1", "above 0"]),
    ],
)
def test_schedule_errors(text, words):
    message = error_for(text)
    assert all(word in message for word in words), message


def test_warmup_default_shrinks_for_short_runs_and_explicit_warmup_is_checked():
    assert parse_hyperparameters("num_steps: 20", DETECTOR).warmup_steps == 2
    assert parse_hyperparameters("num_steps: 5", DETECTOR).warmup_steps == 0
    assert "smaller than the run's 100 steps" in error_for("num_steps: 100\nwarmup_steps: 100")
    message = error_for("num_steps: 100\nschedule_step_1: 10\nwarmup_steps: 20")
    assert "warmup_steps" in message and "learning-rate drop (step 10)" in message


def test_intervals_are_capped_at_the_run_length():
    hp = parse_hyperparameters("num_steps: 30\ncheckpoint_interval: 100", DETECTOR)
    assert (hp.checkpoint_interval, hp.eval_interval) == (30, 30)


# --- the Mask R-CNN stages -----------------------------------------------------------------------


def test_stage_epochs_are_per_stage_not_cumulative():
    hp = parse_hyperparameters(
        "num_steps: 10\nstage_1_epochs: 1\nstage_2_epochs: 2\nstage_3_epochs: 3\n"
        "initial_learning_rate: 0.01",
        MASKRCNN,
    )
    assert hp.staged and hp.epochs == (1, 2, 3)
    assert hp.total_steps == 60
    assert hp.stages == (
        TrainingStage("heads", 0, 10, 0.01),
        TrainingStage("4+", 10, 30, 0.01),
        TrainingStage("all", 30, 60, pytest.approx(0.001)),
    )
    assert hp.learning_rate_drops() == [(30, pytest.approx(0.001))]
    assert hp.start_learning_rate == 0.01
    assert hp.stage_at(0).layers == "heads" and hp.stage_at(29).layers == "4+"
    assert hp.stage_at(30).layers == "all" and hp.stage_at(60).layers == "all"


def test_onepanel_stage_defaults_and_evaluation_each_epoch():
    hp = parse_hyperparameters("num_steps: 40", MASKRCNN)
    assert hp.epochs == (1, 1, 1) and hp.total_steps == 120
    assert hp.eval_interval == 40


def test_a_zero_epoch_stage_is_skipped_and_all_zero_is_an_error():
    hp = parse_hyperparameters("num_steps: 5\nstage_2_epochs: 0", MASKRCNN)
    assert [stage.layers for stage in hp.stages] == ["heads", "all"]
    assert [stage.first_step for stage in hp.stages] == [0, 5]
    message = error_for("stage_1_epochs: 0\nstage_2_epochs: 0\nstage_3_epochs: 0", MASKRCNN)
    assert "all 0" in message and "stage_1_epochs" in message


def test_stage_epochs_are_checked():
    assert "stage_2_epochs must be at least 0" in error_for("stage_2_epochs: -1", MASKRCNN)


# --- model_garden_overrides -----------------------------------------------------------------


def test_overrides_take_dotted_and_nested_keys_and_merge_them():
    hp = parse_hyperparameters(
        "model_garden_overrides:\n"
        "  task.model.anchor.num_scales: 4\n"
        "  task: {model: {anchor: {anchor_size: 5}}}\n"
        "  trainer.optimizer_config.optimizer.sgd.momentum: 0.95\n",
        RETINANET,
    )
    assert hp.model_garden_overrides == {
        "task": {"model": {"anchor": {"num_scales": 4, "anchor_size": 5}}},
        "trainer": {"optimizer_config": {"optimizer": {"sgd": {"momentum": 0.95}}}},
    }


def test_conflicting_override_keys_are_errors():
    assert "given twice" in error_for({"model_garden_overrides": {"a.b": 1, "a": {"b": 2}}})
    assert "conflicts" in error_for({"model_garden_overrides": {"a": 1, "a.b": 2}})


def alias_bomb(levels: int = 10) -> str:
    """Each level lists the one before nine times: 9**10 (about 3.5e9) strings once expanded."""
    lines = [
        "model_garden_overrides:",
        "  task.l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for n in range(1, levels):
        lines.append(f"  task.l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(lines)


def test_a_yaml_alias_bomb_is_refused_at_once():
    started = time.monotonic()
    message = error_for(alias_bomb())
    assert time.monotonic() - started < 1
    assert message == (
        "hyperparameters use the YAML alias *l0 (line 3): aliases and anchors are not accepted, "
        "as each alias repeats a whole section and a few of them can expand to billions of "
        "values. Write the values out instead."
    )


def test_aliases_are_refused_in_key_value_lines_too():
    assert "YAML alias *a (line 1)" in error_for("model_garden_overrides={x: &a [1], y: *a}")
