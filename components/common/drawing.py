"""Drawing for the HTML reports (evaluate-model's, measure-corrections'): frames at thumbnail size
with boxes, mask outlines and labels, as inline base64 JPEG, and the pages' shared style."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

THUMBNAIL_SIZE = 512
MAX_UPSCALE = 2.0  # small images are drawn larger, so labels stay readable
JPEG_QUALITY = 80
CLASS_COLOURS = [
    (31, 119, 180), (255, 127, 14), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (23, 190, 207), (188, 189, 34), (127, 127, 127), (0, 0, 128),
]  # fmt: skip

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
.note{color:#555;font-size:13px;max-width:900px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #ddd;padding:6px;background:#fafafa}
figcaption{font-size:12px;color:#333;max-width:512px}
img{display:block;max-width:100%}
""".strip()


def class_colour(class_id: int) -> tuple[int, int, int]:
    return CLASS_COLOURS[(int(class_id) - 1) % len(CLASS_COLOURS)]


def thumbnail_canvas(pixels: np.ndarray) -> tuple[Image.Image, float]:
    """The picture (uint8 [H, W, 3]) resized to thumbnail size, and the scale applied."""
    height, width = pixels.shape[:2]
    scale = min(THUMBNAIL_SIZE / max(height, width), MAX_UPSCALE)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.fromarray(pixels).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return canvas, scale


def label_font(scale: float):
    """A font for labels on a canvas drawn at `scale`."""
    size = max(11, round(12 * max(1.0, scale / 1.5)))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def jpeg_base64(image: Image.Image) -> str:
    """The image as base64 JPEG, for a data: URI."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    picture = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    return np.asarray(picture.resize(size, Image.Resampling.NEAREST)) > 0


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch a pixel outside it (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def grow(mask: np.ndarray) -> np.ndarray:
    """The mask and its 4-neighbours."""
    grown = mask.copy()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def dashed_rectangle(draw: ImageDraw.ImageDraw, box, colours, width: int, dash: float = 6):
    """Dashes alternating between `colours`."""
    x0, y0, x1, y1 = box
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)),
                               ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):  # fmt: skip
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(steps):
            t0, t1 = i / steps, (i + 1) / steps
            start = (ax + (bx - ax) * t0, ay + (by - ay) * t0)
            end = (ax + (bx - ax) * t1, ay + (by - ay) * t1)
            draw.line((*start, *end), fill=colours[i % len(colours)], width=width)


def draw_label(draw: ImageDraw.ImageDraw, corner, text: str, colour, font, above: bool):
    """`text` on a `colour` tag at `corner`, above or below it, kept inside the canvas."""
    x, y = corner
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 4
    canvas_w, canvas_h = draw.im.size
    y0 = y - th if above else y
    y0 = min(max(0, y0), canvas_h - th)
    x0 = min(max(0, x), max(0, canvas_w - tw))
    draw.rectangle((x0, y0, x0 + tw, y0 + th), fill=colour)
    brightness = sum(c * k for c, k in zip(colour, (0.299, 0.587, 0.114)))
    ink = (0, 0, 0) if brightness > 150 else (255, 255, 255)
    draw.text((x0 + 2 - left, y0 + 2 - top), text, fill=ink, font=font)
