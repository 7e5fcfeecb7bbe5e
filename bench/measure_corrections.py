"""Benchmark: the correction report gives back the rates of a scripted review.

On the CVAT stand-in (tests/components/export_annotations/cvat_mock_server.py): a task of N
generated frames is pre-annotated by preannotate's own code (a predictor laying out 1-3 boxes per
frame, on rectangle, polygon and mask labels), a scripted annotator moves, touches (attributes
only), relabels and deletes exact shares of the uploaded predictions and draws new shapes, the
task is exported "CVAT for images 1.1" through export-annotations, and measure-corrections reads
it. Printed: each rate as the annotator applied it and as the report measured it, and the time of
each step.

    .venv/bin/python bench/measure_corrections.py                 # 200 frames
    .venv/bin/python bench/measure_corrections.py --frames 1000 --seed 2

The benchmark reports; it does not fail.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `tests`, as the test suite imports it

ACTIONS = {"move": "corrected", "touch": "corrected", "relabel": "relabelled", "delete": "deleted"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--move", type=float, default=0.2)
    parser.add_argument("--touch", type=float, default=0.05)
    parser.add_argument("--relabel", type=float, default=0.1)
    parser.add_argument("--delete", type=float, default=0.15)
    parser.add_argument("--added", type=int, default=60, help="shapes drawn by hand")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    for name in ("CVAT_USERNAME", "CVAT_PASSWORD", "CVAT_ORGANIZATION"):
        os.environ.pop(name, None)

    from cvat_kfp.components.export_annotations import cvat_server
    from cvat_kfp.components.export_annotations.export import run_export_annotations
    from cvat_kfp.components.measure_corrections.corrections import run_measure_corrections
    from cvat_kfp.components.preannotate.preannotate import run_preannotate
    from tests.components.export_annotations.cvat_mock_server import CvatMockServer
    from tests.components.measure_corrections.synthetic_review import (
        LaidOutPredictor,
        add_task,
        review,
    )

    rates = {name: getattr(args, name) for name in ACTIONS}
    quiet = partial(cvat_server.export_from_cvat, poll_interval=0.01, log=lambda line: None)
    cvat_server.export_from_cvat = quiet
    timings = {}
    with tempfile.TemporaryDirectory() as scratch, CvatMockServer(polls_to_finish=1) as server:
        out = Path(scratch)
        os.environ["CVAT_ACCESS_TOKEN"] = server.token
        add_task(server, 1, args.frames, args.seed)
        started = time.perf_counter()
        run_preannotate(
            "unused", str(out / "predictions"), str(out / "preannotate.md"), server.url, "1",
            predictor=LaidOutPredictor(args.frames, args.seed),
        )  # fmt: skip
        timings["preannotate (upload, ids recorded)"] = time.perf_counter() - started
        done = review(server, 1, out / "predictions", rates, args.added, args.seed)
        started = time.perf_counter()
        run_export_annotations(
            out / "reviewed",
            out / "export.md",
            cvat_url=server.url,
            task_ids="1",
            annotation_format="CVAT for images 1.1",
        )
        timings["export-annotations (CVAT for images 1.1)"] = time.perf_counter() - started
        started = time.perf_counter()
        result = run_measure_corrections(
            str(out / "predictions"),
            str(out / "reviewed"),
            report_path=str(out / "corrections.md"),
            report_html_path=str(out / "corrections.html"),
        )
        timings["measure-corrections (with the HTML report)"] = time.perf_counter() - started

    metrics = result.metrics
    uploaded = int(metrics["uploaded"])
    applied = {
        "kept": done.count("keep"),
        "corrected": done.count("move") + done.count("touch"),
        "relabelled": done.count("relabel"),
        "deleted": done.count("delete"),
    }
    print(
        f"{args.frames} frames, {uploaded} predictions uploaded (rectangles, polygons, masks), "
        f"seed {args.seed}\n"
    )
    print(f"{'':<16}{'applied':>12}{'measured':>12}{'rate':>10}")
    for name, count in applied.items():
        rate = metrics[f"{name}_rate"]
        mark = "" if metrics[name] == count else "   <- differs"
        print(f"{name:<16}{count:>12}{int(metrics[name]):>12}{rate:>10.4f}{mark}")
    added = sum(done.added.values())
    print(f"{'added by hand':<16}{added:>12}{int(metrics['added_by_hand']):>12}")
    final = uploaded - applied["deleted"] + added
    print(
        f"\nshare of final shapes from the model unchanged: measured {metrics['kept_share']:.4f}, "
        f"applied {applied['kept']}/{final} = {applied['kept'] / final:.4f}"
    )
    print(f"median IoU of corrected shapes: {metrics.get('corrected_iou_median', 'n/a')}\n")
    for step, seconds in timings.items():
        print(f"{step:<44}{seconds:>8.2f} s")


if __name__ == "__main__":
    main()
