"""Per-class score thresholds: the F1-maximising score on a split, ties, defaults, the file."""

import json

import numpy as np
import pytest

from cvat_kfp.components.evaluate_model.thresholds import (
    NO_MATCHED_DETECTION,
    NO_VALIDATION_OBJECTS,
    ClassOutcomes,
    ImageObjects,
    ThresholdsError,
    best_threshold,
    calibrate,
    class_outcomes,
    mean_f1,
    read_thresholds,
    thresholds_by_name,
    thresholds_json,
    thresholds_markdown,
    write_thresholds,
)

A, B = 1, 2


def image(gt, dets, crowd=None):
    """gt: [(box, class)], dets: [(box, class, score)]; boxes x, y, w, h."""
    return ImageObjects(
        np.array([g[0] for g in gt], float).reshape(-1, 4),
        np.array([g[1] for g in gt], int),
        np.array(crowd or [0] * len(gt), int),
        np.array([d[0] for d in dets], float).reshape(-1, 4),
        np.array([d[1] for d in dets], int),
        np.array([d[2] for d in dets], float),
    )


def outcomes(hits_by_score, num_objects):
    """hits_by_score: [(score, matched)]."""
    ordered = sorted(hits_by_score, key=lambda h: -h[0])
    return ClassOutcomes(
        np.array([s for s, _ in ordered]), np.array([h for _, h in ordered], bool), num_objects
    )


def test_the_threshold_maximises_f1_halfway_to_the_next_score():
    # kept at .8: 2 TP of 3 objects, 2 detections -> F1 .8; at .6: 3 TP, 4 det -> 6/7 (best);
    # at .3: 3 TP, 5 det -> .75
    found = outcomes([(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.3, False)], 3)
    threshold, point = best_threshold(found)
    assert threshold == pytest.approx(0.45)
    assert (point.true_positives, point.detections, point.num_objects) == (3, 4, 3)
    assert point.precision == 0.75 and point.recall == 1.0 and point.f1 == pytest.approx(6 / 7)


def test_equal_f1_goes_to_the_higher_precision():
    # at .9: 1 TP, 1 det, 3 objects -> F1 2/4 = .5, precision 1
    # at .5: 2 TP, 5 det -> F1 4/8 = .5, precision .4
    found = outcomes([(0.9, True), (0.8, False), (0.7, False), (0.6, False), (0.5, True)], 3)
    threshold, point = best_threshold(found)
    assert point.detections == 1 and point.precision == 1.0
    assert threshold == pytest.approx(0.85)


def test_tied_scores_are_kept_or_dropped_together():
    # a threshold cannot keep one of two 0.7 detections: the best is both (F1 2*2/(3+2))
    found = outcomes([(0.9, True), (0.7, True), (0.7, False)], 2)
    threshold, point = best_threshold(found)
    assert point.detections == 3 and threshold == pytest.approx(0.7)


def test_all_detections_kept_gives_the_lowest_score():
    threshold, point = best_threshold(outcomes([(0.9, True), (0.2, True)], 2))
    assert threshold == pytest.approx(0.2) and point.f1 == 1.0


def test_a_class_without_objects_or_hits_keeps_the_default_and_says_why():
    found = {A: outcomes([(0.9, False)], 0), B: outcomes([(0.9, False), (0.4, False)], 2)}
    rows = calibrate(found, ["a", "b"], default_threshold=0.5)
    assert [(r.name, r.threshold, r.calibrated, r.reason) for r in rows] == [
        ("a", 0.5, False, NO_VALIDATION_OBJECTS),
        ("b", 0.5, False, NO_MATCHED_DETECTION),
    ]
    table = thresholds_json(rows)
    assert table["classes"][0]["reason"] == "default: no validation objects"
    assert table["classes"][0]["val_detections"] == 1
    assert "precision" not in table["classes"][0]
    assert "default: no validation objects" in thresholds_markdown(table)


def test_matching_is_per_class_and_greedy_by_score():
    images = [
        image(
            [((0, 0, 10, 10), A), ((50, 50, 10, 10), B)],
            [
                ((0, 0, 10, 10), B, 0.95),  # a B on the A: false for B, does not take A's object
                ((0, 0, 10, 10), A, 0.6),  # A's true positive
                ((0, 0, 10, 10), A, 0.9),  # ... but this one is first: it takes the object
                ((50, 50, 10, 10), B, 0.4),  # B's true positive
            ],
        ),
        image([((0, 0, 10, 10), A)], [((40, 40, 10, 10), A, 0.7)]),  # a false A, a missed A
    ]
    found = class_outcomes(images, num_classes=2)
    assert found[A].num_objects == 2 and found[B].num_objects == 1
    assert found[A].scores.tolist() == [0.9, 0.7, 0.6]
    assert found[A].true_positive.tolist() == [True, False, False]
    assert found[B].scores.tolist() == [0.95, 0.4]
    assert found[B].true_positive.tolist() == [False, True]
    rows = calibrate(found, ["a", "b"])
    assert rows[0].threshold == pytest.approx(0.8) and rows[0].point.f1 == pytest.approx(2 / 3)
    assert rows[1].threshold == pytest.approx(0.4) and rows[1].point.precision == 0.5


def test_detections_on_crowd_regions_are_not_judged_and_crowds_are_not_objects():
    found = class_outcomes(
        [image([((0, 0, 100, 100), A), ((200, 200, 10, 10), A)],
               [((10, 10, 10, 10), A, 0.9), ((200, 200, 10, 10), A, 0.5)], crowd=[1, 0])],
        num_classes=1,
    )  # fmt: skip
    assert found[A].num_objects == 1
    assert found[A].scores.tolist() == [0.5] and found[A].true_positive.tolist() == [True]


def test_mean_f1_over_classes_with_objects_at_given_thresholds():
    found = {
        A: outcomes([(0.9, True), (0.3, False)], 1),
        B: outcomes([(0.4, True)], 2),
        3: outcomes([(0.8, False)], 0),  # no objects: not in the mean
    }
    single, points = mean_f1(found, {A: 0.5, B: 0.5, 3: 0.5})
    assert single == pytest.approx((1.0 + 0.0) / 2)
    assert points[B].detections == 0 and points[3].detections == 1
    calibrated, _ = mean_f1(found, {A: 0.6, B: 0.35, 3: 0.5})
    assert calibrated == pytest.approx((1.0 + 2 / 3) / 2)
    assert mean_f1({3: found[3]}, {3: 0.5})[0] == -1.0  # no class with objects: COCO's n/a


def test_the_file_round_trips_and_bad_files_are_named(tmp_path):
    rows = calibrate({A: outcomes([(0.9, True)], 1)}, ["cat | dog"])
    path = tmp_path / "thresholds.json"
    write_thresholds(path, thresholds_json(rows))
    table = read_thresholds(path)
    assert thresholds_by_name(table) == {"cat | dog": pytest.approx(0.9)}
    assert table["classes"][0]["f1"] == 1.0 and table["classes"][0]["calibrated"] is True
    assert "cat \\| dog" in thresholds_markdown(table)

    path.write_text(json.dumps({"classes": [{"name": "a", "threshold": 1.5}]}))
    with pytest.raises(ThresholdsError, match=r"thresholds.json: class entry 0 .*between 0 and 1"):
        read_thresholds(path)
    path.write_text("[1, 2]")
    with pytest.raises(ThresholdsError, match="'classes' list"):
        read_thresholds(path)
    with pytest.raises(ThresholdsError, match="no such file"):
        read_thresholds(tmp_path / "missing.json")
