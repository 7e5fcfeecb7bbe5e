"""Write a Dataset as CVAT writes a "COCO 1.0" export (with images), for the demo and the tests.

`make_shapes_dataset` writes our own Dataset layout (`annotations.json` beside `images/`); a user
brings what CVAT's "Export task dataset → COCO 1.0" downloads instead: a zip holding
`annotations/instances_<subset>.json` and the images under `images/<subset>/`, with CVAT's
`licenses`/`info` blocks, empty `supercategory`, and an `attributes` mapping (at least `occluded`)
on every annotation. Feeding the pipelines that layout exercises the path a real export takes.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from cvat_kfp.components.common.dataset import Dataset

CVAT_SUBSET = "default"
CVAT_INFO = {
    "contributor": "",
    "date_created": "",
    "description": "",
    "url": "",
    "version": "",
    "year": "",
}


def cvat_coco_instances(dataset: Dataset) -> dict:
    """The instances JSON CVAT writes for one subset of a task."""
    categories = [
        {"id": category["id"], "name": category["name"], "supercategory": ""}
        for category in dataset.categories
    ]
    images = [
        {
            "id": image["id"],
            "width": image["width"],
            "height": image["height"],
            "file_name": image["file_name"],
            "license": 0,
            "flickr_url": "",
            "coco_url": "",
            "date_captured": 0,
        }
        for image in dataset.images
    ]
    annotations = [
        {
            "id": annotation["id"],
            "image_id": annotation["image_id"],
            "category_id": annotation["category_id"],
            "segmentation": annotation.get("segmentation", []),
            "area": annotation["area"],
            "bbox": annotation["bbox"],
            "iscrowd": annotation.get("iscrowd", 0),
            "attributes": {"occluded": False},
        }
        for annotation in dataset.annotations
    ]
    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": CVAT_INFO,
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }


def write_cvat_coco_export(dataset_dir: str | Path, archive: str | Path) -> Path:
    """Zip the Dataset at `dataset_dir` into `archive` in CVAT's COCO 1.0 export layout."""
    dataset = Dataset.load(dataset_dir)
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zipped:
        instances = json.dumps(cvat_coco_instances(dataset))
        zipped.writestr(f"annotations/instances_{CVAT_SUBSET}.json", instances)
        for image in dataset.images:
            zipped.write(dataset.image_path(image), f"images/{CVAT_SUBSET}/{image['file_name']}")
    partial.replace(archive)
    return archive
