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


TRAINING_PIPELINES = ("tfod_training", "maskrcnn_training")


def _documents(name: str) -> list[dict]:
    return list(yaml.safe_load_all((registry.COMPILED_DIR / f"{name}.yaml").read_text()))


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_every_input_a_dag_task_reads_is_defined(name):
    """kfp 2.17 can compile a branch that reads a parameter its DAG does not declare (parameters
    used only as resources); the cluster then refuses the run. Check every DAG, nested ones too."""
    spec = _documents(name)[0]
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    undefined = []
    for dag_name, component in dags.items():
        declared = component.get("inputDefinitions", {})
        names = set(declared.get("parameters", {})) | set(declared.get("artifacts", {}))
        for task_name, task in component["dag"]["tasks"].items():
            for kind in ("parameters", "artifacts"):
                for key, value in task.get("inputs", {}).get(kind, {}).items():
                    ref = value.get("componentInputParameter") or value.get(
                        "componentInputArtifact"
                    )
                    if ref and ref not in names:
                        undefined.append(f"{dag_name}/{task_name}.{key} <- {ref}")
    assert not undefined, undefined


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_every_parameter_has_a_description_for_the_ui(name):
    inputs = _documents(name)[0]["root"]["inputDefinitions"]["parameters"]
    assert [p for p, spec in inputs.items() if not spec.get("description")] == []


@pytest.mark.parametrize("name", TRAINING_PIPELINES)
def test_training_runs_on_gpu_nodes_with_the_run_parameters(name):
    spec, platform = _documents(name)
    trainer = "train-tfod" if name == "tfod_training" else "train-maskrcnn"
    executors = spec["deploymentSpec"]["executors"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    trainers = [e for e in executors if e.startswith(f"exec-{trainer}")]
    assert len(trainers) == 2  # fine-tune and train-from-preset branches
    for executor in trainers:
        resources = executors[executor]["container"]["resources"]
        assert resources["accelerator"]["resourceCount"].endswith("gpu_count']}}")
        assert resources["accelerator"]["resourceType"].endswith("accelerator_type']}}")
        assert resources["resourceCpuLimit"].endswith("cpu_limit']}}")
        assert resources["resourceMemoryLimit"].endswith("memory_limit']}}")
        config = kubernetes[executor]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
            config["tolerations"]
        )
        assert config["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith(
            "node_selector"
        )
        assert {"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"} in (
            config["emptyDirMounts"]
        )
    # CVAT credentials: from the named Secret, for the export and the pre-annotation
    for executor in ("exec-export-annotations", "exec-preannotate", "exec-preannotate-2"):
        (secret,) = kubernetes[executor]["secretAsEnv"]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("cvat_secret_name")
        assert {k["envVar"] for k in secret["keyToEnv"]} == {
            "CVAT_ACCESS_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD"
        }  # fmt: skip


@pytest.mark.parametrize("name", TRAINING_PIPELINES)
def test_retry_and_caching_choices(name):
    spec = _documents(name)[0]
    tasks = {}
    for component in [spec["root"], *spec["components"].values()]:
        tasks.update(component.get("dag", {}).get("tasks", {}))
    trainer = "train-tfod" if name == "tfod_training" else "train-maskrcnn"
    for task_name, task in tasks.items():
        caching = task.get("cachingOptions", {}).get("enableCache", False)
        if task_name.startswith(trainer):
            assert task["retryPolicy"]["maxRetryCount"] == 3
            assert not caching
        elif task_name.startswith(("split-dataset", "convert-to-tfrecord", "evaluate-model")):
            assert caching, task_name
        elif task_name.startswith(("export-annotations", "export-model", "preannotate",
                                   "checkpoint-location")):  # fmt: skip
            assert not caching, task_name
    location = tasks["checkpoint-location"]["inputs"]["parameters"]["run_id"]
    assert location["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
