"""A cvat-sdk function module for the agent tests: our ModelFunction over a predictor whose
detections are known (cvat-cli's agent loads it by name in its own worker process)."""

from cvat_kfp.components.preannotate.cvat_function import ModelFunction
from tests.components.preannotate.test_preannotate import FakePredictor, det

NAMES = ("cat", "dog")
PER_FRAME = [  # frames of 40 x 30 pixels
    [det("cat", 0.9, 2, 3, 20, 15), det("dog", 0.4, 10, 0, 40, 30)],
    [det("dog", 0.7, 0, 5, 12, 25)],
]


def create(score_threshold: float = 0.5, names: str = ",".join(NAMES)) -> ModelFunction:
    return ModelFunction(FakePredictor(names.split(","), PER_FRAME), score_threshold)
