"""The split and convert components run for real under kfp.local, wired as in a pipeline."""

import json
from pathlib import Path

import pytest

from cvat_kfp.components.common.dataset import Dataset
from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.pipelines.dataset_preparation import dataset_preparation

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


def _shard_examples(directory: Path) -> int:
    manifest = json.loads((directory / "manifest.json").read_text())
    return manifest["num_examples"]


def test_dataset_preparation_runs_locally(kfp_local, tmp_path):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=20, num_groups=5, seed=3)

    run = dataset_preparation(
        source=str(source), train_fraction=0.6, val_fraction=0.2, test_fraction=0.2, seed=1
    )

    outputs = {name: Path(run.outputs[name].path) for name in ("train", "val", "test")}
    for name, directory in outputs.items():
        shards = sorted(directory.glob(f"{name}-*-of-*.tfrecord"))
        assert shards, f"no {name} shards in {directory}"
        assert (directory / "label_map.pbtxt").is_file()
        assert run.outputs[name].metadata["split"] == name
    examples = {name: _shard_examples(d) for name, d in outputs.items()}
    assert sum(examples.values()) == 20
    # groups of 4 frames never cross splits, so each split holds whole groups
    assert all(n % 4 == 0 and n > 0 for n in examples.values()), examples


def test_split_outputs_are_valid_datasets_and_cached_inputs_untouched(kfp_local, tmp_path):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=10, seed=4)
    before = (source / "annotations.json").read_bytes()

    run = dataset_preparation(source=str(source), seed=2)

    assert (source / "annotations.json").read_bytes() == before
    assert run.outputs["train"].metadata["num_examples"] >= 1
    exported = Dataset.load(run.outputs["dataset"].path)
    assert exported.metadata() == Dataset.load(source).metadata()
    split_dirs = [p.parent for p in kfp_local.rglob("annotations.json")]
    split_dirs = [d for d in split_dirs if d.name in ("train", "val", "test")]
    assert sorted(d.name for d in split_dirs) == ["test", "train", "val"]
    assert sum(len(Dataset.load(d).images) for d in split_dirs) == 10


def test_a_refused_input_fails_the_run_with_the_reason_in_the_log(kfp_local, tmp_path, capfd):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=2, seed=5)

    with pytest.raises(RuntimeError):
        dataset_preparation(source=str(source))

    log = capfd.readouterr()
    assert "3 non-empty splits requested" in log.out + log.err
    assert "2 images" in log.out + log.err
