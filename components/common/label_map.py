"""The label map: class names with 1-based ids (0 is background), in the forms our consumers read.

- `label_map.pbtxt`: the TF Object Detection API `StringIntLabelMap` text proto;
- `label_map.csv`: headerless `id,name` rows, the form Model Garden's
  `TfExampleDecoderLabelMap` reads;
- `label_map.json`: `[{"id": 1, "name": ...}, ...]`.

Every form survives quotes, commas, backslashes, newlines and unicode in names.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PBTXT_FILE = "label_map.pbtxt"
CSV_FILE = "label_map.csv"
JSON_FILE = "label_map.json"


class LabelMapError(ValueError):
    """A label map that cannot be used: empty, duplicate or blank names, ids not 1..N."""


@dataclass(frozen=True)
class LabelMap:
    """Class names in id order: `names[0]` has id 1."""

    names: tuple[str, ...]

    def __post_init__(self):
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if not names:
            raise LabelMapError("label map is empty: the dataset needs at least one class")
        seen: dict[str, int] = {}
        for i, name in enumerate(names, start=1):
            if not isinstance(name, str) or not name.strip():
                raise LabelMapError(
                    f"class id {i} has a blank name {name!r}; give every class a name"
                )
            if "\r" in name:  # Model Garden's CSV reader (tf.io.gfile lines) drops every \r
                raise LabelMapError(
                    f"class id {i} name {name!r} holds a carriage return (\\r), which Model "
                    "Garden's CSV label map reader cannot read back; remove it"
                )
            if name in seen:
                raise LabelMapError(
                    f"class name {name!r} is used by ids {seen[name]} and {i}; names must be unique"
                )
            seen[name] = i

    def __len__(self) -> int:
        return len(self.names)

    def items(self) -> list[tuple[int, str]]:
        return list(enumerate(self.names, start=1))

    def id_of(self, name: str) -> int:
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise KeyError(f"class {name!r} is not in the label map {list(self.names)}") from None

    def name_of(self, class_id: int) -> str:
        if not 1 <= class_id <= len(self.names):
            raise KeyError(f"class id {class_id} is outside the label map's 1..{len(self.names)}")
        return self.names[class_id - 1]

    # --- construction from (id, name) pairs -------------------------------------------------

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, str]], source: str = "label map") -> LabelMap:
        """Build from (id, name) pairs in any order; ids must be exactly 1..N."""
        by_id: dict[int, str] = {}
        for class_id, name in pairs:
            if isinstance(class_id, bool) or not isinstance(class_id, int):
                raise LabelMapError(
                    f"{source}: class id {class_id!r} of {name!r} is not an integer"
                )
            if class_id in by_id:
                raise LabelMapError(
                    f"{source}: id {class_id} is given twice ({by_id[class_id]!r} and {name!r})"
                )
            by_id[class_id] = name
        expected = list(range(1, len(by_id) + 1))
        if sorted(by_id) != expected:
            raise LabelMapError(
                f"{source}: class ids must be 1..{len(by_id)} with no gaps (0 is background), "
                f"got {sorted(by_id)}"
            )
        try:
            return cls(tuple(by_id[i] for i in expected))
        except LabelMapError as e:  # blank, duplicate or empty names: say where they came from
            raise LabelMapError(f"{source}: {e}") from None

    @classmethod
    def from_categories(cls, categories: list[dict]) -> LabelMap:
        """From COCO `categories` ({"id", "name"} dicts)."""
        return cls.from_pairs(((c.get("id"), c.get("name")) for c in categories), "categories")

    def to_categories(self) -> list[dict]:
        return [{"id": i, "name": name, "supercategory": ""} for i, name in self.items()]

    # --- pbtxt ------------------------------------------------------------------------------

    def to_pbtxt(self) -> str:
        return "".join(
            f'item {{\n  id: {i}\n  name: "{_pb_escape(name)}"\n'
            f'  display_name: "{_pb_escape(name)}"\n}}\n'
            for i, name in self.items()
        )

    @classmethod
    def from_pbtxt(cls, text: str, source: str = PBTXT_FILE) -> LabelMap:
        pairs = []
        for item in _parse_pbtxt_items(text, source):
            if "id" not in item or "name" not in item:
                raise LabelMapError(f"{source}: item {item} lacks an id or a name")
            pairs.append((item["id"], item["name"]))
        return cls.from_pairs(pairs, source)

    # --- csv --------------------------------------------------------------------------------

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        for i, name in self.items():
            writer.writerow([i, name])
        return out.getvalue()

    @classmethod
    def from_csv(cls, text: str, source: str = CSV_FILE) -> LabelMap:
        pairs = []
        for line_no, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise LabelMapError(f"{source} row {line_no}: expected `id,name`, got {row}")
            try:
                pairs.append((int(row[0]), row[1]))
            except ValueError:
                raise LabelMapError(
                    f"{source} row {line_no}: id {row[0]!r} is not an integer"
                ) from None
        return cls.from_pairs(pairs, source)

    # --- json -------------------------------------------------------------------------------

    def to_json(self) -> str:
        rows = [{"id": i, "name": name} for i, name in self.items()]
        return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = JSON_FILE) -> LabelMap:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelMapError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise LabelMapError(f'{source}: expected a list of {{"id": ..., "name": ...}} objects')
        return cls.from_pairs(((r.get("id"), r.get("name")) for r in rows), source)

    # --- files ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write all three forms into `directory`; returns their paths by form."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "pbtxt": directory / PBTXT_FILE,
            "csv": directory / CSV_FILE,
            "json": directory / JSON_FILE,
        }
        paths["pbtxt"].write_text(self.to_pbtxt(), encoding="utf-8")
        paths["csv"].write_text(self.to_csv(), encoding="utf-8", newline="")
        paths["json"].write_text(self.to_json(), encoding="utf-8")
        return paths

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read any form, chosen by suffix; a directory means its label_map.json."""
        path = Path(path)
        if path.is_dir():
            path = path / JSON_FILE
        readers = {".pbtxt": cls.from_pbtxt, ".csv": cls.from_csv, ".json": cls.from_json}
        if path.suffix not in readers:
            raise LabelMapError(f"{path}: unknown label map form; use .pbtxt, .csv or .json")
        return readers[path.suffix](path.read_text(encoding="utf-8-sig"), str(path))


