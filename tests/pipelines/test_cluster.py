"""`cvat-kfp submit` and `upload` against a local server speaking the KFP v2beta1 REST API."""

import pytest
import yaml

from cvat_kfp.pipelines import cluster
from cvat_kfp.pipelines.cli import main
from tests.pipelines.kfp_mock_server import KfpServer

TOKEN = "test-token-123"


@pytest.fixture()
def kfp_server(monkeypatch):
    monkeypatch.setenv(cluster.TOKEN_ENV, TOKEN)
    monkeypatch.delenv(cluster.HOST_ENV, raising=False)
    server = KfpServer(required_token=TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


def _pipeline_spec(document: bytes) -> dict:
    return next(yaml.safe_load_all(document))


def test_submit_sends_the_compiled_pipeline_and_typed_parameters(kfp_server, capsys):
    code = main([
        "submit", "tfod_training", "--host", kfp_server.url, "--experiment", "shapes",
        "--param", "source=gs://bucket/export.zip", "--param", "gpu_count=2",
        "--param", "train_fraction=0.7", "--param", "stratify=false",
        "--param", 'node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}',
    ])  # fmt: skip

    assert code == 0, capsys.readouterr().err
    state = kfp_server.state
    assert [e["display_name"] for e in state.experiments.values()] == ["shapes"]
    (run,) = state.runs.values()
    # the pipeline spec and its Kubernetes platform spec, as the compiled YAML has them
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "tfod-training"
    kubernetes = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "exec-train-tfod" in kubernetes["deploymentSpec"]["executors"]
    assert run["runtime_config"]["parameters"] == {
        "source": "gs://bucket/export.zip",
        "gpu_count": 2,
        "train_fraction": 0.7,
        "stratify": False,
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    }
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in state.requests)
    assert f"{kfp_server.url}/#/runs/details/run-1" in capsys.readouterr().out


def test_submit_reuses_an_existing_experiment(kfp_server):
    for _ in range(2):
        cluster.submit(
            "dataset_preparation", {"source": "gs://b/x.zip"}, host=kfp_server.url,
            experiment="again",
        )  # fmt: skip
    assert len(kfp_server.state.experiments) == 1
    assert len(kfp_server.state.runs) == 2


def test_upload_creates_the_pipeline_then_adds_versions(kfp_server, capsys):
    assert main(["upload", "maskrcnn_training", "--host", kfp_server.url]) == 0
    assert main(["upload", "maskrcnn_training", "--host", kfp_server.url, "--version", "v2"]) == 0

    (pipeline,) = kfp_server.state.pipelines.values()
    assert pipeline["display_name"] == "maskrcnn-training"
    assert "Mask R-CNN" in pipeline["description"]
    versions = kfp_server.state.versions[pipeline["pipeline_id"]]
    assert [v.get("display_name") for v in versions] == [None, "v2"]
    for version in versions:
        spec = _pipeline_spec(version["package"]["uploadfile"])
        assert spec["pipelineInfo"]["name"] == "maskrcnn-training"
    out = capsys.readouterr().out
    assert "uploaded as pipeline-1" in out and "new version pipeline-1-v2" in out


def test_unknown_parameter_is_refused_before_contacting_the_cluster(kfp_server, capsys):
    code = main(["submit", "tfod_training", "--host", kfp_server.url, "--param", "gpus=1"])

    assert code == 2
    err = capsys.readouterr().err
    assert "'gpus'" in err and "gpu_count" in err and "accelerator_type" in err
    assert kfp_server.state.requests == []


def test_a_wrong_token_gets_an_actionable_message(kfp_server, monkeypatch, capsys):
    monkeypatch.setenv(cluster.TOKEN_ENV, "stale")

    code = main(["upload", "tfod_training", "--host", kfp_server.url])

    assert code == 1
    err = capsys.readouterr().err
    assert "401" in err and cluster.TOKEN_ENV in err


def test_no_host_says_where_to_give_one(monkeypatch, capsys):
    monkeypatch.delenv(cluster.HOST_ENV, raising=False)
    assert main(["submit", "tfod_training"]) == 1
    assert "--host" in capsys.readouterr().err


def test_bad_hyperparameters_are_refused_before_contacting_the_cluster(kfp_server, capsys):
    code = main([
        "submit", "tfod_training", "--host", kfp_server.url,
        "--param", "hyperparameters=num_stepz: 100",
    ])  # fmt: skip

    assert code == 2
    err = capsys.readouterr().err
    assert "--param hyperparameters (preset 'ssd-mobilenet-v2-coco'):" in err
    assert "unknown hyperparameter 'num_stepz' (did you mean 'num_steps'?)" in err
    assert kfp_server.state.requests == []


def test_a_yaml_alias_in_hyperparameters_is_refused_before_contacting_the_cluster(kfp_server):
    bomb = "model_garden_overrides:\n  a: &a [x, x]\n  b: [*a, *a]"
    with pytest.raises(cluster.ParameterError, match=r"hyperparameters .*YAML alias \*a"):
        cluster.submit(
            "maskrcnn_training", {"hyperparameters": bomb, "preset": "maskrcnn"},
            host=kfp_server.url,
        )  # fmt: skip
    with pytest.raises(cluster.ParameterError, match="--param preset: .*'no-such-model'"):
        cluster.submit("maskrcnn_training", {"preset": "no-such-model"}, host=kfp_server.url)
    assert kfp_server.state.requests == []
