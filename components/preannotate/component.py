"""KFP face of preannotate; the work is in preannotate.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from cvat_kfp.components.common.component_image import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def preannotate(
    exported_model: Input[Model],
    predictions: Output[Dataset],
    report: Output[Markdown],
    cvat_url: str,
    task_id: str,
    score_threshold: float = -1.0,
    mask_format: str = "polygon",
    unknown_labels: str = "error",
    existing_annotations: str = "append",
    batch_size: int = 16,
    dry_run: bool = False,
):
    """Runs an exported model on a CVAT task's frames and uploads the predictions to the task.

    CVAT credentials come from the environment only (CVAT_ACCESS_TOKEN, or CVAT_USERNAME and
    CVAT_PASSWORD; optional CVAT_ORGANIZATION), mapped from a Kubernetes Secret in the pipelines.

    Args:
        exported_model: The exported model (export-model).
        predictions: The predictions as a COCO file (predictions.json), uploaded or not; once
            uploaded, uploaded_shapes.json: each shape created, with the id CVAT gave it, its
            frame, label and points (what measure-corrections compares the reviewed task with).
        report: Frames, shapes per label, what was skipped and why.
        cvat_url: The CVAT server, e.g. https://cvat.example.com (credentials go in the Secret).
        task_id: The CVAT task id to pre-annotate (a number; a string so that pipelines can
            leave it empty to skip the step).
        score_threshold: Lowest score of a prediction that is kept. -1 (the default): each
            label's threshold as the exported model carries it (calibrated on the val split by
            evaluate-model; 0.5 where it carries none).
        mask_format: For Mask R-CNN models: "polygon" or "mask" (CVAT masks).
        unknown_labels: Model labels the task lacks: "error" (fail, listing them) or "skip".
        existing_annotations: "append" to the task's annotations or "replace" them.
        batch_size: Frames per upload request.
        dry_run: Write predictions.json only; upload nothing.
    """
    from cvat_kfp.components.preannotate.preannotate import run_preannotate

    result = run_preannotate(
        exported_model.path,
        predictions.path,
        report_path=report.path,
        cvat_url=cvat_url,
        task_id=task_id,
        score_threshold=score_threshold,
        mask_format=mask_format,
        unknown_labels=unknown_labels,
        existing_annotations=existing_annotations,
        batch_size=batch_size,
        dry_run=dry_run,
    )
    predictions.metadata.update(result.metadata["predictions"])
