"""tfod-training: CVAT boxes → TFRecords → train-tfod → evaluate → export (→ pre-annotate).

The wiring and the parameter table are shared with maskrcnn-training: see training.py.
"""

from cvat_kfp.pipelines.training import TFOD, build_training_pipeline

tfod_training = build_training_pipeline(TFOD)
