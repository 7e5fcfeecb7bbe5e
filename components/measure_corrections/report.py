"""The correction report: Markdown (tables) and one self-contained HTML page (the same tables and
the most corrected frames drawn before and after review), drawn with common/drawing."""

from __future__ import annotations

import html
import statistics
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from ..common.dataset import Dataset, polygons_to_rle
from ..common.drawing import (
    STYLE,
    draw_label,
    jpeg_base64,
    label_font,
    outline,
    resize_mask,
    thumbnail_canvas,
)
from ..common.report import markdown_cell
from .corrections import (
    ADDED,
    CORRECTED,
    DELETED,
    IOU_BINS,
    KEPT,
    OTHER,
    RELABELLED,
    Geometry,
    Measurement,
    encoded_rle,
)

COLOURS = {
    KEPT: (44, 160, 44),
    CORRECTED: (255, 127, 14),
    RELABELLED: (148, 103, 189),
    DELETED: (214, 39, 40),
    ADDED: (31, 119, 180),
    OTHER: (127, 127, 127),
}
COLUMNS = (
    ("uploaded", "uploaded"),
    ("kept", "kept unchanged"),
    ("corrected", "corrected"),
    ("relabelled", "relabelled"),
    ("deleted", "deleted"),
    ("on_deleted_frames", "on deleted frames"),
    ("added_by_hand", "added by hand (missed)"),
    ("other", "other"),
    ("final", "final shapes"),
)
HOW_TO_READ = [
    "Each shape the model uploaded is counted once: **kept unchanged** (still `auto`, same label "
    "and geometry), **corrected** (a person changed it: CVAT made it `semi-auto`, or its geometry "
    "moved; the IoU with what was uploaded says by how much), **relabelled** (its class changed), "
    "**deleted**, or **on deleted frames** (its frame was deleted from the task since).",
    "Each shape of the reviewed task is counted once too: the model's (kept, corrected, "
    "relabelled), **added by hand** (`manual`: an object the model missed) or **other** (a model "
    "shape not from this upload, an imported file's).",
    "**Share of final shapes from the model unchanged** = kept / final shapes: the part of the "
    "finished annotation nobody had to touch. Corrected and relabelled shapes still saved drawing "
    "time; added ones are the model's misses, deleted ones its false detections.",
    "Per class, uploaded shapes count under the class the model gave them (a relabelled one "
    "under its old class), final shapes under their final class.",
]


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _rows(m: Measurement) -> list[tuple[str, dict]]:
    return [(label, m.counts(label)) for label in m.classes] + [("all", m.counts())]


def _iou_bins(ious: list[float]) -> list[tuple[str, int]]:
    edges = (0.0, *IOU_BINS, 1.0)
    bins = []
    for low, high in zip(edges, edges[1:]):
        last = high == 1.0
        n = sum(low <= v < high or (last and v == 1.0) for v in ious)
        bins.append((f"[{low:g}, {high:g}{']' if last else ')'}", n))
    return bins


def _relabels(m: Measurement) -> Counter:
    return Counter((o.label, o.reviewed.label) for o in m.outcomes if o.kind == RELABELLED)


def _deleted_ids(m: Measurement) -> list[str]:
    return [
        f"{i} (frame {o.uploaded.frame}, {o.label})"
        for o in m.outcomes
        if o.kind == DELETED
        for i in o.uploaded.ids
        if i is not None
    ]


# --- Markdown ----------------------------------------------------------------------------------


