"""The text files of an export (label lists, subset lists, annotation rows), read as UTF-8."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path, where: str) -> str:
    """The file decoded as UTF-8 (a BOM dropped); `where` names it in the error otherwise."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{where} is not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} cannot be "
            "decoded (a Latin-1 or Windows code page file?). CVAT writes UTF-8: save the file as "
            "UTF-8 (e.g. `iconv -f latin1 -t utf-8`) and try again"
        ) from None
