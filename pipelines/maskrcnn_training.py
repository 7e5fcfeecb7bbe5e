"""maskrcnn-training: CVAT polygons/masks → TFRecords with masks → train-maskrcnn → evaluate →
export (→ pre-annotate).

The wiring and the parameter table are shared with tfod-training: see training.py.
"""

from cvat_kfp.pipelines.training import MASKRCNN, build_training_pipeline

maskrcnn_training = build_training_pipeline(MASKRCNN)
