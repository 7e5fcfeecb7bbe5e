"""pipelines/compiled/ is what users upload: it must match the code and parse as a PipelineSpec."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from cvat_kfp.pipelines import registry
from cvat_kfp.pipelines.cli import main


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_compiled_yaml_is_fresh(name, tmp_path):
    # A fresh interpreter reads the image name from a clean environment, as `make compile` does.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cvat_kfp.pipelines.cli",
            "compile",
            name,
            "--output-dir",
            str(tmp_path),
        ],
        check=True,
        env={k: v for k, v in __import__("os").environ.items() if not k.startswith("CVAT_KFP_")},
    )
    checked_in = registry.COMPILED_DIR / f"{name}.yaml"
    assert checked_in.is_file(), f"{checked_in} is missing: run `make compile`"
    assert (tmp_path / f"{name}.yaml").read_bytes() == checked_in.read_bytes(), (
        f"{checked_in} is stale: run `make compile` and commit it"
    )


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_compiled_yaml_parses_as_pipeline_spec(name):
    documents = list(yaml.safe_load_all((registry.COMPILED_DIR / f"{name}.yaml").read_text()))
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == name.replace("_", "-")
    assert spec.deployment_spec, "no executors in the compiled pipeline"
    for document in documents[1:]:  # Kubernetes platform config, when present
        json_format.ParseDict(document, pipeline_spec_pb2.PlatformSpec())


def test_every_compiled_file_belongs_to_a_pipeline():
    stray = {p.stem for p in registry.COMPILED_DIR.glob("*.yaml")} - set(registry.PIPELINES)
    assert not stray, f"compiled YAML without a pipeline: {stray}"


def test_compile_image_override(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cvat_kfp.pipelines.cli", "compile", "dataset_preparation",
         "--output-dir", str(tmp_path), "--image", "registry.example/cvat-kfp:test"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    text = (tmp_path / "dataset_preparation.yaml").read_text()
    assert "image: registry.example/cvat-kfp:test" in text
    assert "ghcr.io/cvat-kfp" not in text
    assert result.stdout.strip().endswith("dataset_preparation.yaml")


def test_compile_unknown_pipeline_lists_the_valid_ones(capsys):
    assert main(["compile", "no_such_pipeline"]) == 2
    err = capsys.readouterr().err
    assert "no_such_pipeline" in err and "dataset_preparation" in err


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "cvat-kfp" in capsys.readouterr().out
    assert Path(registry.COMPILED_DIR).is_dir()
