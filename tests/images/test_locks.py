"""The lock files are well formed and fresh.

images/requirements.lock (`make lock`) pins every package the CPU image installs;
images/requirements-gpu.lock (`make lock-gpu`) is the same plus the CUDA wheels, pinned at the
lowest versions `tensorflow[and-cuda]` allows (the CUDA/cuDNN TensorFlow is built against).
All checks here are offline: they read setup.cfg, the locks and the installed metadata.
"""

import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "images" / "requirements.lock"
GPU_LOCK = REPO / "images" / "requirements-gpu.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")


def pins(lock: Path) -> dict[str, str]:
    """Canonical name -> version (test_lock_is_exact_unique_pins vouches for the format)."""
    found = (PIN.match(line.strip()) for line in lock.read_text().splitlines() if line.strip())
    return {canonicalize_name(m["name"]): m["version"] for m in found if m}


@pytest.mark.parametrize("lock", [LOCK, GPU_LOCK], ids=lambda p: p.name)
def test_lock_is_exact_unique_pins(lock):
    problems, seen = [], set()
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        where = f"{lock.name}:{number}: {line!r}"
        if not line.strip():
            continue
        match = PIN.match(line.strip())
        if not match:  # also catches -e, URLs, comments and version ranges
            problems.append(f"{where}: not an exact `name==version` pin")
            continue
        name = canonicalize_name(match["name"])
        if name == "cvat-kfp":
            problems.append(f"{where}: the suite itself is installed from source, not the lock")
        if name in seen:
            problems.append(f"{where}: {name} is pinned twice")
        seen.add(name)
    assert not problems, "\n".join(problems)


def setup_cfg_requirements() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in ("test", "dev"):
        lines += config["options.extras_require"][extra].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def test_lock_satisfies_every_pin_of_setup_cfg():
    locked = pins(LOCK)
    stale = []
    for requirement in setup_cfg_requirements():
        version = locked.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            stale.append(f"setup.cfg wants {requirement}, the lock has {version}")
    assert not stale, "run `make lock` then `make lock-gpu`:\n" + "\n".join(stale)


def test_project_venv_agrees_with_the_lock():
    venv = REPO / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve() or not (venv / ".installed").exists():
        pytest.skip("not running in the .venv the Makefile makes")
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    differ = [
        f"{name}: locked {version}, installed {installed.get(name)}"
        for name, version in pins(LOCK).items()
        if installed.get(name) != version
    ]
    assert not differ, "run `make install` (setup.cfg changed? `make lock`):\n" + "\n".join(differ)


def test_gpu_lock_is_the_cpu_lock_plus_cuda_wheels():
    cpu, gpu = pins(LOCK), pins(GPU_LOCK)
    changed = {name: (v, gpu.get(name)) for name, v in cpu.items() if gpu.get(name) != v}
    assert not changed, f"the GPU lock differs from the CPU lock (`make lock-gpu`): {changed}"
    added = sorted(set(gpu) - set(cpu))
    assert added and all(name.startswith("nvidia-") for name in added), added


def test_gpu_lock_pins_the_cuda_that_tensorflow_declares():
    locked = pins(LOCK)["tensorflow"]
    try:
        installed = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorflow is not installed here, so its and-cuda extra cannot be read")
    if installed != locked:
        pytest.skip(f"tensorflow {installed} installed, {locked} locked")
    floors = {}
    for line in importlib.metadata.requires("tensorflow"):
        requirement = Requirement(line)
        if requirement.marker and requirement.marker.evaluate({"extra": "and-cuda"}):
            (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
            floors[canonicalize_name(requirement.name)] = floor
    cuda = {name: v for name, v in pins(GPU_LOCK).items() if name not in pins(LOCK)}
    assert cuda == floors, "run `make lock-gpu`"
