"""export_model under kfp.local: an imported trained Model exported and copied to a destination."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl
from kfp.dsl import Markdown, Model

from cvat_kfp.components.common import storage
from cvat_kfp.components.export_model.component import export_model

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


class Exported(NamedTuple):
    exported_model: Model
    model_card: Markdown


@dsl.pipeline
def export_imported_model(model_uri: str, destination_uri: str) -> Exported:
    """A component alone cannot take input artifacts under kfp.local: import the Model first."""
    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model)
    task = export_model(model=model.output, tflite="no", destination_uri=destination_uri)
    return Exported(task.outputs["exported_model"], task.outputs["model_card"])


def test_export_model_runs_locally(tiny_retinanet, tmp_path, kfp_local):
    destination = tmp_path / "published" / "shapes-v1"

    run = export_imported_model(model_uri=str(tiny_retinanet), destination_uri=str(destination))

    exported = Path(run.outputs["exported_model"].path)
    for name in ("saved_model/saved_model.pb", "classes.csv", "label_map.json", "export.json"):
        assert (exported / name).is_file(), name
    assert not (exported / "model.tflite").exists()  # tflite: no
    metadata = run.outputs["exported_model"].metadata
    assert metadata["preset"] == "retinanet-mobilenetv2-light"
    assert metadata["class_names"] == ["circle", "square", "triangle"]
    assert metadata["destination_uri"] == str(destination)
    card = Path(run.outputs["model_card"].path).read_text()
    assert card.startswith("# Model card: retinanet-mobilenetv2-light")
    assert storage.is_complete(str(destination))
    copied = json.loads((destination / "export.json").read_text())
    assert copied["export_id"] == metadata["export_id"]


def test_the_face_documents_the_signature_and_keeps_its_parameters():
    doc = export_model.python_func.__doc__
    assert "serving_default" in doc and "serve_image_bytes" in doc
    spec = export_model.component_spec
    assert spec.inputs["test_metrics"].optional
    assert spec.inputs["tflite"].default == "auto"
    assert spec.inputs["checkpoint"].default == "best"
