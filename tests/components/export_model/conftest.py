"""One export per light preset for the whole module run (exports cost tens of seconds on CPU)."""

import pytest

from tests.gcs_emulator import gcs_emulator, gcs_server  # noqa: F401


@pytest.fixture(scope="session")
def retinanet_export(tiny_retinanet, tmp_path_factory):
    """The tiny RetinaNet exported with TFLite (auto: a mobile preset) and test metrics."""
    from cvat_kfp.components.export_model.export import export_model_dir

    output = tmp_path_factory.mktemp("retinanet_export") / "exported"
    return export_model_dir(
        tiny_retinanet,
        output,
        test_metrics={"AP": 0.41, "AP50": 0.66},
        log=lambda message: None,
    )


@pytest.fixture(scope="session")
def maskrcnn_export(tiny_maskrcnn, tmp_path_factory):
    from cvat_kfp.components.export_model.export import export_model_dir

    output = tmp_path_factory.mktemp("maskrcnn_export") / "exported"
    return export_model_dir(tiny_maskrcnn, output, log=lambda message: None)
