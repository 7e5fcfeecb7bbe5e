"""Every XML an export holds is read here: with defusedxml, refusing DTDs and so entities (an
entity can pull in a local file or expand a few bytes into gigabytes), and with errors that name
the file, the line and the column (counted from 1, as editors do). CVAT, PASCAL VOC and LabelMe
exports never hold a DTD.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from xml.parsers import expat

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import DefusedXMLParser


class XmlFileError(ValueError):
    """An XML file that cannot be read; the message names the file and says why. `code` is the
    report code ("xml-malformed", "xml-dtd-forbidden" or "xml-unreadable"), `reason` the message
    without the file name."""

    def __init__(self, where: str, code: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.code, self.reason = where, code, reason


def parse(path: Path, where: str | None = None) -> ET.Element:
    """The root element of the file at `path` (`where` names it in errors)."""
    parser = _parser()
    with _reading(path, where, parser):
        return ET.parse(path, parser=parser).getroot()


def iterparse(
    path: Path, where: str | None = None, events=("start", "end")
) -> Iterator[tuple[str, ET.Element]]:
    """ElementTree's iterparse over the file, hardened likewise."""
    parser = _parser()
    with _reading(path, where, parser):
        yield from ET.iterparse(path, events, parser=parser)


def root_tag(path: Path, where: str | None = None) -> str:
    """The root element's tag (reads no further)."""
    return next(iterparse(path, where, events=("start",)))[1].tag


def problem(path: Path, where: str | None = None) -> str | None:
    """Why the file is not readable XML, or None when it is (reads it whole)."""
    try:
        for _, element in iterparse(path, where, events=("end",)):
            element.clear()  # keeps a large file from being held whole
    except XmlFileError as e:
        return str(e)
    return None


def _parser() -> DefusedXMLParser:
    return DefusedXMLParser(target=ET.TreeBuilder(), forbid_dtd=True)


class _reading:
    """Turns what the parser raises into an XmlFileError naming the file."""

    def __init__(self, path: Path, where: str | None, parser: DefusedXMLParser):
        self.where = where or Path(path).name
        self.parser = parser

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, ET.ParseError):
            line, column = error.position
            reason = expat.ErrorString(error.code) if error.code else str(error)
            code, message = (
                "xml-malformed",
                f"not well-formed XML (line {line}, column {column + 1}: {reason})",
            )
        elif isinstance(error, DefusedXmlException):
            line = self.parser.parser.CurrentLineNumber
            code, message = (
                "xml-dtd-forbidden",
                (
                    f"{_declaration(error)} at line {line}: DTDs and entity declarations are not "
                    "allowed (an entity can read local files or expand without bound; CVAT, PASCAL "
                    "VOC and LabelMe never write one). Remove the <!DOCTYPE ...> block"
                ),
            )
        elif isinstance(error, OSError):
            code, message = "xml-unreadable", f"cannot be read ({error.strerror or error})"
        else:
            return False
        raise XmlFileError(self.where, code, message) from None


def _declaration(error: DefusedXmlException) -> str:
    if isinstance(error, DTDForbidden):
        return f"a document type declaration <!DOCTYPE {error.name}>"
    if isinstance(error, EntitiesForbidden):
        return f"an entity declaration {error.name!r}"
    return "an external entity reference"
