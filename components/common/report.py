"""The validation report: every stage records what it fixed, skipped or refused, and where.

Saved as `report.json` (the record) plus `report.md` and `report.html` (for people and the KFP UI).
A stage fails when anything was refused, after saving the report, so the user can read why.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

FIXED = "fixed"
SKIPPED = "skipped"
REFUSED = "refused"
NOTE = "note"
ACTIONS = (REFUSED, SKIPPED, FIXED, NOTE)

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"

# Rendered views list at most this many entries per (action, code); report.json keeps them all.
MAX_RENDERED_PER_CODE = 50


@dataclass(frozen=True)
class Entry:
    """One thing a stage did to the user's data, or refused to do.

    `code` is a short stable slug (e.g. "box-clipped") to count and filter by; `location` names the
    source: a file, an image, an annotation id.
    """

    stage: str
    action: str
    code: str
    message: str
    location: str = ""


class ReportError(ValueError):
    """Raised when a stage refused input; the message lists what was refused and where."""


class Report:
    """An ordered list of entries for one stage (or several, once merged)."""

    def __init__(self, stage: str, entries: list[Entry] | None = None):
        self.stage = stage
        self.entries: list[Entry] = list(entries or [])

    def add(self, action: str, code: str, message: str, location: str = "") -> Entry:
        if action not in ACTIONS:
            raise ValueError(f"report action must be one of {ACTIONS}, got {action!r}")
        entry = Entry(self.stage, action, code, message, str(location))
        self.entries.append(entry)
        return entry

    def fixed(self, code: str, message: str, location: str = "") -> Entry:
        return self.add(FIXED, code, message, location)

    def skipped(self, code: str, message: str, location: str = "") -> Entry:
        return self.add(SKIPPED, code, message, location)

    def refused(self, code: str, message: str, location: str = "") -> Entry:
        return self.add(REFUSED, code, message, location)

    def note(self, code: str, message: str, location: str = "") -> Entry:
        return self.add(NOTE, code, message, location)

    def extend(self, entries) -> None:
        self.entries.extend(entries)

    def merge(self, other: Report) -> None:
        self.entries.extend(other.entries)

    def of(self, action: str) -> list[Entry]:
        return [e for e in self.entries if e.action == action]

    @property
    def refusals(self) -> list[Entry]:
        return self.of(REFUSED)

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per action and code, e.g. {"fixed": {"box-clipped": 3}}."""
        counts = Counter((e.action, e.code) for e in self.entries)
        out: dict[str, dict[str, int]] = {}
        for action in ACTIONS:
            codes = {code: n for (a, code), n in sorted(counts.items()) if a == action}
            if codes:
                out[action] = codes
        return out

    def raise_if_refused(self, what: str = "input") -> None:
        refusals = self.refusals
        if not refusals:
            return
        shown = "\n".join(f"  - {_located(e)}" for e in refusals[:20])
        more = (
            f"\n  ... and {len(refusals) - 20} more (see report.json)" if len(refusals) > 20 else ""
        )
        raise ReportError(f"{self.stage}: refused {len(refusals)} {what} item(s):\n{shown}{more}")

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "summary": self.summary(),
            "entries": [asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        return cls(data.get("stage", ""), [Entry(**e) for e in data.get("entries", [])])

    @classmethod
    def load(cls, path: str | Path) -> Report:
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_JSON
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def save(self, directory: str | Path) -> Path:
        """Write report.json, report.md and report.html into `directory`; returns the JSON path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / REPORT_JSON
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        (directory / REPORT_MARKDOWN).write_text(self.to_markdown(), encoding="utf-8")
        (directory / REPORT_HTML).write_text(self.to_html(), encoding="utf-8")
        return path

    def _grouped(self):
        """(action, code, entries) in a stable order: refused first, then skipped, fixed, notes."""
        groups: dict[tuple[str, str], list[Entry]] = {}
        for e in self.entries:
            groups.setdefault((e.action, e.code), []).append(e)
        for action in ACTIONS:
            for (a, code), entries in sorted(groups.items()):
                if a == action:
                    yield action, code, entries

    def to_markdown(self) -> str:
        lines = [f"# Validation report: {self.stage}", ""]
        if not self.entries:
            lines.append("Nothing was fixed, skipped or refused.")
            return "\n".join(lines) + "\n"
        lines += ["| action | code | count |", "|---|---|---|"]
        for action, code, entries in self._grouped():
            lines.append(f"| {action} | {code} | {len(entries)} |")
        for action, code, entries in self._grouped():
            lines += ["", f"## {action}: {code} ({len(entries)})", ""]
            for e in entries[:MAX_RENDERED_PER_CODE]:
                lines.append(f"- {markdown_cell(_located(e))}")
            if len(entries) > MAX_RENDERED_PER_CODE:
                rest = len(entries) - MAX_RENDERED_PER_CODE
                lines.append(f"- ... and {rest} more in report.json")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        esc = html.escape
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>Validation report: {esc(self.stage)}</title>",
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
            ".refused{color:#b00}.skipped{color:#a60}.fixed{color:#060}</style></head><body>",
            f"<h1>Validation report: {esc(self.stage)}</h1>",
        ]
        if not self.entries:
            parts.append("<p>Nothing was fixed, skipped or refused.</p>")
        else:
            parts.append("<table><tr><th>action</th><th>code</th><th>count</th></tr>")
            for action, code, entries in self._grouped():
                parts.append(
                    f"<tr class='{action}'><td>{action}</td><td>{esc(code)}</td>"
                    f"<td>{len(entries)}</td></tr>"
                )
            parts.append("</table>")
            for action, code, entries in self._grouped():
                parts.append(
                    f"<h2 class='{action}'>{action}: {esc(code)} ({len(entries)})</h2><ul>"
                )
                for e in entries[:MAX_RENDERED_PER_CODE]:
                    parts.append(f"<li>{esc(_located(e))}</li>")
                if len(entries) > MAX_RENDERED_PER_CODE:
                    rest = len(entries) - MAX_RENDERED_PER_CODE
                    parts.append(f"<li>... and {rest} more in report.json</li>")
                parts.append("</ul>")
        parts.append("</body></html>\n")
        return "".join(parts)


def _located(entry: Entry) -> str:
    return f"{entry.location}: {entry.message}" if entry.location else entry.message


def write_output(path: str | Path, text: str) -> None:
    """A face's Markdown or HTML output: `text` at `path`, its folder made first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def markdown_cell(text) -> str:
    """Text safe inside a Markdown table cell: backslashes and pipes escaped, line breaks as
    spaces."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")
