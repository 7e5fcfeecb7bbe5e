"""The evaluation report: one self-contained HTML page for the KFP UI's HTML viewer.

Nothing is fetched: curves are inline SVG, images base64 JPEG thumbnails (common/drawing: at most
THUMBNAIL_SIZE px on the long side, quality JPEG_QUALITY), styles inline. Ground truth is drawn
dashed black and white (visible on any background, unlike any one colour) with its mask
outlined; predictions solid in their class colour, masks filled, labelled with class and score.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..common.drawing import (
    STYLE,
    class_colour,
    dashed_rectangle,
    draw_label,
    grow,
    jpeg_base64,
    label_font,
    outline,
    resize_mask,
    thumbnail_canvas,
)
from ..common.label_map import LabelMap
from .coco_eval import CocoEvalResult
from .confusion import ImageMatches
from .tfrecords import SplitImage

GT_COLOURS = ((255, 255, 255), (0, 0, 0))  # dashes alternate; label white on black
STAT_DESCRIPTIONS = {
    "AP": "AP at IoU .50:.95 (the COCO metric)",
    "AP50": "AP at IoU .50",
    "AP75": "AP at IoU .75",
    "APs": "AP, small objects (area < 32²)",
    "APm": "AP, medium objects (32² to 96²)",
    "APl": "AP, large objects (area > 96²)",
    "AR1": "AR, 1 detection per image",
    "AR10": "AR, 10 detections per image",
    "AR100": "AR, 100 detections per image",
    "ARs": "AR100, small objects",
    "ARm": "AR100, medium objects",
    "ARl": "AR100, large objects",
}


@dataclass
class ReportImage:
    image: SplitImage
    pixels: np.ndarray  # uint8 [H, W, 3]
    gt: list[dict]  # COCO annotations (pixel bbox, RLE segmentation)
    det_boxes: np.ndarray  # [N, 4] x, y, w, h pixels, score >= threshold
    det_classes: np.ndarray
    det_scores: np.ndarray
    det_masks: list[np.ndarray] | None
    matches: ImageMatches


def render_report(
    *,
    title: str,
    description: dict,
    split_description: str,
    evaluations: list[CocoEvalResult],
    per_class: list[dict],
    categories: list[str],
    matrix: list[list[int]],
    images: list[ReportImage],
    label_map: LabelMap,
    thresholds: dict,
    iou_threshold: float,
    num_detections: int,
) -> str:
    """`thresholds`: "used" (which score thresholds the matrix and images count, in words),
    "calibration" (thresholds.json's table) and "test" (evaluate's per-class test F1)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        _model_table(description, split_description, num_detections),
        "<h2>Summary</h2>",
        _summary_table(evaluations),
        "<p class='note'>COCO metrics count every detection, whatever its score. n/a: the test "
        "split has no object of that size (COCO reports -1, kept as -1 in the metrics).</p>",
        "<h2>Per class</h2>",
        _per_class_table(per_class, evaluations),
        "<h2>Precision-recall curves</h2>",
        "<p class='note'>COCO's interpolated precision at 101 recall points (area all, 100 "
        "detections per image): solid at IoU .50, dashed the mean over IoU .50:.95 (its area "
        "is the AP). Boxes in blue"
        + (", masks in orange" if len(evaluations) > 1 else "")
        + ".</p>",
        "<div class='grid'>",
        *(_pr_figure(row, evaluations) for row in per_class),
        "</div>",
        "<h2>Score thresholds</h2>",
        _thresholds_section(thresholds),
        "<h2>Confusion matrix</h2>",
        f"<p class='note'>Detections {thresholds['used']}, per image in "
        "descending score order, each matched to the unmatched ground-truth object it overlaps "
        f"most if the box IoU is &ge; {iou_threshold:g}, whatever the classes (a wrong class is "
        "a confusion). Unmatched objects are misses (predicted background), unmatched "
        "detections false detections (true background); detections on crowd regions and crowd "
        "objects are not counted. Rows: true class; columns: predicted class.</p>",
        _matrix_table(categories, matrix),
        f"<h2>Test images ({len(images)})</h2>",
        "<p class='note'>Most errors first (misses + false detections + confusions at the "
        "thresholds above). Dashed black and white: ground truth (mask outlined). "
        f" Solid, coloured by class: predictions {thresholds['used']}, "
        "labelled with class and score.</p>",
        "<div class='grid'>",
        *(_image_figure(item, label_map) for item in images),
        "</div></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _thresholds_section(thresholds: dict) -> str:
    calibration, test = thresholds["calibration"], thresholds["test"]
    by_id = {row["id"]: row for row in test["classes"]}
    default = f"{test['default_threshold']:g}"
    rows = []
    for row in calibration["classes"]:
        colour = "rgb{}".format(class_colour(row["id"]))
        if row["calibrated"]:
            how = f"highest F1 on {html.escape(str(calibration['split']))}"
            val = "".join(f"<td>{row[k]:.3f}</td>" for k in ("precision", "recall", "f1"))
        else:
            how, val = html.escape(row["reason"]), "<td></td><td></td><td></td>"
        found = by_id[row["id"]]
        rows.append(
            f"<tr><td class='l'><span style='color:{colour}'>&#9632;</span> "
            f"{html.escape(row['name'])}</td><td>{row['threshold']:.3f}</td>"
            f"<td class='l'>{how}</td><td>{row['val_objects']}</td>{val}"
            f"<td>{found['test_objects']}</td><td>{found['threshold']:.3f}</td>"
            f"<td>{found['precision']:.3f}</td><td>{found['recall']:.3f}</td>"
            f"<td>{found['f1']:.3f}</td><td>{found['f1_default']:.3f}</td></tr>"
        )
    mean_default = _fmt(float(test["mean_f1_default"]))
    mean_calibrated = _fmt(float(test["mean_f1_calibrated"]))
    return (
        f"<p class='note'>The confusion matrix and the drawn images count the detections "
        f"{thresholds['used']}. "
        "A class's calibrated threshold is the score of highest F1 on the val split (box IoU "
        f"&ge; {test['iou_threshold']:g}, one class at a time; ties: the higher precision); a "
        f"class without val objects, or without a matching detection there, keeps {default}. "
        f"Test split, mean F1 over the classes with objects: <b>{mean_calibrated}</b> at the "
        f"calibrated thresholds, <b>{mean_default}</b> at {default} for every class.</p>"
        "<table><tr><th class='l'>class</th><th>calibrated threshold</th><th class='l'>chosen</th>"
        "<th>val objects</th><th>val precision</th><th>val recall</th><th>val F1</th>"
        "<th>test objects</th><th>threshold used</th><th>test precision</th><th>test recall</th>"
        f"<th>test F1</th><th>test F1 at {default}</th></tr>{''.join(rows)}</table>"
    )


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value < 0):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _model_table(description: dict, split_description: str, num_detections: int) -> str:
    rows = [(key, value) for key, value in description.items() if value not in (None, "", {})]
    rows += [("test split", split_description), ("detections (all scores)", num_detections)]
    cells = "".join(
        f"<tr><th class='l'>{html.escape(str(k))}</th><td class='l'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table>{cells}</table>"


def _summary_table(evaluations: list[CocoEvalResult]) -> str:
    heads = "".join(f"<th>{'boxes' if e.iou_type == 'bbox' else 'masks'}</th>" for e in evaluations)
    rows = []
    for name, meaning in STAT_DESCRIPTIONS.items():
        values = "".join(f"<td>{_fmt(e.stats[name])}</td>" for e in evaluations)
        rows.append(f"<tr><th class='l'>{name}</th><td class='l'>{meaning}</td>{values}</tr>")
    return f"<table><tr><th class='l'>metric</th><th></th>{heads}</tr>{''.join(rows)}</table>"


def _per_class_table(per_class: list[dict], evaluations: list[CocoEvalResult]) -> str:
    columns = ["AP", "AP50", "AP75"]
    if len(evaluations) > 1:
        columns += ["mask_AP", "mask_AP50", "mask_AP75"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
    rows = []
    for row in per_class:
        colour = "rgb{}".format(class_colour(row["id"]))
        values = "".join(f"<td>{_fmt(row[c])}</td>" for c in columns)
        rows.append(
            f"<tr><td class='l'><span style='color:{colour}'>&#9632;</span> "
            f"{html.escape(row['name'])}</td><td>{row['id']}</td><td>{row['num_objects']}</td>"
            f"<td>{row['num_detections']}</td>{values}</tr>"
        )
    return (
        "<table><tr><th class='l'>class</th><th>id</th><th>objects</th><th>detections</th>"
        f"{head}</tr>{''.join(rows)}</table>"
    )


def _pr_figure(row: dict, evaluations: list[CocoEvalResult]) -> str:
    recall = evaluations[0].recall_thresholds
    curves = []
    for evaluation, colour in zip(evaluations, ("#1f77b4", "#ff7f0e")):
        found = row["pr_curves"][evaluation.iou_type]
        if found["iou_0.50"] is not None:
            curves.append((found["iou_0.50"], colour, ""))
            curves.append((found["iou_0.50:0.95"], colour, "5,4"))
    name = html.escape(row["name"])
    caption = f"{name}: AP {_fmt(row['AP'])}, AP50 {_fmt(row['AP50'])}"
    if "mask_AP" in row:
        caption += f"; mask AP {_fmt(row['mask_AP'])}"
    if not curves:
        caption = f"{name}: no object of this class in the test split"
    svg = pr_curve_svg(recall, curves, row["name"])
    return f"<figure><figcaption><b>{caption}</b></figcaption>{svg}</figure>"


def pr_curve_svg(recall: list[float], curves: list[tuple], name: str) -> str:
    """A 300x230 precision(recall) plot; `curves` are (precision per recall, colour, dash)."""
    width, height, left, bottom, top, right = 300, 230, 40, 34, 8, 16
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(r: float) -> float:
        return left + r * plot_w

    def y(p: float) -> float:
        return top + (1 - p) * plot_h

    parts = [
        f"<svg class='pr-curve' data-class='{html.escape(name, quote=True)}' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' role='img'>",
        f"<rect x='{left}' y='{top}' width='{plot_w}' height='{plot_h}' fill='white' "
        "stroke='#999'/>",
    ]
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(f"<line x1='{x(tick):.1f}' y1='{top}' x2='{x(tick):.1f}' "
                     f"y2='{top + plot_h}' stroke='#eee'/>")  # fmt: skip
        parts.append(f"<line x1='{left}' y1='{y(tick):.1f}' x2='{left + plot_w}' "
                     f"y2='{y(tick):.1f}' stroke='#eee'/>")  # fmt: skip
        parts.append(f"<text x='{x(tick):.1f}' y='{top + plot_h + 13}' font-size='10' "
                     f"text-anchor='middle'>{tick:.1f}</text>")  # fmt: skip
        parts.append(f"<text x='{left - 4}' y='{y(tick) + 3:.1f}' font-size='10' "
                     f"text-anchor='end'>{tick:.1f}</text>")  # fmt: skip
    parts.append(f"<text x='{left + plot_w / 2}' y='{height - 4}' font-size='11' "
                 "text-anchor='middle'>recall</text>")  # fmt: skip
    parts.append(f"<text x='11' y='{top + plot_h / 2}' font-size='11' text-anchor='middle' "
                 f"transform='rotate(-90 11 {top + plot_h / 2})'>precision</text>")  # fmt: skip
    for precision, colour, dash in curves:
        points = " ".join(
            f"{x(r):.1f},{y(max(p, 0.0)):.1f}" for r, p in zip(recall, precision, strict=True)
        )
        dashes = f" stroke-dasharray='{dash}'" if dash else ""
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.8'{dashes} "
                     f"points='{points}'/>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _matrix_table(categories: list[str], matrix: list[list[int]]) -> str:
    peak = max((max(row) for row in matrix), default=0) or 1
    head = "".join(f"<th>{html.escape(c)}</th>" for c in categories)
    rows = []
    for true_index, (name, row) in enumerate(zip(categories, matrix)):
        cells = []
        for predicted_index, count in enumerate(row):
            shade = int(255 - 150 * count / peak)
            correct = true_index == predicted_index and true_index < len(categories) - 1
            colour = f"rgb({shade},{255 if correct else shade},{shade})" if count else "white"
            cells.append(f"<td style='background:{colour}'>{count}</td>")
        rows.append(f"<tr><th class='l'>{html.escape(name)}</th>{''.join(cells)}"
                    f"<td>{sum(row)}</td></tr>")  # fmt: skip
    totals = "".join(f"<td>{sum(col)}</td>" for col in zip(*matrix))
    return (
        "<table class='confusion'><tr><th class='l'>true \\ predicted</th>"
        f"{head}<th>total</th></tr>{''.join(rows)}"
        f"<tr><th class='l'>total</th>{totals}<td></td></tr></table>"
    )


def _image_figure(item: ReportImage, label_map: LabelMap) -> str:
    data = jpeg_base64(draw_image(item, label_map))
    match = item.matches
    caption = (
        f"{html.escape(item.image.file_name)} (id {item.image.id}): {len(item.gt)} objects, "
        f"{len(item.det_scores)} detections; {len(match.missed)} missed, "
        f"{len(match.false_detections)} false, {match.num_confusions} wrong class"
    )
    return (
        f"<figure class='test-image'><img alt='{html.escape(item.image.file_name, quote=True)}' "
        f"src='data:image/jpeg;base64,{data}'><figcaption>{caption}</figcaption></figure>"
    )


def draw_image(item: ReportImage, label_map: LabelMap) -> Image.Image:
    """The image with ground truth and predictions drawn, at thumbnail size."""
    from pycocotools import mask as mask_utils

    canvas, scale = thumbnail_canvas(item.pixels)
    size = canvas.size
    font = label_font(scale)

    if item.det_masks:
        overlay = np.asarray(canvas, dtype=np.float32).copy()
        for mask, class_id in zip(item.det_masks, item.det_classes):
            small = resize_mask(mask, size)
            overlay[small] = 0.55 * overlay[small] + 0.45 * np.array(class_colour(class_id))
        canvas = Image.fromarray(overlay.astype(np.uint8))
    pixels = np.asarray(canvas).copy()
    for ann in item.gt:
        if isinstance(ann.get("segmentation"), dict):
            small = resize_mask(mask_utils.decode(ann["segmentation"]), size)
            edge = outline(small)
            pixels[grow(edge) & ~small] = GT_COLOURS[1]
            pixels[edge] = GT_COLOURS[0]
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)

    for ann in item.gt:
        x, y, bw, bh = (v * scale for v in ann["bbox"])
        dashed_rectangle(draw, (x, y, x + bw, y + bh), GT_COLOURS, width=2)
        name = label_map.name_of(ann["category_id"]) + (" (crowd)" if ann["iscrowd"] else "")
        draw_label(draw, (x, y + bh), name, GT_COLOURS[1], font, above=False)
    order = np.argsort(item.det_scores, kind="stable")  # best drawn last, on top
    for d in order:
        x, y, bw, bh = (float(v) * scale for v in item.det_boxes[d])
        colour = class_colour(item.det_classes[d])
        draw.rectangle((x, y, x + bw, y + bh), outline=colour, width=2)
        text = f"{label_map.name_of(int(item.det_classes[d]))} {item.det_scores[d]:.2f}"
        draw_label(draw, (x, y), text, colour, font, above=True)
    return canvas
