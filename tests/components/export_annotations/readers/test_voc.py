"""PASCAL VOC 1.1 reader: boxes as CVAT writes them, label maps, subsets, masks by order."""

import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.readers import voc
from cvat_kfp.components.export_annotations.readers.segmentation_mask import VOC_PALETTE

from ._formats_helpers import (
    RecordingBuilder,
    build,
    entries,
    instances_per_class,
    locations,
    read,
    write,
    write_image,
)

CAT = """<object><name>cat</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
  <occluded>1</occluded><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>8</ymax></bndbox>
  <attributes><attribute><name>color</name><value>black</value></attribute></attributes>
</object>"""
PERSON = """<object><name>person</name><truncated/><difficult/><pose/>
  <bndbox><xmin>20.5</xmin><ymin>10</ymin><xmax>30</xmax><ymax>25</ymax></bndbox>
  <part><name>head</name><bndbox><xmin>22</xmin><ymin>10</ymin><xmax>26</xmax><ymax>14</ymax>
  </bndbox></part><actions><jumping>1</jumping><walking>0</walking></actions>
</object>"""


def _xml(filename, *objects, size=(40, 30)):
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{size_xml}{''.join(objects)}</annotation>"


def _export(root, objects=(CAT, PERSON), labelmap=None):
    write(root / "Annotations/a.xml", _xml("a.jpg", *objects))
    write_image(root / "JPEGImages/a.jpg")
    write(root / "ImageSets/Main/train.txt", "a\n")
    if labelmap is not None:
        write(root / "labelmap.txt", labelmap)
    return root


def test_boxes_attributes_and_parts_are_read_as_cvat_writes_them(tmp_path):
    builder = read(voc, _export(tmp_path / "export"))
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("cat", "head", "person")  # no label map: sorted names
    assert dataset.images[0]["subset"] == "train" and dataset.images[0]["width"] == 40
    cat, person, head = dataset.annotations
    assert cat["bbox"] == [2, 3, 10, 5]  # x = xmin, width = xmax - xmin: no 1-based shift
    assert cat["attributes"] == {
        "difficult": False,
        "truncated": True,
        "occluded": True,
        "pose": "Left",
        "color": "black",
    }
    assert person["bbox"] == [20.5, 10, 9.5, 15]
    assert person["attributes"] == {"jumping": True, "walking": False}  # empty tags: no attribute
    assert head["bbox"] == [22, 10, 4, 4] and head["attributes"] == {"part_of": 2}
    assert builder.report.entries == []


def test_a_label_map_orders_the_classes_and_names_the_background(tmp_path):
    labelmap = (
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\nperson:192,128,128:head,hand:jumping"
        "\ncat:64,0,0::\ndog:64,0,128::\n"
    )
    background = "<object><name>background</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
    background += "<xmax>5</xmax><ymax>5</ymax></bndbox></object>"
    builder = read(voc, _export(tmp_path / "export", (CAT, PERSON, background), labelmap))
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("person", "cat", "dog", "hand", "head")
    assert instances_per_class(dataset) == {"cat": 1, "person": 1, "head": 1}
    assert locations(builder, "background-object") == ["Annotations/a.xml object 3"]


def test_a_class_missing_from_the_label_map_is_refused(tmp_path):
    builder = read(voc, _export(tmp_path / "export", labelmap="cat:1,2,3::\n"))
    assert locations(builder, "class-unknown") == [
        "Annotations/a.xml object 2",
        "Annotations/a.xml object 2 part 1",
    ]
    with pytest.raises(ValueError, match="name:r,g,b:parts:actions"):
        read(voc, _export(tmp_path / "bad", labelmap="cat:1,2,3\n"))


def test_subset_lists(tmp_path):
    root = _export(tmp_path / "export")
    for name in "bcd":
        write(root / f"Annotations/{name}.xml", _xml(f"{name}.jpg"))
        write_image(root / f"JPEGImages/{name}.jpg")
    write(root / "ImageSets/Main/train.txt", "\n# a comment\na\nb\n")
    write(root / "ImageSets/Main/val.txt", "c\n")
    write(root / "ImageSets/Main/trainval.txt", "a\nb\nc\n")  # VOC's union: not a subset
    write(root / "ImageSets/Main/cat_train.txt", "a  1\nb -1\n")  # a per-class list: tags
    write(root / "ImageSets/Main/test.txt", "e\n")  # listed, no XML: an image without objects
    write_image(root / "JPEGImages/e.png")
    builder = read(voc, root)
    dataset = build(builder, tmp_path)

    subsets = {i["file_name"]: i.get("subset") for i in dataset.images}
    assert subsets == {
        "a.jpg": "train",
        "b.jpg": "train",
        "c.jpg": "val",
        "d.jpg": None,
        "e.png": "test",
    }
    assert [e.code for e in builder.report.entries] == ["image-tags-not-kept", "annotation-missing"]


