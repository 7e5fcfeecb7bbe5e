"""The Dockerfiles, without a Docker engine: static rules, and a replay of their pip installs.

Static rules (both Dockerfiles):
- every FROM names an image by an exact version tag (major.minor.patch in it; a digest may
  follow); never `latest`, never a bare name or a floating tag like `3.11-slim`;
- the last USER before CMD/ENTRYPOINT is a numeric, non-zero uid (numeric so that Kubernetes'
  runAsNonRoot can check it);
- pip installs only: the lock file copied from images/ (`-r`), exact `name==version` pins, or our
  own source copied into the image with `--no-deps`; and no pip option outside a short list;
- `apt-get install` only with `--no-install-recommends`, with the package lists removed in the
  same RUN. Debian package versions are not pinned: the archive drops superseded versions, so a
  pin breaks the build at the next security update; the pinned base tag and digest fix the rest.

The replay (marked image_replay, part of `make test`): the Dockerfile's COPY and pip steps, run
in a fresh virtual environment with the paths mapped into a temporary directory, then every
module of the suite imported from that environment and `cvat-kfp --help` run.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = {"Dockerfile": "requirements.lock", "Dockerfile.gpu": "requirements-gpu.lock"}

# pip options a Dockerfile may use; anything else (an index URL, -e, ...) needs a look first.
ALLOWED_PIP_OPTIONS = {
    "--no-cache-dir",
    "--no-deps",
    "--no-build-isolation",
    "--no-compile",
    "--require-hashes",
    "--upgrade",
    "-U",
    "--quiet",
    "-q",
}
EXACT_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
EXACT_TAG = re.compile(r"\d+\.\d+\.\d+")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


# --- a small Dockerfile reader: enough for our Dockerfiles, not for every Dockerfile ---------


@dataclass
class Instruction:
    keyword: str  # FROM, RUN, COPY, ... (upper case)
    arguments: str  # the rest, continuation lines joined
    line: int


def parse(text: str) -> list[Instruction]:
    instructions, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comments and blank lines, also inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = ""
    return instructions


def shell_commands(run: Instruction) -> list[list[str]]:
    """The commands of a RUN, split at `&&` (the only chaining our Dockerfiles use)."""
    if run.arguments.startswith("["):  # exec form
        return [json.loads(run.arguments)]
    return [shlex.split(part) for part in run.arguments.split("&&") if part.strip()]


def pip_command(command: list[str]) -> tuple[str, list[str]] | None:
    """(`install`/`check`/..., its arguments) when the command runs pip, else None."""
    if command[:1] in (["pip"], ["pip3"]):
        rest = command[1:]
    elif command[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        rest = command[3:]
    else:
        return None
    return (rest[0], rest[1:]) if rest else ("", [])


def copies(instructions: list[Instruction]) -> dict[str, str]:
    """Image path -> repository path, for every file or folder a COPY puts in the image."""
    mapping = {}
    for instruction in instructions:
        if instruction.keyword != "COPY":
            continue
        parts = [p for p in shlex.split(instruction.arguments) if not p.startswith("--")]
        *sources, destination = parts
        for source in sources:
            is_folder = destination.endswith("/") or len(sources) > 1
            target = destination.rstrip("/") + "/" + Path(source).name if is_folder else destination
            mapping[target] = source
    return mapping


def is_copied(path: str, copied: dict[str, str]) -> bool:
    """Whether `path` in the image is something COPY put there, or a folder holding such."""
    return any(inside == path or inside.startswith(path.rstrip("/") + "/") for inside in copied)


# --- the static rules ---------------------------------------------------------------------


def problems_in(text: str, lock_name: str) -> list[str]:
    """Every rule the Dockerfile text breaks (see the module docstring)."""
    instructions = parse(text)
    copied = copies(instructions)
    problems = []

    for instruction in instructions:
        if instruction.keyword != "FROM":
            continue
        image = instruction.arguments.split()[0]
        name, _, digest = image.partition("@")
        tag = name.rpartition(":")[2] if ":" in name.split("/")[-1] else ""
        if not tag or tag == "latest" or not EXACT_TAG.search(tag):
            problems.append(f"line {instruction.line}: FROM {image}: not pinned to a version tag")
        if digest and not DIGEST.match(digest):
            problems.append(f"line {instruction.line}: FROM {image}: malformed digest")

    users = [i for i in instructions if i.keyword == "USER"]
    entry = [i for i in instructions if i.keyword in ("CMD", "ENTRYPOINT")]
    if not users:
        problems.append("no USER: the image would run as root")
    else:
        last = users[-1]
        uid = last.arguments.split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"line {last.line}: USER {last.arguments}: not a numeric non-root uid")
        if entry and entry[-1].line < last.line:
            problems.append(f"line {last.line}: USER comes after {entry[-1].keyword}")

    installed_lock = False
    for run in (i for i in instructions if i.keyword == "RUN"):
        for command in shell_commands(run):
            where = f"line {run.line}: {shlex.join(command)}"
            if command[:2] == ["apt-get", "install"] or command[:2] == ["apt", "install"]:
                if "--no-install-recommends" not in command:
                    problems.append(f"{where}: apt install without --no-install-recommends")
                if "/var/lib/apt/lists" not in run.arguments:
                    problems.append(f"{where}: the apt lists are not removed in the same RUN")
            pip = pip_command(command)
            if pip is None or pip[0] != "install":
                continue
            arguments = iter(pip[1])
            for argument in arguments:
                if argument in ("-r", "--requirement"):
                    requirements = next(arguments, "")
                    source = copied.get(requirements, "")
                    if source != f"images/{lock_name}":
                        problems.append(f"{where}: -r {requirements} is not images/{lock_name}")
                    installed_lock = True
                elif argument.startswith("-"):
                    if argument not in ALLOWED_PIP_OPTIONS:
                        problems.append(f"{where}: pip option {argument} is not allowed")
                elif is_copied(argument, copied):
                    if "--no-deps" not in pip[1]:
                        problems.append(f"{where}: {argument} installed without --no-deps")
                elif not EXACT_PIN.match(argument):
                    problems.append(f"{where}: {argument} is neither a pin nor a copied path")
    if not installed_lock:
        problems.append(f"nothing is installed from images/{lock_name}")
    return problems


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_dockerfile_follows_the_rules(dockerfile):
    problems = problems_in((IMAGES / dockerfile).read_text(), DOCKERFILES[dockerfile])
    assert not problems, f"images/{dockerfile}:\n" + "\n".join(problems)


GOOD = """
    FROM python:3.11.15-slim-bookworm
    COPY images/requirements.lock /tmp/requirements.lock
    RUN python -m pip install --no-cache-dir -r /tmp/requirements.lock
    USER 1000
    CMD ["cvat-kfp"]
