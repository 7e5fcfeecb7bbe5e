"""convert-to-tfrecord: a Dataset in; TF Object Detection API TFRecord shards out."""