@pytest.mark.parametrize(
    "box, action, code",
    [
        ("<xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>4</ymax>", "skipped", "box-inverted"),
        ("<xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>4</ymax>", "refused", "box-malformed"),
        ("<xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>", "refused", "box-malformed"),
        ("<xmin>inf</xmin><ymin>1</ymin><xmax>2</xmax><ymax>4</ymax>", "refused", "box-malformed"),
    ],
)
def test_bad_boxes_are_named_in_the_report(tmp_path, box, action, code):
    bad = f"<object><name>cat</name><bndbox>{box}</bndbox></object>"
    builder = read(
        voc, _export(tmp_path / "export", (CAT, bad, "<object><name>cat</name></object>"))
    )
    (entry,) = entries(builder, code)
    assert (entry.action, entry.location) == (action, "Annotations/a.xml object 2")
    assert locations(builder, "box-missing") == ["Annotations/a.xml object 3"]


def test_malformed_xml_is_refused_with_its_file(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "Annotations/b.xml", "<annotation>\n  <object>")
    builder = read(voc, root)
    (entry,) = entries(builder, "xml-malformed")
    assert (entry.action, entry.location, entry.message) == (
        "refused", "Annotations/b.xml", "not well-formed XML (line 2, column 11: no element found)"
    )  # fmt: skip


DTD_REFUSED = (
    "a document type declaration <!DOCTYPE annotation> at line 1: DTDs and entity declarations "
    "are not allowed (an entity can read local files or expand without bound; CVAT, PASCAL VOC "
    "and LabelMe never write one). Remove the <!DOCTYPE ...> block"
)
ENTITY_BOMB = (
    '<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
    "<annotation><filename>&b;</filename></annotation>"
)
EXTERNAL_ENTITY = (
    '<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/hostname">]>\n'
    "<annotation><filename>&secret;</filename></annotation>"
)


@pytest.mark.parametrize("document", [ENTITY_BOMB, EXTERNAL_ENTITY], ids=["bomb", "external"])
@pytest.mark.parametrize("layout", ["Annotations/b.xml", "b.xml"])
def test_dtds_and_entities_are_refused_by_file(tmp_path, document, layout):
    root = tmp_path / "export"
    if layout.startswith("Annotations"):
        _export(root)
    else:  # the flat layout: XMLs beside their images
        write(root / "a.xml", _xml("a.jpg", CAT))
        write_image(root / "a.jpg")
    write(root / layout, document)
    builder = read(voc, root)
    (entry,) = entries(builder, "xml-dtd-forbidden")
    assert (entry.action, entry.location, entry.message) == ("refused", layout, DTD_REFUSED)


def test_paths_that_leave_the_export_are_refused(tmp_path):
    root = _export(tmp_path / "export")
    write(root / "Annotations/b.xml", _xml("../../b.jpg", CAT))
    write(root / "ImageSets/Main/train.txt", "a\n../c\n")
    builder = read(voc, root)
    assert locations(builder, "path-escapes") == ["ImageSets/Main/train.txt", "Annotations/b.xml"]


def test_the_flat_layout_reads_xmls_beside_their_images(tmp_path):
    root = tmp_path / "export"
    write(root / "sub/a.xml", _xml("a.jpg", CAT))
    write_image(root / "sub/a.jpg")
    assert voc.detect(root) == []  # nothing at the top level to peek at
    write(root / "b.xml", _xml("b.jpg", CAT))
    write_image(root / "b.jpg")
    assert voc.detect(root) == ["PASCAL VOC 1.1"]

    dataset = build(read(voc, root), tmp_path)
    assert sorted(i["file_name"] for i in dataset.images) == ["b.jpg", "sub/a.jpg"]


