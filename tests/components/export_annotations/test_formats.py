"""Format detection: an export whose XML cannot be read says which file, where and why."""

import pytest

from cvat_kfp.components.export_annotations.formats import detect_format

CVAT_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'


@pytest.mark.parametrize(
    "path, document, reason",
    [
        ("annotations.xml", CVAT_HEAD + "<meta><task></meta></annotations>",
         "annotations.xml: not well-formed XML (line 2, column 50: mismatched tag)"),
        ("annotations.xml",
         '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n'
         "<annotations>&lol2;</annotations>",
         "annotations.xml: a document type declaration <!DOCTYPE lolz> at line 1: DTDs and entity "
         "declarations are not allowed (an entity can read local files or expand without bound; "
         "CVAT, PASCAL VOC and LabelMe never write one). Remove the <!DOCTYPE ...> block"),
        ("Annotations/a.xml", "<annotation><object><bndbox></object></annotation>",
         "Annotations/a.xml: not well-formed XML (line 1, column 31: mismatched tag)"),
    ],
)  # fmt: skip
def test_nothing_detected_names_the_xml_that_cannot_be_read(tmp_path, path, document, reason):
    root = tmp_path / "export"
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(document, encoding="utf-8")
    (root / "images").mkdir()
    with pytest.raises(ValueError) as error:
        detect_format(root)
    message = str(error.value)
    assert message.startswith(f"{root}: no known CVAT export format found (top level holds [")
    assert f"]). XML that cannot be read: {reason}. Supported: COCO 1.0, " in message


def test_readable_xml_of_another_kind_is_not_called_unreadable(tmp_path):
    (tmp_path / "notes.xml").write_text("<notes><note>hello</note></notes>")
    with pytest.raises(ValueError) as error:
        detect_format(tmp_path)
    assert "cannot be read" not in str(error.value)
