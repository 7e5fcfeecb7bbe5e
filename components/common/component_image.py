"""The container image every component runs in: one name, tied to the package version.

The default is this repository's namespace on the GitHub Container Registry
(ghcr.io/<repository owner>/cvat-kfp), where .github/workflows/release-images.yml pushes both
images on a version tag (README, "Component images"). Override at compile time with the
environment (`CVAT_KFP_IMAGE`, `CVAT_KFP_GPU_IMAGE`) or with `cvat-kfp compile --image/--gpu-image`,
which set the same variables before the components load.
Read when a component module is imported (its decorator runs then), not when this module is.
"""

import os
from importlib.metadata import PackageNotFoundError, version

IMAGE_REPOSITORY = "ghcr.io/cvat-kfp/cvat-kfp"

try:
    PACKAGE_VERSION = version("cvat-kfp")
except PackageNotFoundError:  # running from a source tree that was never installed
    PACKAGE_VERSION = "0.0.0"


def cpu_image() -> str:
    return os.environ.get("CVAT_KFP_IMAGE") or f"{IMAGE_REPOSITORY}:{PACKAGE_VERSION}"


def gpu_image() -> str:
    return os.environ.get("CVAT_KFP_GPU_IMAGE") or f"{IMAGE_REPOSITORY}:{PACKAGE_VERSION}-gpu"