def _instance_png(path, indices):
    """An RGB instance (or class) map painted with VOC's palette from an index array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(VOC_PALETTE, np.uint8)[indices]).save(path)


def test_instance_masks_in_object_order_become_the_objects_masks(tmp_path):
    root = _export(tmp_path / "export")
    objects = np.zeros((30, 40), np.uint8)
    objects[3:8, 2:12], objects[10:25, 21:30], objects[2, :] = 1, 2, 255  # 255: the void border
    classes = np.where(objects == 1, 8, np.where(objects == 2, 15, 0))  # VOC: 8 cat, 15 person
    _instance_png(root / "SegmentationObject/a.png", objects)
    _instance_png(root / "SegmentationClass/a.png", classes)
    dataset = build(read(voc, root), tmp_path)

    cat, person, head = dataset.annotations
    assert cat["area"] == 50 and cat["bbox"] == [2, 3, 10, 5]
    assert cat["attributes"]["pose"] == "Left" and isinstance(cat["segmentation"], dict)
    assert person["area"] == 9 * 15 and head["segmentation"] == []  # parts stay boxes


def test_a_label_map_without_colours_matches_masks_by_the_voc_colour_of_each_index(tmp_path):
    labelmap = "# label:color_rgb:parts:actions\nbackground:::\ncat:::\nperson::head:\n"
    root = _export(tmp_path / "export", labelmap=labelmap)
    objects = np.zeros((30, 40), np.uint8)
    objects[3:8, 2:12], objects[10:25, 21:30] = 1, 2
    classes = np.where(objects == 1, 1, np.where(objects == 2, 2, 0))  # the label map's indexes
    _instance_png(root / "SegmentationObject/a.png", objects)
    _instance_png(root / "SegmentationClass/a.png", classes)
    builder = read(voc, root)
    dataset = build(builder, tmp_path)

    assert dataset.label_map.names == ("cat", "person", "head")
    cat, person, _ = dataset.annotations
    assert cat["area"] == 50 and person["area"] == 9 * 15
    assert builder.report.entries == []  # no masks-not-matched


def test_instances_that_do_not_match_the_objects_leave_the_boxes(tmp_path):
    root = _export(tmp_path / "export")
    objects = np.zeros((30, 40), np.uint8)
    objects[3:8, 2:12] = 1  # one instance for two objects
    _instance_png(root / "SegmentationObject/a.png", objects)
    builder = read(voc, root)
    dataset = build(builder, tmp_path)

    assert [a["segmentation"] for a in dataset.annotations] == [[], [], []]
    assert locations(builder, "masks-not-matched") == ["SegmentationObject/a.png"]


def test_detect(tmp_path):
    assert voc.detect(_export(tmp_path / "export")) == ["PASCAL VOC 1.1"]
    write(tmp_path / "labelme/a.xml", "<annotation><object><polygon/></object></annotation>")
    assert voc.detect(tmp_path / "labelme") == []


# --- conformance ----------------------------------------------------------------------------


def _source_objects(xml_files):
    """(per-class object counts, object count) straight from the XMLs."""
    names = [
        o.findtext("name").strip() for p in xml_files for o in ET.parse(p).getroot().iter("object")
    ]
    return Counter(names), len(names)


def _source_boxes(path):
    return [
        [float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        for o in ET.parse(path).getroot().findall("object")
    ]


def test_bccd(shared_test_data, tmp_path):
    root = shared_test_data / "bccd_voc/BCCD"
    xml_files = sorted((root / "Annotations").glob("*.xml"))
    per_class, count = _source_objects(xml_files)
    lists = {
        s: (root / f"ImageSets/Main/{s}.txt").read_text().split() for s in ("train", "val", "test")
    }

    builder = read(voc, root)
    dataset = build(builder, tmp_path)

    assert len(dataset.images) == len(xml_files) == 364
    assert len(dataset.annotations) == count == 4888
    assert instances_per_class(dataset) == per_class == {"RBC": 4155, "WBC": 372, "Platelets": 361}
    assert dataset.label_map.names == ("Platelets", "RBC", "WBC")
    assert builder.report.entries == []
    subsets = Counter(i["subset"] for i in dataset.images)
    assert (
        subsets
        == {s: len(ids) for s, ids in lists.items()}
        == {"train": 205, "val": 87, "test": 72}
    )
    by_image = dataset.annotations_by_image()
    for image in dataset.images[::40]:  # coordinates as in the XML: x = xmin, w = xmax - xmin
        xml = root / "Annotations" / (image["file_name"][: -len(".jpg")] + ".xml")
        expected = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in _source_boxes(xml)]
        assert [a["bbox"] for a in by_image[image["id"]]] == expected
    zero = [a for a in dataset.annotations if a["area"] == 0]
    assert len(zero) == 2  # BloodImage_00338 and _00343: kept, the TFRecord stage skips them


def test_cvat_voc_fixtures(shared_test_data, tmp_path):
    base = shared_test_data / "datumaro_cvat-ai/tests/assets/voc_dataset"

    builder = read(voc, base / "voc_dataset1")
    dataset = build(builder, tmp_path)
    assert len(dataset.images) == 2  # 2007_000002 is listed with an image but has no XML
    assert instances_per_class(dataset) == {"cat": 1, "person": 1, "head": 1}
    assert [e.code for e in builder.report.entries] == [
        "image-tags-not-kept",  # the per-class lists mark 11 tags
        "masks-not-matched",  # 1 bicycle instance for the cat and the person
        "annotation-missing",
    ]

    builder = read(voc, base / "voc_dataset2", RecordingBuilder())  # a label map, no images
    per_class, count = _source_objects(sorted((base / "voc_dataset2/Annotations").glob("*.xml")))
    assert count == 4 and len(builder.class_names) == 20  # 22 labels less background, ignored
    with pytest.raises(ReportError, match="a.jpg"):
        build(builder, tmp_path)
    missing = locations(builder, "image-missing")
    assert missing == [f"Annotations/{n}.xml" for n in ("@", "a", "b", "c", "d")]
    assert locations(builder, "background-object") == ["Annotations/a.xml object 1"]
    assert Counter(label for label, _ in builder.shapes) + Counter(["background"]) == per_class

    dataset = build(read(voc, base / "voc_dataset3"), tmp_path)  # blank and # lines in the list
    assert [(i["file_name"], i["subset"]) for i in dataset.images] == [("2007_000001.jpg", "train")]
    assert instances_per_class(dataset) == {"cat": 1}


def test_labelme_examples_voc(shared_test_data, tmp_path):
    """labelme's VOC output: float coordinates, empty <truncated/>, no ImageSets."""
    root = shared_test_data / "labelme_examples/examples/bbox_detection/data_dataset_voc"
    per_class, count = _source_objects(sorted((root / "Annotations").glob("*.xml")))
    builder = read(voc, root)
    dataset = build(builder, tmp_path)
    assert len(dataset.images) == 3 and len(dataset.annotations) == count
    assert instances_per_class(dataset) == per_class
    assert all("attributes" not in a for a in dataset.annotations)
    assert builder.report.entries == []


