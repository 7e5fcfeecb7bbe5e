"""select-frames: a model and a CVAT task (or a folder) in; the frames to label next out."""
