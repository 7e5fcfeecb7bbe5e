"""One image name, three places: what `make images` tags, what the components compile with, and
what the compiled YAML runs; and nothing in the compiled YAML installs anything at run time."""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cvat_kfp.components.common import component_image

REPO = Path(__file__).resolve().parents[2]
COMPILED = REPO / "pipelines" / "compiled"


@pytest.fixture
def default_images(monkeypatch):
    """The image names with no override in the environment."""
    monkeypatch.delenv("CVAT_KFP_IMAGE", raising=False)
    monkeypatch.delenv("CVAT_KFP_GPU_IMAGE", raising=False)
    return component_image.cpu_image(), component_image.gpu_image()


def make_dry_run(*arguments: str) -> list[list[str]]:
    """The commands `make -n` prints, split into words."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE_REPO", "TAG", "DOCKER")}
    output = subprocess.run(
        [make, "--no-print-directory", "-n", "-C", str(REPO), *arguments],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [shlex.split(line) for line in output.splitlines() if line.strip()]


def built(commands: list[list[str]]) -> dict[str, str]:
    """Dockerfile -> tag, for each `docker build -f FILE -t TAG`."""
    builds = [c for c in commands if c[1:2] == ["build"]]
    return {c[c.index("-f") + 1]: c[c.index("-t") + 1] for c in builds}


def test_make_images_builds_the_names_the_components_use(default_images):
    cpu, gpu = default_images
    assert built(make_dry_run("images")) == {"images/Dockerfile": cpu, "images/Dockerfile.gpu": gpu}
    version = re.search(r"^version\s*=\s*(\S+)", (REPO / "setup.cfg").read_text(), re.M)[1]
    assert cpu == f"{component_image.IMAGE_REPOSITORY}:{version}"


def test_make_push_takes_the_repository_and_tag_it_is_given():
    repository = "registry.example/team/cvat-kfp"
    commands = make_dry_run("push", f"IMAGE_REPO={repository}", "TAG=dev")
    assert built(commands) == {
        "images/Dockerfile": f"{repository}:dev",
        "images/Dockerfile.gpu": f"{repository}:dev-gpu",
    }
    pushed = [c[2] for c in commands if c[1:2] == ["push"]]
    assert pushed == [f"{repository}:dev", f"{repository}:dev-gpu"]


@pytest.mark.parametrize("path", sorted(COMPILED.glob("*.yaml")), ids=lambda p: p.name)
def test_compiled_executors_run_our_image_and_install_nothing(path, default_images):
    spec = next(yaml.safe_load_all(path.read_text()))
    containers = {
        name: executor["container"]
        for name, executor in spec["deploymentSpec"]["executors"].items()
        if "container" in executor  # importers have none
    }
    assert containers, f"{path.name}: no container executors"
    for name, container in containers.items():
        assert container["image"] in default_images, f"{name}: {container['image']}"
        # kfp puts a `pip install kfp ...` preamble before the program unless the component says
        # install_kfp_package=False and has no packages_to_install. The component's own source
        # (its docstring may say anything) is left out of the check.
        shell = [part for part in container["command"] if "from kfp import dsl" not in part]
        assert not any(re.search(r"\bpip\b|ensurepip", part) for part in shell), (name, shell)
        assert shell[:2] == ["sh", "-ec"], (name, shell)
