"""The ids CVAT gave the uploaded shapes, found in its answer whatever the answer's order."""

from types import SimpleNamespace

from cvat_sdk import models

from cvat_kfp.components.preannotate.preannotate import created_ids


def request(frame, label_id, points, shape_type="rectangle"):
    return models.LabeledShapeRequest(
        type=models.ShapeType(shape_type), frame=frame, label_id=label_id, points=points
    )


def answered(shape_id, frame, label_id, points, shape_type="rectangle"):
    return SimpleNamespace(
        id=shape_id,
        frame=frame,
        label_id=label_id,
        points=points,
        type=models.ShapeType(shape_type),
    )


def test_ids_are_found_by_frame_label_type_and_points_not_by_order():
    requests = [
        request(0, 1, [1.0, 2.0, 3.0, 4.0]),
        request(0, 1, [1.0, 2.0, 3.0, 4.0]),  # the same box twice: both get an id, in order
        request(5, 2, [0.0, 0.0, 4.0, 0.0, 4.0, 4.0], "polygon"),
        request(9, 1, [7.0, 7.0, 9.0, 9.0]),  # not in the answer
    ]
    answer = [  # job by job: the later frames' job first here, points as floats from the DB
        answered(31, 5, 2, [0.0, 0.0, 4.0, 0.0, 4.0, 4.000001], "polygon"),
        answered(12, 0, 1, [1.0, 2.0, 3.0, 4.0]),
        answered(13, 0, 1, [1.0, 2.0, 3.0, 4.0]),
    ]
    assert created_ids(requests, answer) == [12, 13, 31, None]
