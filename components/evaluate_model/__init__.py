"""evaluate-model: a Model and test TFRecords in; COCO metrics, confusion matrix, report out."""
