"""LabelMe 3.0 reader: CVAT's flat layout and CSAIL's, polygons, boxes, masks, parts."""

import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cvat_kfp.components.export_annotations.readers import labelme

from ._formats_helpers import (
    build,
    instances_per_class,
    locations,
    read,
    shape_lines,
    write,
    write_image,
)


def _polygon(name, points, *, object_id, extra=""):
    pts = "".join(f"<pt><x>{x}</x><y>{y}</y></pt>" for x, y in points)
    return (
        f"<object><name>{name}</name><id>{object_id}</id>{extra}<polygon>{pts}</polygon></object>"
    )


def _segm(name, mask, *, object_id, extra=""):
    return (
        f"<object><name>{name}</name><id>{object_id}</id>{extra}<segm><box><xmin>1</xmin></box>"
        f"<mask>{mask}</mask></segm></object>"
    )


def _xml(filename, *objects, size=(40, 30)):
    size_xml = f"<imagesize><nrows>{size[1]}</nrows><ncols>{size[0]}</ncols></imagesize>"
    return f"<annotation><filename>{filename}</filename>{''.join(objects)}{size_xml}</annotation>"


def _mask_png(path, size=(40, 30), box=(5, 5, 15, 10), alpha_only=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 4), np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = (0, 0, 0, 8) if alpha_only else (255, 203, 0, 153)
    Image.fromarray(pixels, "RGBA").save(path)


OBJECTS = (
    _polygon(
        "car",
        [(1, 1), (11, 1), (11, 6)],
        object_id=0,
        extra='<occluded>yes</occluded><attributes>color=red, n="3", k=2</attributes>',
    ),
    _polygon(
        "car",
        [(20, 2), (30, 2), (30, 12), (20, 12)],
        object_id=1,
        extra="<type>bounding_box</type>",
    ),
    _segm("plate", "a_mask_2.png", object_id=2, extra="<occluded>no</occluded>"),
)


def test_cvat_flat_layout_with_a_subset_folder(tmp_path):
    root = tmp_path / "export"
    write(root / "default/a.xml", _xml("a.jpg", *OBJECTS))
    write_image(root / "default/a.jpg")
    _mask_png(root / "default/Masks/a_mask_2.png")
    assert labelme.detect(root) == ["LabelMe 3.0"]
    builder = read(labelme, root)
    dataset = build(builder, tmp_path)

    assert dataset.images[0] == {
        "id": 1,
        "file_name": "default/a.jpg",
        "width": 40,
        "height": 30,
        "subset": "default",
    }
    polygon, box, mask = dataset.annotations
    assert polygon["segmentation"] == [[1, 1, 11, 1, 11, 6]]
    assert polygon["attributes"] == {"color": "red", "n": "3", "k": 2, "occluded": True}
    assert box["bbox"] == [20, 2, 10, 10] and box["segmentation"] == []
    assert mask["bbox"] == [5, 5, 10, 5] and mask["area"] == 50  # an alpha-only pixel counts
    assert mask["attributes"] == {"occluded": False}
    assert builder.report.entries == []


@pytest.mark.parametrize(
    "document, code, message",
    [
        ("<annotation>\n<filename>a.jpg</annotation>", "xml-malformed",
         "not well-formed XML (line 2, column 18: mismatched tag)"),
        ('<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>\n'
         "<annotation><filename>&b;</filename></annotation>", "xml-dtd-forbidden",
         "a document type declaration <!DOCTYPE annotation> at line 1: DTDs and entity "
         "declarations are not allowed (an entity can read local files or expand without bound; "
         "CVAT, PASCAL VOC and LabelMe never write one). Remove the <!DOCTYPE ...> block"),
    ],
)  # fmt: skip
def test_unreadable_xml_is_refused_with_its_file_line_and_column(tmp_path, document, code, message):
    root = tmp_path / "export"
    write(root / "default/a.xml", _xml("a.jpg", *OBJECTS))
    write_image(root / "default/a.jpg")
    write(root / "default/b.xml", document)
    builder = read(labelme, root)
    assert [(e.action, e.code, e.location, e.message) for e in builder.report.refusals] == [
        ("refused", code, "default/b.xml", message)
    ]


def test_csail_layout(tmp_path):
    root = tmp_path / "export"
    write(root / "Annotations/folder/a.xml", _xml("a.jpg", *OBJECTS))
    write_image(root / "Images/folder/a.jpg")
    _mask_png(root / "Masks/folder/a_mask_2.png", alpha_only=False)
    assert labelme.detect(root) == ["LabelMe 3.0"]
    dataset = build(read(labelme, root), tmp_path)

    assert dataset.images[0]["file_name"] == "folder/a.jpg"
    assert dataset.images[0]["subset"] == "folder"
    assert [a["area"] for a in dataset.annotations] == [25, 100, 50]


