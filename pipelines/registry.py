"""Every pipeline the suite ships, by the name its compiled YAML carries."""

import importlib
from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"

# Imported lazily: component modules read the image name from the environment when they load,
# so `cvat-kfp compile --image` must set it first.
PIPELINES = {
    "dataset_preparation": "cvat_kfp.pipelines.dataset_preparation:dataset_preparation",
    "tfod_training": "cvat_kfp.pipelines.tfod_training:tfod_training",
    "maskrcnn_training": "cvat_kfp.pipelines.maskrcnn_training:maskrcnn_training",
    "correction_report": "cvat_kfp.pipelines.correction_report:correction_report",
}


def load_pipeline(name: str):
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; the pipelines are: {', '.join(PIPELINES)}")
    module_name, attribute = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def compile_pipeline(name: str, output_dir: str | Path = COMPILED_DIR) -> Path:
    """Compile one pipeline to `<output_dir>/<name>.yaml` and return the path."""
    from kfp import compiler

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.yaml"
    compiler.Compiler().compile(load_pipeline(name), str(path))
    return path
