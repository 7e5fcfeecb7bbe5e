"""Benchmark: per-image CPU latency of the exported light presets, SavedModel vs TFLite.

For each light preset (retinanet-mobilenetv2-light, maskrcnn-mobilenetv2-light) a small model is
trained once on generated shapes (tests/trained_models.py; cached under `--out`), exported as
export-model exports it (the serving module saved as a SavedModel, and model.tflite) and timed on
CPU, one image per call:

- SavedModel: `tf.saved_model.load(...).signatures["serving_default"]` on a uint8 [1, H, W, 3]
  image, at the shapes images' 256x192 and upscaled to 640x480 and 1280x960 (the resize to the
  model's 256 px input is part of the graph; full-image masks scale with H*W);
- TFLite: `tf.lite.Interpreter` (XNNPACK, `--threads`) on the image already stretched to the
  model's S×S input (its contract: the caller resizes), so one row per preset; Mask R-CNN's
  TFLite answers 28x28 box masks, not pasted (the caller pastes them).

The Mask R-CNN trains a few steps only and scores under the default 0.05 threshold; its rows are
timed twice: as trained (few or no detections) and with `pre_nms_score_threshold: 0` (100
detections, each pasted into a full-image mask): the cost of the masks.

Figures: median and 90th percentile wall ms per image over `--runs` calls after `--warmup`, and
CPU ms per image (user + system of this process; steadier when others share the machine).

    .venv/bin/python bench/export_model.py              # both light presets (3-5 min, 2 cores)
    .venv/bin/python bench/export_model.py --runs 10 --sizes 256x192
    .venv/bin/python bench/export_model.py --presets retinanet-mobilenetv2-light

The benchmark reports; it does not fail.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.trained_models trains the models
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

LIGHT_PRESETS = ("retinanet-mobilenetv2-light", "maskrcnn-mobilenetv2-light")


def trained_model(out: Path, preset: str) -> Path:
    """A tiny trained Model of `preset`, trained once and cached under `out`."""
    from tests.trained_models import train_tiny_model

    root = out / "export_models" / preset
    model_dir = root / "model"
    if (model_dir / "model.json").is_file():
        return model_dir
    print(f"training a tiny {preset} in {root} (once) ...", flush=True)
    return train_tiny_model(root, preset)


def test_images(model_dir: Path, sizes: list[tuple[int, int]]) -> dict[str, list]:
    """The test split's images at each size (width x height), upscaled bilinearly."""
    import numpy as np
    import tensorflow as tf

    from cvat_kfp.components.common import tfrecords

    split = tfrecords.read_tfrecords(model_dir.parent / "test")
    images = []
    for where, record in itertools.islice(split.records(), 4):
        example = tfrecords.parse_example(record, where)
        images.append(tfrecords.decode_image(example.encoded, where))
    out = {}
    for width, height in sizes:
        out[f"{width}x{height}"] = [
            image
            if image.shape[:2] == (height, width)
            else np.asarray(tf.cast(tf.image.resize(image, (height, width)), tf.uint8))
            for image in images
        ]
    return out


def export(model_dir: Path, target: Path, overrides: dict | None, tflite: bool) -> Path:
    """The SavedModel (and model.tflite) as export-model writes them, into `target`."""
    import shutil

    from cvat_kfp.components.export_model.exporter import save_serving_module
    from cvat_kfp.components.inference.tflite import export_tflite
    from cvat_kfp.components.inference.trained import load_serving_module

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    module, _, _ = load_serving_module(model_dir, "best", detection_overrides=overrides)
    save_serving_module(module, target / "saved_model")
    if tflite:
        export_tflite(module, target / "model.tflite")
    return target


def timed(call, inputs: list, warmup: int, runs: int) -> dict:
    """Median / p90 wall ms and CPU ms per call, cycling through `inputs`."""
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    walls = []
    cpu_start = os.times()
    for i in range(runs):
        start = time.perf_counter()
        result = call(inputs[i % len(inputs)])
        walls.append((time.perf_counter() - start) * 1000)
    cpu_end = os.times()
    cpu = (cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) * 1000 / runs
    walls.sort()
    return {
        "median": statistics.median(walls),
        "p90": walls[min(len(walls) - 1, int(0.9 * len(walls)))],
        "cpu": cpu,
        "detections": result,
    }


def bench_savedmodel(saved_model: Path, images: dict[str, list], warmup, runs) -> list[dict]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]

    def call(image):
        return int(serve(images=tf.constant(image[None]))["num_detections"][0])

    rows = []
    for size, batch in images.items():
        rows.append({"format": "SavedModel", "image": size, **timed(call, batch, warmup, runs)})
    return rows


def bench_tflite(path: Path, images: list, threads: int, warmup, runs) -> dict:
    from cvat_kfp.components.inference.tflite import TFLiteDetector

    detector = TFLiteDetector(path, num_threads=threads)
    squares = [detector.resize(image) for image in images]
    size = "x".join(str(x) for x in detector.input_size)

    def call(image):
        return int(detector.runner(**{detector.input_name: image[None]})["num_detections"][0])

    return {
        "format": "TFLite",
        "image": f"{size} (pre-resized)",
        **timed(call, squares, warmup, runs),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(LIGHT_PRESETS))
    parser.add_argument("--sizes", default="256x192,640x480,1280x960", help="WxH,...")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TFLite threads")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args(argv)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]

    rows = []
    for preset in args.presets.split(","):
        model_dir = trained_model(args.out, preset)
        images = test_images(model_dir, sizes)
        is_mask = preset.startswith("maskrcnn")
        variants = [("as trained", None)]
        if is_mask:
            variants.append(("100 dets", {"pre_nms_score_threshold": 0.0}))
        for label, overrides in variants:
            target = args.out / "export_runs" / f"{preset}-{label.replace(' ', '_')}"
            print(f"exporting {preset} ({label}) ...", flush=True)
            export(model_dir, target, overrides, tflite=True)
            for row in bench_savedmodel(target / "saved_model", images, args.warmup, args.runs):
                rows.append({"preset": preset, "variant": label, **row})
            if (target / "model.tflite").is_file():
                first = images[next(iter(images))]
                row = bench_tflite(
                    target / "model.tflite", first, args.threads, args.warmup, args.runs
                )
                rows.append({"preset": preset, "variant": label, **row})

    print()
    print(f"CPU latency per image, {args.runs} runs after {args.warmup} warmup, "
          f"{os.cpu_count()} cores (TFLite threads {args.threads})")  # fmt: skip
    header = ("preset", "variant", "format", "image", "dets", "median ms", "p90 ms", "CPU ms")
    table = [header] + [
        (
            r["preset"],
            r["variant"],
            r["format"],
            r["image"],
            str(r["detections"]),
            f"{r['median']:.1f}",
            f"{r['p90']:.1f}",
            f"{r['cpu']:.1f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) if j < 4 else cell.rjust(w) for j, (cell, w) in
                        enumerate(zip(row, widths))))  # fmt: skip
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