"""


@pytest.mark.parametrize(
    "change, expected",
    [
        (("FROM python:3.11.15-slim-bookworm", "FROM python:latest"), "not pinned"),
        (("FROM python:3.11.15-slim-bookworm", "FROM python"), "not pinned"),
        (("FROM python:3.11.15-slim-bookworm", "FROM python:3.11-slim"), "not pinned"),
        (("FROM python:3.11.15-slim-bookworm", "FROM python:3.11.15@sha256:1234"), "digest"),
        (("USER 1000", "USER root"), "non-root"),
        (("USER 1000", "USER 0:0"), "non-root"),
        (("USER 1000", ""), "no USER"),
        (("-r /tmp/requirements.lock", "requests"), "neither a pin"),
        (("-r /tmp/requirements.lock", "-r /tmp/other.txt"), "is not images/"),
        (("--no-cache-dir", "--index-url https://example.org"), "not allowed"),
        (("RUN python", "RUN apt-get install -y curl && python"), "--no-install-recommends"),
    ],
)
def test_the_rules_catch_what_they_should(change, expected):
    text = textwrap.dedent(GOOD)
    assert problems_in(text, "requirements.lock") == []
    broken = text.replace(*change)
    assert any(expected in problem for problem in problems_in(broken, "requirements.lock"))


def install_steps(dockerfile: str) -> list[str]:
    """FROM, COPY and the pip commands, in order: what makes the image's Python environment."""
    steps = []
    for instruction in parse((IMAGES / dockerfile).read_text()):
        if instruction.keyword in ("FROM", "COPY"):
            steps.append(f"{instruction.keyword} {instruction.arguments}")
        elif instruction.keyword == "RUN":
            commands = shell_commands(instruction)
            steps += [shlex.join(c) for c in commands if pip_command(c)]
    return steps


def test_gpu_image_installs_like_the_cpu_image():
    # Only the CPU Dockerfile is replayed (the GPU one would fetch 1.7 GB of CUDA wheels): the two
    # must start from the same Python and install the same way, the lock file apart.
    gpu = install_steps("Dockerfile.gpu")
    assert [s.replace("requirements-gpu.lock", "requirements.lock") for s in gpu] == install_steps(
        "Dockerfile"
    )


# --- the replay ---------------------------------------------------------------------------


