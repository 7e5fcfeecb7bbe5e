"""KFP face of export-model; the work is in exporter.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from cvat_kfp.components.common.component_image import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def export_model(
    model: Input[Model],
    exported_model: Output[Model],
    model_card: Output[Markdown],
    test_metrics: Input[Metrics] = None,
    evaluation: Input[Dataset] = None,
    checkpoint: str = "best",
    tflite: str = "auto",
    destination_uri: str = "",
):
    """Exports a trained model as a SavedModel (and TFLite) that serves CVAT-ready detections.

    The serving signature takes one uint8 image [1, H, W, 3] (serving_default) or its encoded
    bytes (serve_image_bytes) and returns boxes normalized to the original image
    [ymin, xmin, ymax, xmax], class ids 1..N and names, scores, num_detections, and full-image
    masks for Mask R-CNN models.

    Args:
        model: The trained Model (train-tfod / train-maskrcnn).
        exported_model: saved_model/, label_map.json, classes.csv (CVAT's label order),
            model_card.md, export.json (with the score thresholds when evaluation is given),
            and model.tflite when exported.
        model_card: Preset, dataset lineage, training steps, metrics, score thresholds and
            label map.
        test_metrics: Optional metrics of evaluate-model, shown in the model card.
        evaluation: Optional evaluation output of evaluate-model: its per-class score
            thresholds (calibrated on the val split) go into export.json and the model card,
            and preannotate and the CVAT function use them when given no threshold.
        checkpoint: "best" (the best val AP, the default) or "latest".
        tflite: "auto" (for the mobile presets), "yes" or "no".
        destination_uri: Optional gs:// URI or path to copy the export to as well; the copy is
            complete before it becomes visible (a _SUCCESS marker written last).
    """
    from cvat_kfp.components.export_model.exporter import run_export_model

    result = run_export_model(
        model.path,
        exported_model.path,
        model_card.path,
        evaluation.path if evaluation is not None else None,
        test_metrics=dict(test_metrics.metadata) if test_metrics is not None else None,
        checkpoint=checkpoint,
        tflite=tflite,
        destination_uri=destination_uri,
    )
    exported_model.metadata.update(result.metadata["exported_model"])