def test_labelformat_voc_with_weird_file_names(shared_test_data, tmp_path):
    """Real COCO photos with spaces and dots in their names; the XMLs lack <source>."""
    fixtures = shared_test_data / "labelformat_fixtures/tests/fixtures/object_detection"
    root = tmp_path / "export"  # the fixture keeps XMLs and photos apart: link them into VOC's
    for xml in (fixtures / "PascalVOC").glob("*.xml"):
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / xml.name).symlink_to(xml)
    (root / "JPEGImages").symlink_to(fixtures / "COCO/data")
    per_class, count = _source_objects(sorted((fixtures / "PascalVOC").glob("*.xml")))

    dataset = build(read(voc, root), tmp_path)
    assert sorted(i["file_name"] for i in dataset.images) == [
        "a-weird Filename.asdf.jpg",
        "aNother-weird__ filename.with.many.characters.jpg",
    ]
    assert len(dataset.annotations) == count == 16 and instances_per_class(dataset) == per_class


def test_raccoon_xmls_without_their_images(shared_test_data, tmp_path):
    """200 VOC XMLs in one folder (the flat layout); the photos were not copied."""
    root = shared_test_data / "raccoon_tfod/annotations"
    per_class, count = _source_objects(sorted(root.glob("*.xml")))
    assert voc.detect(root) == ["PASCAL VOC 1.1"]
    builder = read(voc, root, RecordingBuilder())

    assert len(build(builder, tmp_path, skip_bad_images=True).images) == 0
    assert len(locations(builder, "image-missing")) == len(builder.sources) == 200
    assert Counter(label for label, _ in builder.shapes) == per_class == {"raccoon": 217}
    assert count == 217
