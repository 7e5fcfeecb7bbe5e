"""One export per light preset for the whole module run (exports cost tens of seconds on CPU)."""

import pytest

from tests.gcs_emulator import gcs_emulator, gcs_server  # noqa: F401


@pytest.fixture(scope="session")
def retinanet_export(tiny_retinanet, tmp_path_factory):
    """The tiny RetinaNet exported with TFLite (auto: a mobile preset) and test metrics."""
    from cvat_kfp.components.export_model.exporter import run_export_model

    outputs = tmp_path_factory.mktemp("retinanet_export")
    return run_export_model(
        tiny_retinanet,
        outputs / "exported",
        outputs / "model_card.md",
        test_metrics={"AP": 0.41, "AP50": 0.66},
    )


@pytest.fixture(scope="session")
def maskrcnn_export(tiny_maskrcnn, tmp_path_factory):
    from cvat_kfp.components.export_model.exporter import run_export_model

    outputs = tmp_path_factory.mktemp("maskrcnn_export")
    return run_export_model(tiny_maskrcnn, outputs / "exported", outputs / "model_card.md")
