"""KFP face of split-dataset; the work is in split.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from cvat_kfp.components.common.component_image import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def split_dataset(
    dataset: Input[Dataset],
    train: Output[Dataset],
    val: Output[Dataset],
    test: Output[Dataset],
    summary: Output[Markdown],
    train_fraction: float = 0.8,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
    keep_cvat_subsets: bool = False,
):
    """Splits a Dataset into train, validation and test Datasets.

    Stratified by class (every class in every non-empty split where the data allows it) and
    group-aware (images of one video, track or source task never cross splits). The same input
    and seed always give byte-identical outputs, so KFP caching reuses the step.

    Args:
        dataset: The Dataset to split (annotations.json + images/), as export-annotations makes it.
        train: The training Dataset.
        val: The validation Dataset.
        test: The test Dataset.
        summary: Per-class image and instance counts per split, and anything that could not be
            honoured (a class too rare to reach every split, unassigned images).
        train_fraction: Share of images for training, in [0, 1].
        val_fraction: Share of images for validation, in [0, 1].
        test_fraction: Share of images for testing, in [0, 1]. The three may sum to less than 1;
            the rest is left out and counted in the summary.
        seed: Random seed; change it for a different split of the same data.
        stratify: Balance classes across splits (iterative stratification); off = plain shuffle.
        keep_cvat_subsets: Keep the Train/Validation/Test subsets the CVAT export carries;
            images without one are split by the fractions.
    """
    from cvat_kfp.components.split_dataset.split import run_split_dataset

    result = run_split_dataset(
        dataset.path,
        train.path,
        val.path,
        test.path,
        summary_path=summary.path,
        train_fraction=train_fraction,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=stratify,
        keep_cvat_subsets=keep_cvat_subsets,
    )
    for name, artifact in (("train", train), ("val", val), ("test", test)):
        artifact.metadata.update(result.metadata[name])