# --- protobuf text format strings -----------------------------------------------------------

_PB_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _pb_escape(text: str) -> str:
    """Escape like protobuf's text_format with as_utf8=True: non-ASCII stays as UTF-8."""
    out = []
    for ch in text:
        if ch in _PB_ESCAPES:
            out.append(_PB_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return "".join(out)


_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<punct>[{}:])|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>-?\d+)""",
    re.DOTALL,
)
_SIMPLE_UNESCAPES = {
    "n": b"\n", "r": b"\r", "t": b"\t", '"': b'"', "'": b"'", "\\": b"\\",
    "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v", "?": b"?",
}  # fmt: skip


def _pb_unescape(literal: str, source: str) -> str:
    body = literal[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _SIMPLE_UNESCAPES:
            out += _SIMPLE_UNESCAPES[nxt]
            i += 2
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1 :])
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        elif nxt in "xX":
            m = re.match(r"[0-9A-Fa-f]{1,2}", body[i + 2 :])
            if not m:
                raise LabelMapError(f"{source}: bad \\x escape in {literal}")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        else:
            raise LabelMapError(f"{source}: unknown escape \\{nxt} in {literal}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise LabelMapError(f"{source}: string {literal} is not valid UTF-8") from None


def _tokens(text: str, source: str):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise LabelMapError(f"{source} line {line}: cannot parse {text[pos : pos + 20]!r}")
        pos = m.end()
        for kind in ("str", "punct", "word", "num"):
            if m.group(kind) is not None:
                yield kind, m.group(kind)


def _parse_pbtxt_items(text: str, source: str) -> list[dict]:
    """The `item { ... }` blocks of a StringIntLabelMap, with scalar fields only."""
    tokens = list(_tokens(text, source))
    items, i = [], 0

    def expect(kind, value=None):
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != kind or (value and tokens[i][1] != value):
            got = tokens[i][1] if i < len(tokens) else "end of file"
            raise LabelMapError(f"{source}: expected {value or kind}, got {got!r}")
        i += 1
        return tokens[i - 1][1]

    while i < len(tokens):
        expect("word", "item")
        if i < len(tokens) and tokens[i] == ("punct", ":"):
            i += 1
        expect("punct", "{")
        item: dict = {}
        while i < len(tokens) and tokens[i] != ("punct", "}"):
            field = expect("word")
            expect("punct", ":")
            if i < len(tokens) and tokens[i][0] == "num":
                item[field] = int(tokens[i][1])
                i += 1
            else:
                parts = [_pb_unescape(expect("str"), source)]
                while i < len(tokens) and tokens[i][0] == "str":  # "a" "b" concatenates
                    parts.append(_pb_unescape(tokens[i][1], source))
                    i += 1
                item[field] = "".join(parts)
        expect("punct", "}")
        items.append(item)
    return items


parse_pbtxt_items = _parse_pbtxt_items  # public: readers of legacy maps (ids from 0, gaps) use it
