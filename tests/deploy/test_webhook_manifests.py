"""deploy/webhook: valid against the Kubernetes schemas (kubernetes-validate's own copies, offline,
strict: an unknown field fails), and wired together: the probes, Secrets, volumes and Service
point at what exists, the pod runs as non-root with resources set, the rules file loads."""

import configparser
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cvat_kfp.components.common.component_image import IMAGE_REPOSITORY
from cvat_kfp.pipelines.cli import build_parser
from cvat_kfp.pipelines.webhook.rules import load_rules

KUBERNETES_VERSION = "1.30.0"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "webhook"


def _documents() -> dict[str, dict]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    documents = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((DEPLOY / name).read_text()):
            documents[document["kind"]] = document
    (generated,) = kustomization["configMapGenerator"]
    documents["ConfigMap"] = {  # as kustomize writes it from configMapGenerator
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generated["name"]},
        "data": {name: (DEPLOY / name).read_text() for name in generated["files"]},
    }
    return documents


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_manifest_is_valid_kubernetes_offline(no_network):
    documents = _documents()
    assert set(documents) == {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}
    for kind, document in documents.items():
        validated = kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert validated == "1.30", kind


def test_the_validation_catches_a_broken_manifest(no_network):
    deployment = _documents()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_pieces_fit_together():
    documents = _documents()
    deployment, service = documents["Deployment"], documents["Service"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    setup = configparser.ConfigParser()
    setup.read(DEPLOY.parents[1] / "setup.cfg")
    # the component image of this version: it holds the suite with starlette and uvicorn
    assert container["image"] == f"{IMAGE_REPOSITORY}:{setup['metadata']['version']}"
    assert container["command"] == ["cvat-kfp", "webhook", "serve"]
    parsed = build_parser().parse_args(container["command"][1:] + container["args"])
    assert (parsed.port, parsed.listen) == (8080, "0.0.0.0")
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    port_names = {port["name"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "http" in port_names and service["spec"]["ports"][0]["targetPort"] in port_names
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert deployment["spec"]["replicas"] == 1  # one writer of the SQLite file
    assert deployment["spec"]["strategy"]["type"] == "Recreate"

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    claim = volumes[mounts["/var/lib/cvat-kfp"]]["persistentVolumeClaim"]["claimName"]
    assert claim == documents["PersistentVolumeClaim"]["metadata"]["name"]
    rules_map = volumes[mounts["/etc/cvat-kfp"]]["configMap"]["name"]
    assert rules_map == documents["ConfigMap"]["metadata"]["name"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert Path(args["rules"]).parent == Path("/etc/cvat-kfp")
    assert Path(args["database"]).parent == Path("/var/lib/cvat-kfp")
    assert Path(args["rules"]).name in documents["ConfigMap"]["data"]

    secrets = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in container["env"]
        if "valueFrom" in env
    }
    assert set(secrets) == {
        "CVAT_WEBHOOK_SECRET", "CVAT_KFP_RUNS_TOKEN", "KFP_TOKEN", "CVAT_ACCESS_TOKEN",
    }  # fmt: skip
    plain = [env["name"] for env in container["env"] if "value" in env]
    assert not [name for name in plain if "SECRET" in name or "TOKEN" in name]


def test_the_shipped_rules_file_loads(tmp_path):
    rules = load_rules(DEPLOY / "rules.yaml")
    assert rules.watched_projects == [1]
