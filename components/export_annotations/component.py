"""KFP face of export-annotations; the work is in export.py."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from cvat_kfp.components.common.component_image import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def export_annotations(
    dataset: Output[Dataset],
    report: Output[Markdown],
    source: str = "",
    annotation_format: str = "auto",
    cvat_url: str = "",
    task_ids: str = "",
    project_ids: str = "",
    job_ids: str = "",
    completed_jobs_only: bool = False,
    group_by_task: bool = False,
    skip_bad_images: bool = False,
):
    """Turns a CVAT export, or tasks on a CVAT server, into one validated Dataset.

    Every reader is strict: what cannot be used (a point shape, an image of another size) is
    skipped or refused with a line in the report naming where it came from.

    Args:
        dataset: The Dataset: annotations.json (COCO instances) + images/ + report.json.
        report: What was fixed, skipped or refused, and where.
        source: A CVAT export (folder, .zip, .tar.gz) at a local path, gs:// or https:// URI.
            Leave empty to pull from `cvat_url`.
        annotation_format: "auto" (detected from the files) or a CVAT format name: COCO 1.0,
            CVAT for images 1.1, CVAT for video 1.1, YOLO 1.1, PASCAL VOC 1.1, LabelMe 3.0,
            Segmentation mask 1.1, MOT 1.1, TFRecord 1.0. From a server: the format the export
            is requested in ("auto": COCO 1.0; "CVAT for images 1.1" keeps each shape's source,
            which measure-corrections needs).
        cvat_url: CVAT server URL (e.g. https://app.cvat.ai) to export the ids below from;
            ignored beside a source. Credentials come from the CVAT_ACCESS_TOKEN or
            CVAT_USERNAME/CVAT_PASSWORD environment variables (a Secret).
        task_ids: Comma-separated task ids to export from the server.
        project_ids: Comma-separated project ids to export from the server.
        job_ids: Comma-separated job ids to export from the server.
        completed_jobs_only: Export only jobs in the "completed" state.
        group_by_task: Keep each server task whole within one split.
        skip_bad_images: Skip (and count) missing, corrupt or mis-sized images instead of
            failing the run.
    """
    from cvat_kfp.components.export_annotations.export import run_export_annotations

    result = run_export_annotations(
        dataset.path,
        report.path,
        source=source,
        annotation_format=annotation_format,
        cvat_url=cvat_url,
        task_ids=task_ids,
        project_ids=project_ids,
        job_ids=job_ids,
        completed_jobs_only=completed_jobs_only,
        group_by_task=group_by_task,
        skip_bad_images=skip_bad_images,
    )
    dataset.metadata.update(result.metadata["dataset"])
