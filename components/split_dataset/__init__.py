"""split-dataset: one Dataset in; stratified, group-aware train/val/test Datasets out."""
