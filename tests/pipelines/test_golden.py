"""Golden snapshots of the compiled pipelines (tests/pipelines/golden/), so that a change to what
users upload shows up in review as a diff of these files, not as a surprise on a cluster.

A snapshot is pipelines/compiled/<name>.yaml with what changes on every release normalised: the
kfp SDK version (`sdkVersion: kfp-<sdk>`) and the package version in the image names
(`<registry>/cvat-kfp:<version>`). test_compiled.py keeps pipelines/compiled/ fresh, so these are
fresh too.

Refresh them after a change that is meant (`make compile` does both steps):

    .venv/bin/cvat-kfp compile
    CVAT_KFP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/test_golden.py
"""

import os
import re
from pathlib import Path

import pytest

from cvat_kfp.components.common.component_image import PACKAGE_VERSION
from cvat_kfp.pipelines import registry

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("CVAT_KFP_UPDATE_GOLDEN") == "1"
SDK_VERSION = re.compile(r"^(\s*sdkVersion: )kfp-\S+$", re.M)
REFRESH = (
    "review the diff; if it is meant, refresh with `make compile` "
    "(or CVAT_KFP_UPDATE_GOLDEN=1 pytest tests/pipelines/test_golden.py) and commit it"
)


def normalise(compiled: str) -> str:
    text = SDK_VERSION.sub(r"\1kfp-<sdk>", compiled)
    image_version = re.compile(rf"(image: \S+/cvat-kfp):{re.escape(PACKAGE_VERSION)}(-gpu)?$", re.M)
    return image_version.sub(r"\1:<version>\2", text)


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_compiled_pipeline_matches_its_golden_snapshot(name):
    snapshot = normalise((registry.COMPILED_DIR / f"{name}.yaml").read_text())
    golden = GOLDEN_DIR / f"{name}.yaml"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(snapshot)
        return
    assert golden.is_file(), f"{golden} is missing: {REFRESH}"
    if snapshot != golden.read_text():
        import difflib

        diff = "".join(
            difflib.unified_diff(
                golden.read_text().splitlines(keepends=True),
                snapshot.splitlines(keepends=True),
                str(golden),
                f"normalised {registry.COMPILED_DIR / name}.yaml",
                n=2,
            )
        )
        pytest.fail(f"{name}: the compiled pipeline changed; {REFRESH}\n{diff[:6000]}")


def test_every_golden_snapshot_belongs_to_a_pipeline():
    stray = {p for p in GOLDEN_DIR.glob("*.yaml") if p.stem not in registry.PIPELINES}
    if UPDATE:
        for path in stray:
            path.unlink()
        return
    assert not stray, f"golden snapshots of no pipeline: {sorted(map(str, stray))}; delete them"


def test_normalising_leaves_only_release_versions_out():
    compiled = (
        "image: ghcr.io/x/cvat-kfp:{v}\nimage: ghcr.io/x/cvat-kfp:{v}-gpu\nsdkVersion: kfp-2.17.0\n"
    )
    assert normalise(compiled.format(v=PACKAGE_VERSION)) == (
        "image: ghcr.io/x/cvat-kfp:<version>\nimage: ghcr.io/x/cvat-kfp:<version>-gpu\n"
        "sdkVersion: kfp-<sdk>\n"
    )
    # another image or tag stays as it is, so that a change of registry is reviewed too
    assert (
        normalise("image: registry.example/other:1.2.3\n")
        == "image: registry.example/other:1.2.3\n"
    )
