"""KFP face of evaluate-model; the work is in evaluate.py."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from cvat_kfp.components.common.component_image import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    test_tfrecords: Input[Dataset],
    metrics: Output[Metrics],
    evaluation: Output[Dataset],
    confusion_matrix: Output[ClassificationMetrics],
    ap_table: Output[Markdown],
    report: Output[HTML],
    val_tfrecords: Input[Dataset] = None,
    checkpoint: str = "best",
    score_threshold: float = -1.0,
    iou_threshold: float = 0.5,
    max_report_images: int = 24,
):
    """Evaluates a model on the test split: COCO metrics, per-class AP, confusion matrix, report.

    Args:
        model: A trained Model (train-tfod / train-maskrcnn) or an exported model (export-model).
        test_tfrecords: The test split's TFRecords (convert-to-tfrecord), same classes as the model.
        metrics: The 12 COCO stats for boxes (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
            ARs, ARm, ARl), and the same with a mask_ prefix for Mask R-CNN models. -1 (COCO's
            convention) where the test split has no object of that size. Then the test split's
            mean F1 (box IoU 0.5, over the classes with objects) at score 0.5 for every class
            (mean_F1_at_0.5) and, with val_tfrecords, at the calibrated thresholds
            (mean_F1_calibrated).
        evaluation: detections.json (COCO results form), ground_truth.json (COCO), per_class.json,
            metrics.json and thresholds.json (per class: the score threshold, with precision,
            recall and F1 on val, or the default 0.5 and why): the numbers behind the report,
            for other tools; export-model takes the thresholds from it.
        confusion_matrix: Predicted vs true class of every ground-truth object (one extra
            "background" row and column for missed objects and false detections). Per image,
            detections at or above their class's score threshold (see score_threshold), best
            first, each take the unmatched object they overlap most at box IoU >= iou_threshold,
            whatever the class.
        ap_table: Per-class AP, AP50 and AP75 (and mask AP), as a Markdown table.
        report: A self-contained HTML page: precision-recall curves per class, the score
            thresholds, and a grid of test images with ground truth and predictions drawn.
        val_tfrecords: Optional val split's TFRecords: each class's score threshold is calibrated
            on it (the score of highest F1 at box IoU 0.5; ties: the higher precision). A class
            without val objects keeps 0.5.
        checkpoint: For a trained Model: "best" (the best val AP, the default) or "latest".
        score_threshold: Lowest score that counts as a detection in the confusion matrix and the
            drawn images (COCO AP uses every detection). -1 (the default): each class's
            calibrated threshold (0.5 without val_tfrecords).
        iou_threshold: Overlap at which a detection matches a ground-truth object in the
            confusion matrix.
        max_report_images: How many test images the report draws.
    """
    from cvat_kfp.components.evaluate_model.evaluate import run_evaluate_model

    result = run_evaluate_model(
        model.path,
        test_tfrecords.path,
        evaluation.path,
        ap_table_path=ap_table.path,
        report_path=report.path,
        val_tfrecords_dir=val_tfrecords.path if val_tfrecords is not None else None,
        checkpoint=checkpoint,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_report_images=max_report_images,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    evaluation.metadata.update(result.metadata["evaluation"])
    confusion_matrix.log_confusion_matrix(result.class_names, result.confusion_matrix)
