"""deploy/agent/: every manifest valid against the Kubernetes schemas (kubernetes-validate, strict:
unknown fields refused), the containers non-root with resources, the token from the Secret, and
the commands they run parse as cvat_agent's own command line."""

import configparser
import re
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cvat_kfp.components.common.component_image import IMAGE_REPOSITORY
from cvat_kfp.components.preannotate import cvat_agent

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "deploy" / "agent"
KUBERNETES_VERSION = "1.30.0"


def documents() -> dict[str, dict]:
    """File name -> its one YAML document."""
    found = {}
    for path in sorted(AGENT.glob("*.yaml")):
        (document,) = list(yaml.safe_load_all(path.read_text()))
        found[path.name] = document
    return found


def by_kind(kind: str) -> dict:
    (document,) = [d for d in documents().values() if d["kind"] == kind]
    return document


def test_the_kustomization_lists_every_manifest():
    kustomization = documents()["kustomization.yaml"]
    others = sorted(name for name in documents() if name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == others


@pytest.mark.parametrize(
    "name", sorted(n for n in documents() if n != "kustomization.yaml"), ids=str
)
def test_each_manifest_is_valid_kubernetes_offline(name, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    validated = kubernetes_validate.validate(documents()[name], KUBERNETES_VERSION, strict=True)
    assert validated == "1.30"


def test_the_validation_catches_a_misspelt_field():
    job = by_kind("Job")
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # resources, misspelt
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_the_pods_run_non_root_with_resources_and_the_token_from_the_secret(kind):
    pod = by_kind(kind)["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    (token,) = [e for e in container["env"] if e["name"] == "CVAT_ACCESS_TOKEN"]
    assert set(token) == {"name", "valueFrom"}
    assert token["valueFrom"]["secretKeyRef"]["key"] == "CVAT_ACCESS_TOKEN"
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]
    # A read-only root: every place the agent writes is a volume.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {"/tmp", env["HOME"]} <= mounts
    assert any(env["CVAT_KFP_CACHE_DIR"].startswith(m + "/") for m in mounts)


@pytest.mark.parametrize("kind, command", [("Deployment", "run-agent"), ("Job", "register")])
def test_the_containers_run_cvat_agent_with_the_configured_values(kind, command):
    (container,) = by_kind(kind)["spec"]["template"]["spec"]["containers"]
    config = by_kind("ConfigMap")["data"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": by_kind("ConfigMap")["metadata"]["name"]}}
    ]
    assert container["command"] == ["python", "-m", cvat_agent.__name__]
    # the component image of this version: it holds the suite with cvat-cli
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert container["image"] == f"{IMAGE_REPOSITORY}:{setup['metadata']['version']}"

    # Kubernetes expands $(NAME) from the container's environment.
    args = [re.sub(r"\$\((\w+)\)", lambda m: config[m.group(1)], a) for a in container["args"]]
    parsed = cvat_agent.parser().parse_args(args)

    assert (parsed.command, parsed.name, parsed.server_host) == (
        command,
        config["FUNCTION_NAME"],
        config["CVAT_URL"],
    )
    assert parsed.function_module == cvat_agent.FUNCTION_MODULE
    assert parsed.function_parameters == {
        "model": config["MODEL_URI"],
        "score_threshold": float(config["SCORE_THRESHOLD"]),
    }
