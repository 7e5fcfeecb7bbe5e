"""train-tfod: TFRecords in; a trained TF Model Garden detector (RetinaNet, Faster R-CNN) out."""
