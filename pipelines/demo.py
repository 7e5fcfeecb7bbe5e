"""`make demo`: the suite end to end on a laptop, on a synthetic shapes dataset, with kfp.local."""

from __future__ import annotations

import json
from pathlib import Path


def run_demo(work_dir: str | Path, num_images: int = 40, seed: int = 0) -> dict[str, Path]:
    """Generate a shapes Dataset, run dataset-preparation locally; returns the TFRecords dirs."""
    import warnings

    from kfp import local

    # kfp.local warns once per task that our image is not a plain Python image, and that
    # cluster-only settings are ignored: both expected when running on a laptop.
    warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")

    from cvat_kfp.components.common.synthetic import make_shapes_dataset
    from cvat_kfp.pipelines.dataset_preparation import SPLITS, dataset_preparation

    work_dir = Path(work_dir).resolve()
    source = work_dir / "shapes_dataset"
    if not (source / "annotations.json").is_file():
        make_shapes_dataset(source, num_images=num_images, seed=seed, num_groups=num_images // 4)
    print(f"dataset: {source} ({num_images} synthetic images)")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir / "runs"))
    run = dataset_preparation(source=str(source), seed=seed)
    outputs = {name: Path(run.outputs[name].path) for name in SPLITS}
    for name, directory in outputs.items():
        manifest = json.loads((directory / "manifest.json").read_text())
        print(f"{name:>5}: {manifest['num_examples']} examples, {manifest['num_instances']} "
              f"instances in {len(manifest['shards'])} shard(s) at {directory}")  # fmt: skip
    return outputs
