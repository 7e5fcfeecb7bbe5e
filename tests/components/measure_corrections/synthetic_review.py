"""A synthetic round on the CVAT stand-in: a task of generated frames, a predictor whose boxes are
laid out from a seed, and a scripted "annotator" that keeps, moves, touches (attributes only),
relabels and deletes exact shares of the uploaded shapes and draws new ones, as CVAT's editor
records it. It returns what it did, so a test (or bench/measure_corrections.py) can check that
the correction report gives the same figures back."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.inference.predictor import Detections

WIDTH, HEIGHT = 96, 72
SLOTS = [(2 + 31 * k, 2) for k in range(3)]  # top-left corners of the predictions' boxes
BOX = 26  # px, the side of a predicted box
LABELS = [("cat", "any"), ("dog", "any"), ("fox", "polygon"), ("elk", "polygon")]
LABELS += [("owl", "mask"), ("bat", "mask")]
RELABEL = {"cat": "dog", "dog": "cat", "fox": "elk", "elk": "fox", "owl": "bat", "bat": "owl"}
ACTIONS = ("keep", "move", "touch", "relabel", "delete")
MOVE_PX = 3.0  # a moved shape: shifted right by this much


def frame_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(60, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


class LaidOutPredictor:
    """One to three boxes per frame in the top row of slots, labels drawn from a seed."""

    def __init__(self, frames: int, seed: int, labels=tuple(name for name, _ in LABELS)):
        self.label_map = LabelMap(tuple(labels))
        self.has_masks = False
        self.description = {"source": "synthetic"}
        rng = random.Random(seed)
        self.per_frame = []
        for _ in range(frames):
            slots = rng.sample(SLOTS, rng.randint(1, len(SLOTS)))
            self.per_frame.append([(rng.choice(labels), x, y) for x, y in sorted(slots)])

    def predict(self, image):
        found = self.per_frame.pop(0)
        h, w = image.shape[:2]
        boxes = [[y / h, x / w, (y + BOX) / h, (x + BOX) / w] for _, x, y in found]
        return Detections(
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            classes=np.array([self.label_map.id_of(n) for n, _, _ in found], np.int32),
            scores=np.full(len(found), 0.9, np.float32),
            class_names=[n for n, _, _ in found],
            masks=None,
        )


def add_task(server, task_id: int, frames: int, seed: int) -> None:
    server.add_task(
        task_id,
        labels=LABELS,
        frames=[(f"frame_{i:04d}.png", frame_png(seed * 100_000 + i)) for i in range(frames)],
    )


@dataclass
class Review:
    """What the annotator did, per class (the class the model gave; relabels also by target)."""

    actions: dict[str, Counter] = field(default_factory=dict)  # action -> class -> shapes
    added: Counter = field(default_factory=Counter)  # class -> shapes drawn by hand
    changed_frames: set = field(default_factory=set)  # frames with anything but "keep"

    def count(self, action: str, label: str | None = None) -> int:
        counts = self.actions.get(action, Counter())
        return counts[label] if label else sum(counts.values())


def review(
    server, task_id: int, predictions_dir: Path, rates: dict[str, float], added: int, seed: int
) -> Review:
    """Act on the uploaded predictions (found by the ids preannotate recorded) with exact shares:
    round(rate x predictions) of each action, the rest kept; then draw `added` rectangles by
    hand in the empty bottom row of frames."""
    record = json.loads((predictions_dir / "uploaded_shapes.json").read_text())
    predictions: dict[int, list[dict]] = {}
    for shape in record["shapes"]:
        predictions.setdefault(shape["prediction"], []).append(shape)
    order = sorted(predictions)
    rng = random.Random(seed)
    rng.shuffle(order)
    plan, start = {}, 0
    for action in ACTIONS[1:]:
        n = round(rates.get(action, 0.0) * len(order))
        plan.update((p, action) for p in order[start : start + n])
        start += n
    done = Review()
    label_ids = {name: server.label_id(task_id, name) for name, _ in LABELS}
    for prediction in sorted(predictions):
        shapes = predictions[prediction]
        action = plan.get(prediction, "keep")
        label = shapes[0]["label"]
        done.actions.setdefault(action, Counter())[label] += 1
        if action != "keep":
            done.changed_frames.add(shapes[0]["frame"])
        for shape in shapes:
            if action == "move":
                server.edit_shape(task_id, shape["id"], points=_moved(shape))
            elif action == "touch":
                server.edit_shape(task_id, shape["id"], occluded=True)
            elif action == "delete":
                server.delete_shape(task_id, shape["id"])
        if action == "relabel":
            target = RELABEL[label]
            done.actions.setdefault("relabel to", Counter())[target] += 1
            for shape in shapes:
                server.edit_shape(task_id, shape["id"], label_id=label_ids[target])
    frames = [f["frame"] for f in record["frames"]]
    for k in range(added):
        frame = frames[k % len(frames)]
        x = 2 + 31 * ((k // len(frames)) % 3)
        label = ("cat", "dog")[k % 2]
        server.draw_shape(
            task_id,
            type="rectangle",
            frame=frame,
            label_id=label_ids[label],
            points=[float(x), 40.0, float(x + 20), 66.0],
        )
        done.added[label] += 1
        done.changed_frames.add(frame)
    return done


def _moved(shape: dict) -> list[float]:
    points = list(shape["points"])
    if shape["type"] == "mask":  # the runs stay, the box moves: [..., left, top, right, bottom]
        points[-4] += MOVE_PX
        points[-2] += MOVE_PX
        return points
    return [v + MOVE_PX if k % 2 == 0 else v for k, v in enumerate(points)]
