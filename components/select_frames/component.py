"""KFP face of select-frames; the work is in selection.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from cvat_kfp.components.common.component_image import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def select_frames(
    model: Input[Model],
    ranking: Output[Dataset],
    report: Output[Markdown],
    cvat_url: str = "",
    task_id: str = "",
    images: Input[Dataset] = None,
    top_n: int = 50,
    score_threshold: float = -1.0,
    frames: str = "unannotated",
    diversity_radius: float = 0.5,
    create_task: bool = False,
    project_id: str = "",
):
    """Ranks a CVAT task's unannotated frames (or a folder's images) to choose what to label next.

    The frames the model is least sure about come first, near-duplicates spread out; optionally
    the top ones are put in a new CVAT task.

    CVAT credentials come from the environment only (CVAT_ACCESS_TOKEN, or CVAT_USERNAME and
    CVAT_PASSWORD; optional CVAT_ORGANIZATION), mapped from a Kubernetes Secret in the pipelines.

    Args:
        model: The exported model (export-model) or a trained Model (train-tfod / train-maskrcnn).
        ranking: ranking.json (every frame's uncertainty and why, the selection in rank order,
            the CVAT task made) and thumbnails/ of the selected frames.
        report: The selected frames with thumbnails, uncertainty and why, and the CVAT task.
        cvat_url: The CVAT server, e.g. https://cvat.example.com (credentials go in the Secret).
        task_id: The CVAT task whose frames to rank (a number; a string so that pipelines can
            leave it empty to skip the step). Empty when `images` is given.
        images: A folder of images to rank instead of a CVAT task (searched recursively).
        top_n: How many frames to select.
        score_threshold: The class threshold uncertainty is measured against (a detection
            scoring near it is the most uncertain): -1 for the model's calibrated per-class
            thresholds (export.json; 0.5 for a model without them), or one for every class.
        frames: "unannotated" (frames without shapes, tags or tracks, and not in a selection
            task made from this task before) or "all".
        diversity_radius: Embedding distance under which two frames count as near-duplicates
            (0: no diversity, pure uncertainty order; about 1.4 separates unrelated frames).
        create_task: Put the selected frames in a CVAT task (found again, not duplicated, when
            the same selection is made twice).
        project_id: The CVAT project of the new task (its labels); default: the source task's
            project, else a copy of the source task's labels (the model's for a folder).
    """
    from cvat_kfp.components.select_frames.selection import run_select_frames

    result = run_select_frames(
        model.path,
        ranking.path,
        report_path=report.path,
        cvat_url=cvat_url,
        task_id=task_id,
        images_dir=images.path if images is not None else "",
        top_n=top_n,
        score_threshold=score_threshold,
        frames=frames,
        diversity_radius=diversity_radius,
        create_task=create_task,
        project_id=project_id,
    )
    ranking.metadata.update(result.metadata["ranking"])
