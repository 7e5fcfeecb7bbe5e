"""correction-report: what the annotators did to a model's pre-annotations of a CVAT task.

Run it once the task is reviewed (its jobs completed), with the `predictions` artifact of the
training run whose preannotate step uploaded to the task:

    import-predictions (predictions_uri) ───────────────┐
    export-reviewed-task (as CVAT for images 1.1: sources) ┴ measure-corrections

A pipeline of its own, not a step of the training pipelines: the review happens hours or days
after the training run uploaded, and a run cannot wait for people. Its outputs (Metrics, Markdown,
HTML) sit on the run, and the KFP run-comparison page sets rounds side by side.
"""

from kfp import dsl
from kfp.dsl import Dataset

from cvat_kfp.components.export_annotations.component import export_annotations
from cvat_kfp.components.measure_corrections.component import measure_corrections
from cvat_kfp.pipelines.dataset_preparation import use_cvat_secret

REVIEW_FORMAT = "CVAT for images 1.1"


@dsl.pipeline(name="correction-report")
def correction_report(
    predictions_uri: str,
    cvat_url: str,
    task_id: str,
    cvat_secret_name: str = "cvat-credentials",
    max_frames_drawn: int = 12,
):
    """Measures what annotators kept, corrected, relabelled, deleted and added after a model pre-annotated a CVAT task.

    Args:
        predictions_uri: URI of the `predictions` artifact of the preannotate step that uploaded to the task (gs://..., or a local path with kfp.local).
        cvat_url: The CVAT server holding the task.
        task_id: The CVAT task id, as reviewed.
        cvat_secret_name: Kubernetes Secret with CVAT credentials (keys access_token, or username and password); never put credentials in parameters.
        max_frames_drawn: How many of the most corrected frames the HTML report draws before and after review.
    """  # noqa: E501 (one line per description: the Kubeflow UI shows them as written)
    predictions = dsl.importer(artifact_uri=predictions_uri, artifact_class=Dataset, reimport=False)
    predictions.set_display_name("import-predictions")
    export = export_annotations(
        cvat_url=cvat_url, task_ids=task_id, annotation_format=REVIEW_FORMAT
    )
    export.set_display_name("export-reviewed-task")
    export.set_caching_options(False)  # the task changes as the review goes on
    use_cvat_secret(export, cvat_secret_name)
    measure = measure_corrections(
        predictions=predictions.output,
        reviewed=export.outputs["dataset"],
        max_frames_drawn=max_frames_drawn,
    )
    measure.set_display_name("measure-corrections")
