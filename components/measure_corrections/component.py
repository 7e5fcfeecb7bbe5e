"""KFP face of measure-corrections; the work is in corrections.py."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from cvat_kfp.components.common.component_image import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def measure_corrections(
    predictions: Input[Dataset],
    reviewed: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    report_html: Output[HTML],
    max_frames_drawn: int = 12,
):
    """Measures what the annotators did to the model's pre-annotations of a CVAT task.

    Each uploaded prediction is counted once: kept unchanged, corrected (CVAT's "semi-auto", or
    its geometry moved), relabelled, deleted, or on a frame deleted since; each reviewed shape
    once: the model's, added by hand ("manual": a miss) or other.

    Args:
        predictions: The predictions of preannotate (its uploaded_shapes.json: every shape it
            created, with CVAT's id, frame, label and points).
        reviewed: The same task after review, exported as "CVAT for images 1.1" by
            export-annotations (that format keeps each shape's source).
        metrics: Counts and rates per outcome, the median IoU of corrected shapes, and the
            share of final shapes from the model unchanged (overall and per class).
        report: The same per class, with the IoU distribution and the relabellings, in Markdown.
        report_html: The tables and the most corrected frames drawn before and after review.
        max_frames_drawn: How many frames the HTML report draws.
    """
    from cvat_kfp.components.measure_corrections.corrections import run_measure_corrections

    result = run_measure_corrections(
        predictions.path,
        reviewed.path,
        report_path=report.path,
        report_html_path=report_html.path,
        max_frames_drawn=max_frames_drawn,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    report.metadata.update(result.metadata["report"])
