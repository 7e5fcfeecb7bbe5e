"""The export_annotations face, called as the KFP executor calls it: artifacts in, nothing else."""

from kfp.dsl import Dataset, Markdown

from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.export_annotations.component import export_annotations


def test_the_face_writes_the_report_and_metadata_and_leaves_no_temp_folder(tmp_path, temp_dir):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=3, seed=1)
    dataset = Dataset(uri=str(tmp_path / "outputs" / "dataset"))
    report = Markdown(uri=str(tmp_path / "outputs" / "report"))

    export_annotations.python_func(dataset=dataset, report=report, source=str(source))

    assert list(temp_dir.iterdir()) == []
    assert (tmp_path / "outputs" / "report").read_text().startswith("# Validation report")
    assert dataset.metadata["num_images"] == 3 and dataset.metadata["sources"] == [str(source)]
