"""The confusion-matrix matching rule, case by case."""

import numpy as np

from cvat_kfp.components.evaluate_model.confusion import confusion_matrix, match_image

A, B = 1, 2


def match(gt, dets, crowd=None, iou=0.5):
    """gt: [(box, class)], dets: [(box, class, score)]; boxes x, y, w, h."""
    return match_image(
        7,
        np.array([g[0] for g in gt], float).reshape(-1, 4),
        np.array([g[1] for g in gt], int),
        np.array(crowd or [0] * len(gt), int),
        np.array([d[0] for d in dets], float).reshape(-1, 4),
        np.array([d[1] for d in dets], int),
        np.array([d[2] for d in dets], float),
        iou,
    )


def test_a_wrong_class_is_a_confusion_not_a_miss_and_a_false_detection():
    found = match([((0, 0, 10, 10), A)], [((0, 0, 10, 10), B, 0.9)])
    assert found.matched == [(0, 0)] and found.missed == [] and found.false_detections == []
    assert found.num_confusions == 1 and found.num_errors == 1


def test_unmatched_objects_are_missed_and_unmatched_detections_false():
    found = match(
        [((0, 0, 10, 10), A), ((50, 50, 10, 10), B)],
        [((0, 0, 10, 10), A, 0.9), ((80, 80, 10, 10), A, 0.8), ((52, 52, 10, 10), B, 0.7)],
    )  # the last one overlaps (IoU 64/136 < 0.5)
    assert found.matched == [(0, 0)]
    assert found.missed == [1]
    assert found.false_detections == [1, 2]


def test_greedy_by_score_and_each_object_matched_once():
    gt = [((0, 0, 10, 10), A), ((5, 0, 10, 10), A)]
    dets = [((0, 0, 10, 10), A, 0.6), ((5, 0, 10, 10), A, 0.9), ((5, 0, 10, 10), A, 0.8)]
    found = match(gt, dets)
    # in score order: detection 1 takes object 1 (IoU 1; object 0 only 1/3), detection 2 finds
    # nothing left at IoU >= .5, detection 0 takes object 0
    assert found.matched == [(1, 1), (0, 0)]
    assert found.false_detections == [2]


def test_detections_on_crowd_regions_count_nowhere_and_crowds_are_not_objects():
    found = match(
        [((0, 0, 100, 100), A), ((200, 200, 10, 10), B)],
        [((10, 10, 10, 10), A, 0.9), ((300, 300, 5, 5), A, 0.8)],
        crowd=[1, 0],
    )
    assert found.matched == [] and found.false_detections == [1] and found.missed == [1]


def test_the_threshold_is_inclusive_and_empty_images_work():
    found = match([((0, 0, 10, 10), A)], [((0, 0, 10, 20), A, 0.9)], iou=0.5)  # IoU exactly .5
    assert found.matched == [(0, 0)]
    assert match([], []).num_errors == 0
    assert match([((0, 0, 1, 1), A)], []).missed == [0]
    assert match([], [((0, 0, 1, 1), A, 0.3)]).false_detections == [0]


def test_matrix_rows_are_true_classes_with_background_last():
    found = match(
        [((0, 0, 10, 10), A), ((50, 50, 10, 10), B), ((100, 0, 10, 10), B)],
        [((0, 0, 10, 10), B, 0.9), ((50, 50, 10, 10), B, 0.8), ((300, 0, 9, 9), A, 0.7)],
    )
    matrix = confusion_matrix(
        [found], {7: np.array([A, B, B])}, {7: np.array([B, B, A])}, num_classes=3
    )
    assert matrix == [
        [0, 1, 0, 0],  # A detected as B
        [0, 1, 0, 1],  # B found once, missed once
        [0, 0, 0, 0],  # no third-class object
        [1, 0, 0, 0],  # a false A
    ]
