"""Benchmark: per-class score thresholds calibrated on val vs the single default 0.5, on test.

For each trained model (a local pipeline run's `train-*/model`, with the run's val and test
TFRecords) evaluate-model runs with the val split, so each class gets the score of highest F1
on val (components/evaluate_model/thresholds.py); the test split's mean F1 (box IoU 0.5, over
the classes with objects) is then printed at those thresholds and at 0.5 for every class, with
COCO AP beside them.

    # re-evaluate finished runs (e.g. `make demo` ones):
    .venv/bin/python bench/score_thresholds.py demo/runs/maskrcnn-training-*
    # run the demo for three seeds first (CPU and wall time printed for each):
    .venv/bin/python bench/score_thresholds.py --demo maskrcnn --seeds 0 1 2 --work-dir /tmp/b

A run directory is found by its files: the model is `train-*/model`, the val and test TFRecords
the `tfrecords` folders holding `val-*.tfrecord` and `test-*.tfrecord` shards. The benchmark
reports; it does not fail on a missed target.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def run_parts(run_dir: Path) -> tuple[Path, Path, Path]:
    """(model, val TFRecords, test TFRecords) of a local training pipeline run."""
    models = sorted(run_dir.glob("train-*/model"))
    found = {}
    for split in ("val", "test"):
        shards = sorted(run_dir.glob(f"*/tfrecords/{split}-*.tfrecord"))
        found[split] = sorted({shard.parent for shard in shards})
    if len(models) != 1 or len(found["val"]) != 1 or len(found["test"]) != 1:
        raise SystemExit(
            f"{run_dir}: expected one train-*/model and one val and one test TFRecords folder, "
            f"found models {models}, val {found['val']}, test {found['test']}"
        )
    return models[0], found["val"][0], found["test"][0]


def evaluate_run(run_dir: Path, out_dir: Path) -> dict:
    from cvat_kfp.components.evaluate_model.evaluate import run_evaluate_model

    model, val, test = run_parts(run_dir)
    result = run_evaluate_model(model, test, out_dir / "evaluation", out_dir / "ap_table.md",
                                out_dir / "report.html", val, max_report_images=4)  # fmt: skip
    thresholds = json.loads((out_dir / "evaluation" / "thresholds.json").read_text())
    saved = json.loads((out_dir / "evaluation" / "metrics.json").read_text())
    return {"metrics": result.metrics, "thresholds": thresholds,
            "test": saved["score_thresholds_f1"]}  # fmt: skip


def print_run(name: str, found: dict) -> None:
    print(f"\n{name}")
    print(f"  {'class':<12} {'threshold':>9}  {'val P/R/F1':<17} {'test F1':>7} {'at 0.5':>7}")
    test = {row["name"]: row for row in found["test"]["classes"]}
    for row in found["thresholds"]["classes"]:
        if row["calibrated"]:
            val = f"{row['precision']:.2f}/{row['recall']:.2f}/{row['f1']:.2f}"
        else:
            val = row["reason"]
        t = test[row["name"]]
        print(f"  {row['name']:<12} {row['threshold']:>9.3f}  {val:<17} "
              f"{t['f1_calibrated']:>7.3f} {t['f1_default']:>7.3f}")  # fmt: skip


def run_demos(kind: str, seeds: list[int], work_dir: Path) -> list[tuple[str, Path, dict]]:
    from cvat_kfp.pipelines.demo import run_demo

    runs = []
    for seed in seeds:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = run_demo(work_dir / f"{kind}_seed{seed}", seed=seed, maskrcnn=kind == "maskrcnn")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        timing = {"wall_s": time.monotonic() - started, "cpu_s": cpu}
        runs.append((f"{kind} demo, seed {seed}", result.run_dir, timing))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="local pipeline run folders")
    parser.add_argument("--demo", choices=("maskrcnn", "retinanet"), help="run the demo first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work-dir", type=Path, default=Path("bench/out/score_thresholds"))
    args = parser.parse_args(argv)
    runs = [(str(d), d, {}) for d in args.run_dirs]
    if args.demo:
        runs += run_demos(args.demo, args.seeds, args.work_dir)
    if not runs:
        parser.error("give run folders or --demo")
    rows = []
    for index, (name, run_dir, timing) in enumerate(runs):
        found = evaluate_run(run_dir, args.work_dir / "evaluations" / f"run{index}")
        print_run(name, found)
        rows.append((name, found, timing))
    print(f"\n{'run':<40} {'AP':>6} {'AP50':>6} {'maskAP':>6} {'F1@0.5':>7} {'F1 cal':>7} "
          f"{'wall':>6} {'CPU':>6}")  # fmt: skip
    for name, found, timing in rows:
        m = found["metrics"]
        wall = f"{timing['wall_s'] / 60:.1f}m" if timing else ""
        cpu = f"{timing['cpu_s'] / 60:.1f}m" if timing else ""
        ap = f"{m['AP']:>6.3f} {m['AP50']:>6.3f} {m.get('mask_AP', -1):>6.3f}"
        f1 = f"{m['mean_F1_at_0.5']:>7.3f} {m['mean_F1_calibrated']:>7.3f}"
        print(f"{name[-40:]:<40} {ap} {f1} {wall:>6} {cpu:>6}")
    better = sum(f["metrics"]["mean_F1_calibrated"] > f["metrics"]["mean_F1_at_0.5"]
                 for _, f, _ in rows)  # fmt: skip
    print(f"\ncalibrated thresholds beat 0.5 on test mean F1 in {better} of {len(rows)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
