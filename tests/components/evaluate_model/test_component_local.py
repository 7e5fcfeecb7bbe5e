"""evaluate_model under kfp.local: an imported trained Model and test TFRecords."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from cvat_kfp.components.evaluate_model.component import evaluate_model

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


class Evaluated(NamedTuple):
    metrics: Metrics
    evaluation: Dataset
    confusion_matrix: ClassificationMetrics
    ap_table: Markdown
    report: HTML


@dsl.pipeline
def evaluate_imported(model_uri: str, test_uri: str, max_report_images: int) -> Evaluated:
    """A component alone cannot take input artifacts under kfp.local: import them first."""
    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model)
    test = dsl.importer(artifact_uri=test_uri, artifact_class=Dataset)
    task = evaluate_model(
        model=model.output, test_tfrecords=test.output, max_report_images=max_report_images
    )
    return Evaluated(
        task.outputs["metrics"],
        task.outputs["evaluation"],
        task.outputs["confusion_matrix"],
        task.outputs["ap_table"],
        task.outputs["report"],
    )


def test_evaluate_model_runs_locally(tiny_retinanet, tmp_path, kfp_local):

    run = evaluate_imported(
        model_uri=str(tiny_retinanet),
        test_uri=str(tiny_retinanet.parent / "test"),
        max_report_images=2,
    )

    metrics = run.outputs["metrics"].metadata
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR100", "ARl"} <= set(metrics)
    assert 0.0 <= metrics["AP"] <= 1.0
    matrix = run.outputs["confusion_matrix"].metadata["confusionMatrix"]
    names = [c["displayName"] for c in matrix["annotationSpecs"]]
    assert names == ["circle", "square", "triangle", "background"]
    assert len(matrix["rows"]) == 4
    evaluation = Path(run.outputs["evaluation"].path)
    assert run.outputs["evaluation"].metadata["num_images"] == 8  # tests/trained_models.py
    saved = json.loads((evaluation / "metrics.json").read_text())
    assert saved["metrics"]["AP"] == pytest.approx(metrics["AP"])
    assert [r["row"] for r in matrix["rows"]] == saved["confusion_matrix"]["matrix"]
    for name in ("detections.json", "ground_truth.json", "per_class.json"):
        assert (evaluation / name).is_file(), name
    assert "| circle | 1 |" in Path(run.outputs["ap_table"].path).read_text()
    report = Path(run.outputs["report"].path).read_text()
    assert report.count("src='data:image/jpeg;base64,") == 2


def test_the_face_documents_its_outputs():
    spec = evaluate_model.component_spec
    assert set(spec.outputs) == {"metrics", "evaluation", "confusion_matrix", "ap_table", "report"}
    assert spec.inputs["checkpoint"].default == "best"
    assert spec.inputs["max_report_images"].default == 24


class Exported(NamedTuple):
    exported_model: Model


@dsl.pipeline
def evaluate_on_val_and_export(model_uri: str, val_uri: str, test_uri: str) -> Exported:
    """The training pipelines' wiring: thresholds calibrated on val, carried by the export."""
    from cvat_kfp.components.export_model.component import export_model

    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model)
    val = dsl.importer(artifact_uri=val_uri, artifact_class=Dataset)
    test = dsl.importer(artifact_uri=test_uri, artifact_class=Dataset)
    evaluate = evaluate_model(
        model=model.output, test_tfrecords=test.output, val_tfrecords=val.output,
        max_report_images=1,
    )  # fmt: skip
    export = export_model(
        model=model.output,
        test_metrics=evaluate.outputs["metrics"],
        evaluation=evaluate.outputs["evaluation"],
        tflite="no",
    )
    return Exported(export.outputs["exported_model"])


def test_thresholds_calibrated_on_val_travel_into_the_export(tiny_retinanet, kfp_local):
    run = evaluate_on_val_and_export(
        model_uri=str(tiny_retinanet),
        val_uri=str(tiny_retinanet.parent / "val"),
        test_uri=str(tiny_retinanet.parent / "test"),
    )

    exported = Path(run.outputs["exported_model"].path)
    info = json.loads((exported / "export.json").read_text())
    table = info["score_thresholds"]
    assert table["split"] == "val"
    assert [row["name"] for row in table["classes"]] == ["circle", "square", "triangle"]
    card = (exported / "model_card.md").read_text()
    assert "## Score thresholds" in card and "| mean_F1_calibrated |" in card


def test_the_face_takes_an_optional_val_split_and_defaults_to_calibrated_thresholds():
    spec = evaluate_model.component_spec
    assert spec.inputs["val_tfrecords"].optional
    assert spec.inputs["score_threshold"].default == -1.0
