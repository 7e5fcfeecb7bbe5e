"""One module per CVAT export format: FORMATS names, detect(root), read(root, builder)."""
