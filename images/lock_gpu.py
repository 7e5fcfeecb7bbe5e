"""Write the GPU image's lock: the CPU lock plus the CUDA wheels of `tensorflow[and-cuda]`.

    python images/lock_gpu.py images/requirements.lock images/requirements-gpu.lock

Run by `make lock-gpu` from the repository root, after `make lock`.

How it resolves without downloading gigabytes: `pip install --dry-run --report` reads each wheel's
METADATA, which PyPI serves on its own (PEP 658), so the ~3 GB of CUDA wheels are never fetched.

Which CUDA versions: `tensorflow[and-cuda]` only gives floors (`nvidia-cudnn-cu12>=9.3.0.75,<10`),
and pip would take the newest 12.x, a combination TensorFlow never ran. The floors are the CUDA
12.5 / cuDNN 9.3 libraries TensorFlow is built and tested against, so we pin the floors.

Every package of the CPU lock is a constraint here: the two images share every version, and if
the resolve wants anything beyond the CUDA wheels, the CPU lock is stale and this script says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# pip freeze leaves these out of the CPU lock; the Dockerfiles pin them in their own step.
INSTALLER_TOOLS = {"pip", "setuptools", "wheel"}
PROJECT = "cvat-kfp"


def read_lock(path: Path) -> dict[str, str]:
    """Canonical name -> `name==version` line."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return {canonicalize_name(line.split("==")[0]): line for line in lines}


def dry_run(*args: str) -> list[dict]:
    """What `pip install` would install (metadata only): the report's `install` entries."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--disable-pip-version-check", "--no-input", "--report", "-", *args]
    # Where the index lacks PEP 658 metadata (some proxies strip it), read METADATA out of each
    # wheel with HTTP range requests instead of downloading it whole; pip prefers PEP 658 anyway.
    command.append("--use-feature=fast-deps")
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["install"]


def cuda_floors(tensorflow_version: str) -> dict[str, str]:
    """The `and-cuda` extra of that TensorFlow release, each pinned at its lower bound."""
    (tensorflow,) = dry_run("--no-deps", f"tensorflow=={tensorflow_version}")
    floors = {}
    for line in tensorflow["metadata"]["requires_dist"]:
        requirement = Requirement(line)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": "and-cuda"}):
            continue
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        if len(lower) != 1:
            sys.exit(f"lock_gpu: no single lower bound in {line!r}; pin it by hand")
        floors[requirement.name] = lower[0]
    if not floors:
        sys.exit(f"lock_gpu: tensorflow {tensorflow_version} declares no and-cuda extra")
    return floors


def main(cpu_lock_path: str, gpu_lock_path: str) -> None:
    cpu_lock = read_lock(Path(cpu_lock_path))
    tensorflow_version = cpu_lock["tensorflow"].split("==")[1]
    floors = cuda_floors(tensorflow_version)

    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        pins = list(cpu_lock.values()) + [f"{name}=={v}" for name, v in floors.items()]
        constraints.write("\n".join(pins) + "\n")
        constraints.flush()
        installs = dry_run(
            "-c", constraints.name, ".[test,dev]", f"tensorflow[and-cuda]=={tensorflow_version}"
        )

    gpu_lock = {}
    for item in installs:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        key = canonicalize_name(name)
        if key == PROJECT or key in INSTALLER_TOOLS:
            continue
        gpu_lock[key] = f"{name}=={version}"

    # The CPU lock plus the CUDA wheels, nothing else: anything more means a stale CPU lock.
    unexpected = set(gpu_lock) - set(cpu_lock) - {canonicalize_name(n) for n in floors}
    missing = set(cpu_lock) - set(gpu_lock)
    if unexpected or missing:
        sys.exit(
            f"lock_gpu: the resolve disagrees with {cpu_lock_path} (run `make lock` first): "
            f"new {sorted(unexpected)}, gone {sorted(missing)}"
        )

    # pip freeze's order (by name, case-insensitive), so the two locks diff cleanly.
    lines = sorted(gpu_lock.values(), key=lambda line: line.split("==")[0].lower())
    Path(gpu_lock_path).write_text("\n".join(lines) + "\n")
    print(f"{gpu_lock_path}: {len(lines)} pins ({len(floors)} CUDA wheels for TensorFlow "
          f"{tensorflow_version})")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
