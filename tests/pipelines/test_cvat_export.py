"""The demo's input is what CVAT's "Export task dataset → COCO 1.0" downloads."""

import json
import zipfile

from cvat_kfp.components.common.dataset import Dataset
from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.export_annotations.export import run_export_annotations
from cvat_kfp.components.export_annotations.formats import detect_format
from cvat_kfp.pipelines.cvat_export import write_cvat_coco_export


def test_the_zip_has_cvat_coco_layout_and_fields(tmp_path):
    dataset = make_shapes_dataset(tmp_path / "shapes", num_images=4, seed=1, num_groups=2)
    archive = write_cvat_coco_export(dataset, tmp_path / "export.zip")

    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        instances = json.loads(zipped.read("annotations/instances_default.json"))
        zipped.extractall(tmp_path / "extracted")
    images = {f"images/default/{image['file_name']}" for image in instances["images"]}
    assert names == {"annotations/instances_default.json"} | images
    assert set(instances) == {"licenses", "info", "categories", "images", "annotations"}
    assert all(c["supercategory"] == "" for c in instances["categories"])
    assert all(a["attributes"] == {"occluded": False} for a in instances["annotations"])
    assert all("group" not in image for image in instances["images"])  # CVAT writes none
    assert detect_format(tmp_path / "extracted") == "COCO 1.0"


def test_export_annotations_reads_it_back_whole(tmp_path):
    dataset = make_shapes_dataset(tmp_path / "shapes", num_images=5, seed=2)
    archive = write_cvat_coco_export(dataset, tmp_path / "export.zip")

    run_export_annotations(tmp_path / "out", tmp_path / "report.md", source=str(archive))

    original, read_back = Dataset.load(dataset), Dataset.load(tmp_path / "out")
    assert read_back.metadata() == original.metadata()
    assert [a["bbox"] for a in read_back.annotations] == [a["bbox"] for a in original.annotations]