def test_parts_deleted_objects_and_unusable_shapes(tmp_path):
    root = tmp_path / "export"
    parts = "<parts><hasparts>1</hasparts><ispartof></ispartof></parts>"
    objects = (
        _polygon("car", [(1, 1), (11, 1), (11, 6)], object_id=0, extra=parts),
        _polygon(
            "wheel",
            [(2, 2), (4, 2), (4, 4)],
            object_id=1,
            extra="<parts><hasparts/><ispartof>0</ispartof></parts>",
        ),
        _polygon("car", [(1, 1), (5, 5), (1, 5)], object_id=2, extra="<deleted>1</deleted>"),
        _polygon("car", [(1, 1), (5, 5)], object_id=3),
        _segm("car", "nowhere.png", object_id=4),
        _segm("car", "small.png", object_id=5),
        "<object><name>car</name><id>6</id></object>",
        _polygon("", [(1, 1), (5, 5), (1, 5)], object_id=7),
    )
    write(root / "a.xml", _xml("a.jpg", *objects))
    write_image(root / "a.jpg")
    _mask_png(root / "Masks/small.png", size=(20, 15))
    builder = read(labelme, root)
    dataset = build(builder, tmp_path)

    car, wheel = dataset.annotations
    assert car["attributes"] == {"labelme_id": 0}
    assert wheel["attributes"] == {"labelme_id": 1, "part_of": 0}
    where = "a.xml object {0} (id {0})".format
    assert [(e.code, e.location) for e in shape_lines(builder)] == [
        ("object-deleted", where(2)),
        ("polygon-too-few-points", where(3)),
        ("mask-missing", where(4)),
        ("shape-missing", where(6)),
        ("label-missing", where(7)),
        ("mask-size", where(5)),
    ]


def test_paths_that_leave_the_export_are_refused_or_skipped(tmp_path):
    root = tmp_path / "export"
    write(root / "a.xml", _xml("../a.jpg", OBJECTS[0]))
    write(root / "b.xml", _xml("b.jpg", _segm("car", "../../m.png", object_id=0)))
    write_image(root / "b.jpg")
    builder = read(labelme, root)
    assert locations(builder, "image-name-invalid") == ["a.xml"]
    assert locations(builder, "mask-missing") == ["b.xml object 0 (id 0)"]


def test_without_imagesize_a_mask_gives_the_size(tmp_path):
    root = tmp_path / "export"
    write(root / "a.xml", _xml("a.jpg", OBJECTS[2]).replace("<imagesize>", "<x>"))
    write(root / "a.xml", (root / "a.xml").read_text().replace("</imagesize>", "</x>"))
    write_image(root / "a.jpg", (80, 60))  # twice the mask: rescaled, same aspect ratio
    _mask_png(root / "Masks/a_mask_2.png")
    builder = read(labelme, root)
    dataset = build(builder, tmp_path)
    assert dataset.annotations[0]["area"] == 200
    assert locations(builder, "image-rescaled") == ["a.xml"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("a1", {"a1": True}),
        ("gfd lkj lkj hi", {"gfd lkj lkj hi": True}),
        ('k=v, n="12", f=1.5, i=7, b=false', {"k": "v", "n": "12", "f": 1.5, "i": 7, "b": False}),
        (r"t=a\,b\=c, q\=k=\"x\"", {"t": "a,b=c", "q=k": '"x"'}),
    ],
)
def test_cvat_attribute_text(text, expected):
    assert labelme.parse_attributes(text) == expected


# --- conformance ----------------------------------------------------------------------------


def _source_objects(xml):
    objects = ET.parse(xml).getroot().findall("object")
    kept = [o for o in objects if (o.findtext("deleted") or "0").strip() != "1"]
    return Counter(o.findtext("name").strip() for o in kept), len(objects)


@pytest.mark.parametrize(
    "fixture, xml, subset",
    [
        ("datumaro_cvat-ai/tests/assets/labelme_dataset", "img1.xml", None),
        (
            "datumaro_openvino/tests/assets/labelme_dataset",
            "Annotations/subset1/img1.xml",
            "subset1",
        ),
        ("labelme3_csail", "Annotations/example_folder/img1.xml", "example_folder"),
    ],
)
def test_labelme_fixtures(shared_test_data, tmp_path, fixture, xml, subset):
    root = shared_test_data / fixture
    per_class, count = _source_objects(root / xml)
    assert labelme.detect(root) == ["LabelMe 3.0"]
    builder = read(labelme, root)
    dataset = build(builder, tmp_path)

    assert len(dataset.images) == 1 and dataset.images[0].get("subset") == subset
    assert instances_per_class(dataset) == per_class
    assert len(dataset.annotations) == count and builder.report.entries == []
    kinds = Counter(
        "mask" if isinstance(a["segmentation"], dict) else "polygon" if a["segmentation"] else "box"
        for a in dataset.annotations
    )
    if fixture == "labelme3_csail":  # the 2560x1920 reference: a window and a masked plate
        assert kinds == {"polygon": 1, "mask": 1}
        x, y, w, h = dataset.annotations[1]["bbox"]  # the mask's pixels, within 1 of <box>
        assert max(map(abs, (x - 1457, y - 1671.75, x + w - 1559, y + h - 1706.75))) <= 1
    else:  # the scaled-down copy: parts (hasparts 3,4 and 6), two masks, one bounding_box
        assert kinds == {"polygon": 4, "mask": 2, "box": 1}
        attributes = [a.get("attributes", {}) for a in dataset.annotations]
        part_of = {a.get("labelme_id"): a.get("part_of") for a in attributes}
        assert part_of == {None: None, 2: None, 3: 2, 4: 2, 5: None, 6: 5}