def suite_modules() -> list[str]:
    """Every module of the suite, found by walking its folders (new ones join by themselves)."""
    names = []
    folders = {"cvat_kfp.components": "components", "cvat_kfp.pipelines": "pipelines"}
    for package, folder in folders.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            names.append(".".join((package, *parts[: -1 if parts[-1] == "__init__" else None])))
    return names


IMPORT_CHECK = """
import importlib, importlib.resources, sys, sysconfig
from pathlib import Path

site = Path(sysconfig.get_paths()["purelib"]).resolve()
missing = set()
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("cvat_kfp"):
            raise
        missing.add(error.name)
        continue
    where = Path(module.__file__).resolve()
    assert where.is_relative_to(site), f"{name} imported from {where}, not from {site}"
if missing:
    sys.exit(f"not installed: {sorted(missing)}; is each package in setup.cfg [options] packages?")
compiled = importlib.resources.files("cvat_kfp.pipelines") / "compiled"
print(len(sys.argv) - 1, "modules;", sorted(p.name for p in compiled.iterdir()))
"""


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        # This machine's pip.conf names index folders that do not exist: drop that noise.
        output = "\n".join(
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "is ignored: it is neither a file nor a directory" not in line
        )
        shown = shlex.join(map(str, command))
        shown = shown if len(shown) < 300 else shown[:300] + " ..."
        pytest.fail(f"`{shown}` failed:\n{output[-6000:]}")
    return result


@pytest.mark.slow
@pytest.mark.image_replay
def test_replay_of_the_cpu_image_installs_and_imports_the_suite(tmp_path_factory):
    """About 75 s here: installs images/requirements.lock (3.4 GB installed, 0.9 GB of wheels)."""
    tmp = tmp_path_factory.mktemp("replay")
    try:
        replay(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # 3.4 GB: pytest would otherwise keep 3 of them


def replay(tmp: Path) -> None:
    # The lock holds for one Python minor version: another one would not replay the image.
    instructions = parse((IMAGES / "Dockerfile").read_text())
    base = next(i.arguments for i in instructions if i.keyword == "FROM")
    image_python = re.match(r"python:(\d+\.\d+)\.", base)[1]
    if image_python != "{}.{}".format(*sys.version_info):
        pytest.skip(f"the image has Python {image_python}, this is {sys.version.split()[0]}")

    venv, root = tmp / "venv", tmp / "image"  # `root` stands in for the image's file system
    made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a virtual environment here (venv/ensurepip): {made.stderr}")
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CVAT_KFP_", "PYTHON"))}

    replayed = []
    for instruction in instructions:
        if instruction.keyword == "COPY":
            for inside, source in copies([instruction]).items():
                target = root / inside.lstrip("/")
                if (REPO / source).is_dir():
                    skip = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(REPO / source, target, ignore=skip)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / source, target)
        if instruction.keyword != "RUN":
            continue
        for command in shell_commands(instruction):
            pip = pip_command(command)
            if pip is None:
                continue  # useradd, rm, ...: not part of the Python environment
            # Paths into the image become paths into `root`; pip's cache is allowed (the image
            # build has none, which changes nothing installed); and pip never asks or nags.
            arguments = [str(root / a.lstrip("/")) if a.startswith("/") else a for a in pip[1]]
            arguments = [a for a in arguments if a != "--no-cache-dir"]
            command = [python, "-m", "pip", pip[0], "--disable-pip-version-check", "--no-input"]
            run(command + arguments, cwd=tmp, env=env, timeout=1800)
            replayed.append(shlex.join(["pip", pip[0], *pip[1]]))
    assert any("-r /tmp/cvat-kfp/requirements.lock" in r for r in replayed), replayed
    assert any(r.startswith("pip check") for r in replayed), replayed

    # Isolated mode and a folder outside the repository: only the installed package can answer.
    imported = run([python, "-I", "-c", IMPORT_CHECK, *suite_modules()], cwd=tmp, env=env)
    compiled = sorted(p.name for p in (REPO / "pipelines" / "compiled").glob("*.yaml"))
    assert str(compiled) in imported.stdout, imported.stdout

    cli = venv / "bin" / "cvat-kfp"
    assert "compile" in run([cli, "--help"], cwd=tmp, env=env).stdout
    version = run([cli, "--version"], cwd=tmp, env=env).stdout.split()[-1]
    setup_cfg = (REPO / "setup.cfg").read_text()
    assert re.search(rf"^version\s*=\s*{re.escape(version)}\s*$", setup_cfg, re.M), version