def render_markdown(m: Measurement) -> str:
    total = m.counts()
    task = m.task
    judged = total["uploaded"] - total["on_deleted_frames"]
    lines = [
        f"# Corrections to the pre-annotations of CVAT task {task.get('task_id')}",
        "",
        "| | |",
        "|---|---|",
        f"| server | {markdown_cell(task.get('cvat_url', ''))} |",
        f"| task | {task.get('task_id')} ({markdown_cell(task.get('task_name', ''))}) |",
        f"| frames pre-annotated | {len(m.frames)} |",
        f"| predictions uploaded | {total['uploaded']} (score ≥ "
        f"{task.get('score_threshold', 'n/a')}) |",
        f"| kept unchanged | {total['kept']} ({_percent(total['kept'], judged)}) |",
        f"| corrected | {total['corrected']} ({_percent(total['corrected'], judged)}) |",
        f"| relabelled | {total['relabelled']} ({_percent(total['relabelled'], judged)}) |",
        f"| deleted | {total['deleted']} ({_percent(total['deleted'], judged)}) |",
        f"| on deleted frames | {total['on_deleted_frames']} |",
        f"| added by hand (missed) | {total['added_by_hand']} |",
        f"| final shapes | {total['final']} |",
        f"| **share of final shapes from the model unchanged** | "
        f"**{_percent(total['final_kept'], total['final'])}** |",
        "",
        "Rates of kept, corrected, relabelled and deleted are of the uploaded shapes a person "
        "could review (on frames still in the task).",
        "",
        "## How to read it",
        "",
        *(f"- {line}" for line in HOW_TO_READ),
        "",
        "## Per class",
        "",
        "| class | " + " | ".join(title for _, title in COLUMNS) + " | kept share |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for label, counts in _rows(m):
        cells = " | ".join(str(counts[key]) for key, _ in COLUMNS)
        share = _percent(counts["final_kept"], counts["final"])
        name = "**all**" if label == "all" else markdown_cell(label)
        lines.append(f"| {name} | {cells} | {share} |")
    ious = m.corrected_ious()
    lines += ["", "## Corrected shapes: IoU with what was uploaded", ""]
    if ious:
        lines += [
            f"{len(ious)} corrected shape(s), median IoU {statistics.median(ious):.3f} (1: only "
            "attributes changed, or a move within CVAT's 0.01 px; below 0.5: redrawn).",
            "",
            "| IoU | shapes |",
            "|---|---|",
            *(f"| {name} | {n} |" for name, n in _iou_bins(ious)),
            "",
            "| class | corrected | median IoU | lowest IoU |",
            "|---|---|---|---|",
        ]
        for label in m.classes:
            mine = m.corrected_ious(label)
            if mine:
                lines.append(
                    f"| {markdown_cell(label)} | {len(mine)} | {statistics.median(mine):.3f} | "
                    f"{min(mine):.3f} |"
                )
    else:
        lines.append("No shape was corrected.")
    relabels = _relabels(m)
    lines += ["", "## Relabelled", ""]
    if relabels:
        lines += ["| model's class | final class | shapes |", "|---|---|---|"]
        lines += [
            f"| {markdown_cell(a)} | {markdown_cell(b)} | {n} |"
            for (a, b), n in relabels.most_common()
        ]
    else:
        lines.append("No shape was relabelled.")
    deleted = _deleted_ids(m)
    if deleted:
        shown = ", ".join(deleted[:50]) + (
            f" and {len(deleted) - 50} more" if len(deleted) > 50 else ""
        )
        lines += ["", "## Deleted shapes (CVAT ids)", "", shown]
    if m.notes:
        lines += ["", "## Notes", "", *(f"- {markdown_cell(note)}" for note in m.notes)]
    return "\n".join(lines) + "\n"


# --- HTML ----------------------------------------------------------------------------------------


def render_html(m: Measurement, reviewed: Dataset, max_frames: int) -> str:
    e = html.escape
    markdown = render_markdown(m)  # the same numbers, as tables
    total = m.counts()
    title = f"Corrections to the pre-annotations of CVAT task {m.task.get('task_id')}"
    frames = most_corrected_frames(m, max_frames)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p><b>Share of final shapes from the model unchanged: "
        f"{_percent(total['final_kept'], total['final'])}</b> ({total['final_kept']} of "
        f"{total['final']}).</p>",
        *_markdown_tables_as_html(markdown),
        f"<h2>Most corrected frames ({len(frames)})</h2>",
        "<p class='note'>Left: what the model uploaded; right: the task after review. "
        + ", ".join(
            f"<span style='color:rgb{COLOURS[k]}'>&#9632;</span> {e(k)}"
            for k in (KEPT, CORRECTED, RELABELLED, DELETED, ADDED, OTHER)
        )
        + ". Frames ranked by corrections + relabels + deletions + shapes added by hand.</p>",
        *(_frame_figure(m, reviewed, number) for number in frames),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _markdown_tables_as_html(markdown: str) -> list[str]:
    """The Markdown report's sections as HTML: headings, paragraphs, lists and tables."""
    e = html.escape
    out, table = [], []

    def flush():
        if table:
            head, *body = [
                row.strip("|").split(" | ") for row in table if not row.startswith("|--")
            ]
            cells = "".join(f"<th class='l'>{_inline(c)}</th>" for c in head)
            rows = "".join(
                "<tr>" + "".join(f"<td class='l'>{_inline(c)}</td>" for c in row) + "</tr>"
                for row in body
            )
            out.append(f"<table><tr>{cells}</tr>{rows}</table>")
            table.clear()

    for line in markdown.splitlines()[1:]:  # the title is the page's <h1>
        if line.startswith("|"):
            table.append(line.strip())
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{e(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<p class='note'>&bull; {_inline(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p class='note'>{_inline(line)}</p>")
    flush()
    return out


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in one cell or line, as HTML."""
    escaped = html.escape(text.strip().replace("\\|", "|"))
    for marker, tag in (("**", "b"), ("`", "code")):
        pieces = escaped.split(marker)
        escaped = "".join(
            piece if k % 2 == 0 or k == len(pieces) - 1 else f"<{tag}>{piece}</{tag}>"
            for k, piece in enumerate(pieces)
        )
    return escaped


def most_corrected_frames(m: Measurement, limit: int) -> list[int]:
    """Frames still in the task, by corrections + relabels + deletions + shapes added, most
    first; frames with nothing changed are left out."""
    changes: Counter = Counter()
    for o in m.outcomes:
        if o.kind in (CORRECTED, RELABELLED, DELETED):
            changes[o.uploaded.frame] += 1
    for o in m.origins:
        if o.kind == ADDED:
            changes[o.reviewed.frame] += 1
    ranked = sorted(changes.items(), key=lambda item: (-item[1], item[0]))
    drawable = [n for n, _ in ranked if n in m.frames and m.frames[n].image is not None]
    return drawable[:limit]


def _frame_figure(m: Measurement, reviewed: Dataset, number: int) -> str:
    frame = m.frames[number]
    pixels = _pixels(reviewed, frame)
    before = [
        (o.uploaded.geometry, COLOURS[o.kind], _before_text(o))
        for o in m.outcomes
        if o.uploaded.frame == number
    ]
    after = [
        (o.reviewed.geometry, COLOURS[o.kind], f"{o.reviewed.label} {o.kind}")
        for o in m.origins
        if o.reviewed.frame == number
    ]
    images = "".join(
        f"<img alt='{html.escape(side)}' src='data:image/jpeg;base64,{jpeg_base64(draw)}'>"
        for side, draw in (
            ("uploaded", draw_shapes(pixels, before, frame.width, frame.height)),
            ("reviewed", draw_shapes(pixels, after, frame.width, frame.height)),
        )
    )
    kinds = Counter(o.kind for o in m.outcomes if o.uploaded.frame == number)
    added = sum(o.kind == ADDED and o.reviewed.frame == number for o in m.origins)
    caption = (
        f"frame {number} ({html.escape(frame.name)}): "
        + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        + f"; {added} added by hand"
    )
    return (
        "<figure><div style='display:flex;gap:6px'>"
        f"{images}</div><figcaption>{caption}</figcaption></figure>"
    )


def _before_text(o) -> str:
    if o.kind == CORRECTED:
        return f"{o.label} corrected (IoU {o.iou:.2f})"
    if o.kind == RELABELLED:
        return f"{o.label} → {o.reviewed.label}"
    return f"{o.label} {o.kind}"


def _pixels(reviewed: Dataset, frame) -> np.ndarray:
    """The frame's image from the reviewed export; grey when the export holds none."""
    try:
        with Image.open(reviewed.image_path(frame.image)) as image:
            picture = image.convert("RGB")
            if picture.size != (frame.width, frame.height):
                picture = picture.resize((frame.width, frame.height))
            return np.asarray(picture)
    except (OSError, ValueError):
        return np.full((frame.height, frame.width, 3), 128, np.uint8)


def draw_shapes(pixels: np.ndarray, shapes, width: int, height: int) -> Image.Image:
    """The frame at thumbnail size with each (geometry, colour, text): boxes as rectangles,
    polygons and masks outlined."""
    canvas, scale = thumbnail_canvas(pixels)
    size = canvas.size
    outlined = np.asarray(canvas).copy()
    for geometry, colour, _ in shapes:
        if geometry.kind != "box":
            edge = outline(resize_mask(_decode(geometry, width, height), size))
            outlined[edge] = colour
    canvas = Image.fromarray(outlined)
    draw = ImageDraw.Draw(canvas)
    font = label_font(scale)
    for geometry, colour, text in shapes:
        x, y, w, h = (v * scale for v in geometry.bbox)
        if geometry.kind == "box":
            draw.rectangle((x, y, x + w, y + h), outline=colour, width=2)
        draw_label(draw, (x, y), text, colour, font, above=True)
    return canvas


def _decode(geometry: Geometry, width: int, height: int) -> np.ndarray:
    if geometry.kind == "rle":
        return mask_utils.decode(encoded_rle(geometry.rle))
    rle = polygons_to_rle(geometry.polygons, height, width)
    return mask_utils.decode(rle)
