"""train-maskrcnn: TFRecords with masks in; a trained TF Model Garden Mask R-CNN out."""
