"""Benchmark: our TFRecord converter against Model Garden's `create_coco_tf_record`.

Both convert the same Dataset (COCO instances with polygon masks) with the same number of worker
processes, each in its own subprocess. We print images/s side by side, and the peak memory of
each process tree (the converter's parent plus its workers: psutil samples the sum of their RSS
every ~50 ms; the parent's own ru_maxrss is printed beside it).

Data: the 18 real 800x600 photos of ../shared/test_data/fruits_nuts_coco replicated to N images
(hard links, new image and annotation ids), or synthetic shapes when that set is absent. Datasets
are cached under --out/data; conversion outputs are deleted after each run.

    .venv/bin/python bench/convert_to_tfrecord.py                  # 1000 and 10000 images
    .venv/bin/python bench/convert_to_tfrecord.py --quick          # 100 and 300 images
    .venv/bin/python bench/convert_to_tfrecord.py --sizes 500 --workers 4 --data shapes

The benchmark reports; it does not fail on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
FRUITS_NUTS = REPO.parent / "shared" / "test_data" / "fruits_nuts_coco" / "data"
TARGET_SPEEDUP = 3.0
TARGET_RSS_GROWTH = 1.2
SAMPLE_SECONDS = 0.05
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
MiB = 1024 * 1024


# --- data -------------------------------------------------------------------------------------


def fruits_nuts_dataset(out_dir: Path, num_images: int) -> Path:
    """The 18 fruits_nuts photos replicated to `num_images`, hard-linked under new names."""
    from cvat_kfp.components.common.dataset import link_or_copy

    coco = json.loads((FRUITS_NUTS / "trainval.json").read_text())
    seeds = sorted(coco["images"], key=lambda image: image["id"])
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in seeds}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)

    # A private copy of the 18 files (4.5 MB) to link from: /work/shared may be read-only, owned
    # by someone else (protected_hardlinks) or on another filesystem.
    seed_dir = out_dir.parent / "fruits_nuts_seed"
    seed_dir.mkdir(parents=True, exist_ok=True)
    for image in seeds:
        seed_file = seed_dir / image["file_name"]
        if not seed_file.is_file():
            shutil.copyfile(FRUITS_NUTS / "images" / image["file_name"], seed_file)

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(num_images):  # ids start at 0, as in the source set
        seed = seeds[image_id % len(seeds)]
        file_name = f"{image_id:06d}_{seed['file_name']}"
        link_or_copy(seed_dir / seed["file_name"], out_dir / "images" / file_name)
        # `subset` and `group` are our Dataset's extra image fields: Model Garden must ignore them.
        images.append({**seed, "id": image_id, "file_name": file_name, "subset": "train",
                       "group": f"seed_{seed['id']}"})  # fmt: skip
        for ann in by_image[seed["id"]]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id})
    coco = {"images": images, "annotations": annotations, "categories": coco["categories"]}
    (out_dir / "annotations.json").write_text(json.dumps(coco, separators=(",", ":")))
    return out_dir


def shapes_dataset(out_dir: Path, num_images: int) -> Path:
    from cvat_kfp.components.common.synthetic import make_shapes_dataset

    return make_shapes_dataset(out_dir, num_images=num_images, image_size=(800, 600))


def cached_dataset(data_root: Path, kind: str, num_images: int) -> Path:
    """A Dataset directory of `num_images`, made once; annotations.json is written last."""
    out_dir = data_root / f"{kind}_{num_images}"
    annotations = out_dir / "annotations.json"
    if annotations.is_file() and len(json.loads(annotations.read_text())["images"]) == num_images:
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    print(f"generating {kind} dataset of {num_images} images in {out_dir} ...", flush=True)
    make = fruits_nuts_dataset if kind == "fruits_nuts" else shapes_dataset
    return make(out_dir, num_images)


# --- measuring one conversion in a subprocess -------------------------------------------------


def run_measured(argv: list[str], log_path: Path) -> dict:
    """Run `argv`, sampling the RSS of its whole process tree; return the child's JSON result.

    The child (`child_main` below) writes its own timing and ru_maxrss to a result file. Workers
    are measured by sampling only: a spawned worker's ru_maxrss counts the parent's pages it
    held between fork and exec, so RUSAGE_CHILDREN would report the parent's size.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    env = {**os.environ, **CHILD_ENV}
    peak_tree = 0
    peak_by_pid: dict[int, int] = {}
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv + [str(result_path)], stdout=log, stderr=log, env=env)
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            sample = tree_rss(parent)
            peak_tree = max(peak_tree, sum(sample.values()))
            for pid, rss in sample.items():
                peak_by_pid[pid] = max(peak_by_pid.get(pid, 0), rss)
            time.sleep(SAMPLE_SECONDS)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{argv[3]} conversion failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_path.read_text())
    result_path.unlink()
    workers = [rss for pid, rss in peak_by_pid.items() if pid != proc.pid]
    return {
        **result,
        "peak_tree_rss": peak_tree,
        "peak_worker_rss": max(workers, default=0),
        "process_wall": wall,
    }


def tree_rss(parent: psutil.Process) -> dict[int, int]:
    """RSS of `parent` and each of its descendants now, by pid."""
    try:
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    sample = {}
    for p in processes:
        try:
            sample[p.pid] = p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return sample


def run_ours(dataset_dir: Path, output_dir: Path, workers: int, log: Path) -> dict:
    argv = [sys.executable, __file__, "_child", "ours", str(dataset_dir), str(output_dir)]
    return run_measured(argv + [str(workers)], log)


def run_model_garden(
    dataset_dir: Path, output_dir: Path, workers: int, num_shards: int, log: Path
) -> dict:
    flags = [
        f"--image_dir={dataset_dir / 'images'}",
        f"--object_annotations_file={dataset_dir / 'annotations.json'}",
        f"--output_file_prefix={output_dir / 'train'}",
        f"--num_shards={num_shards}",
        f"--num_processes={workers}",
        "--include_masks=True",
    ]
    argv = [sys.executable, __file__, "_child", "mg", json.dumps(flags)]
    result = run_measured(argv, log)
    skipped = re.findall(r"skipped (\d+) annotations", log.read_text())
    result["num_skipped"] = int(skipped[-1]) if skipped else None
    return result


def child_main(args: list[str]) -> None:
    """Inside the measured subprocess: import the converter and run it, timed together.

    Both sides import TensorFlow once, Model Garden's script with its module, our converter in a
    background thread once it has parsed the annotations (to keep the two peaks apart), while its
    workers start on the images; timing from the import counts that cost (~3 s) once on each
    side. Our converter's workers are spawned and re-import this file as `__mp_main__`: keep its
    top-level imports light.
    """
    which, *rest, result_path = args
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    if which == "ours":
        from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord

        dataset_dir, output_dir, workers = rest
        result = run_convert_to_tfrecord(
            dataset_dir, output_dir, split_name="train", num_workers=int(workers)
        )
        out = {"num_examples": result.num_examples, "num_instances": result.num_instances,
               "num_shards": result.num_shards}  # fmt: skip
    else:
        import official.vision.data.create_coco_tf_record as mg
        from absl import app

        sys.argv = [mg.__file__, *json.loads(rest[0])]
        try:
            app.run(mg.main)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
        out = {}
    seconds = time.perf_counter() - start
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    parent_cpu, workers_cpu = (a - b for a, b in zip(cpu_seconds(), cpu_start))
    out.update(seconds=seconds, cpu_seconds=parent_cpu + workers_cpu, parent_cpu=parent_cpu,
               parent_maxrss=maxrss_kib * 1024)  # fmt: skip
    Path(result_path).write_text(json.dumps(out))


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU time of this process, and of its reaped children (the joined workers).

    Unlike wall time it hardly moves when other jobs share the machine.
    """
    usages = map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return tuple(usage.ru_utime + usage.ru_stime for usage in usages)


# --- checking outputs -------------------------------------------------------------------------


def count_records(output_dir: Path) -> tuple[int, int, int]:
    """(records, shards, bytes) in the *.tfrecord files, read from the TFRecord framing alone."""
    records = shards = total = 0
    for path in sorted(output_dir.glob("*.tfrecord")):
        shards += 1
        total += path.stat().st_size
        with open(path, "rb") as f:
            while header := f.read(12):  # uint64 length, uint32 crc of the length
                (length,) = struct.unpack("<Q", header[:8])
                f.seek(length + 4, os.SEEK_CUR)  # data, uint32 crc of the data
                records += 1
    return records, shards, total


# --- the benchmark ----------------------------------------------------------------------------


def bench_size(data_root: Path, out_root: Path, kind: str, num_images: int, workers: int) -> dict:
    dataset_dir = cached_dataset(data_root, kind, num_images)
    num_annotations = len(json.loads((dataset_dir / "annotations.json").read_text())["annotations"])
    row = {"data": kind, "images": num_images, "annotations": num_annotations, "workers": workers}
    for side in ("ours", "mg"):
        output_dir = out_root / f"{side}_{num_images}"
        shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.mkdir(parents=True)
        log = out_root / f"{side}_{num_images}.log"
        print(f"  {num_images} images: {side} ...", flush=True)
        if side == "ours":
            result = run_ours(dataset_dir, output_dir, workers, log)
        else:
            shards = row["ours"]["num_shards"]
            result = run_model_garden(dataset_dir, output_dir, workers, shards, log)
        result["records"], result["shards"], result["bytes"] = count_records(output_dir)
        shutil.rmtree(output_dir)  # the next run (and the disk) want the room
        row[side] = result
    return row


def mib(n: float) -> str:
    return f"{n / MiB:,.0f}"


def report(rows: list[dict]) -> None:
    print()
    print("Conversion with masks, same data and worker count on both sides.")
    print("img/s: images / wall time of importing the converter (TensorFlow once) and running it.")
    print("peak RSS: max over ~50 ms samples of the summed RSS of the process tree (MiB).")
    print("CPU ms/img: user+system CPU time of the whole process tree per image (steadier than")
    print("img/s when other jobs share the machine).")
    head = (
        f"{'data':<12}{'images':>7}{'workers':>8} | {'ours img/s':>10}{'MG img/s':>10}"
        f"{'ratio':>7} | {'ours CPU ms/img':>15}{'MG':>6}{'ratio':>7} | {'ours RSS':>9}"
        f"{'MG RSS':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ours, mg = r["ours"], r["mg"]
        ours_ips, mg_ips = r["images"] / ours["seconds"], r["images"] / mg["seconds"]
        ours_cpu, mg_cpu = (1000 * x["cpu_seconds"] / r["images"] for x in (ours, mg))
        r["speedup"] = ours_ips / mg_ips
        print(
            f"{r['data']:<12}{r['images']:>7}{r['workers']:>8} | {ours_ips:>10.1f}{mg_ips:>10.1f}"
            f"{r['speedup']:>6.2f}x | {ours_cpu:>15.1f}{mg_cpu:>6.1f}{mg_cpu / ours_cpu:>6.2f}x"
            f" | {mib(ours['peak_tree_rss']):>9}{mib(mg['peak_tree_rss']):>8}"
        )
    print()
    print("Details: process = whole subprocess wall time; parent CPU = the converter process's.")
    print("RSS in MiB: parent = its ru_maxrss, worker = the largest sampled peak of one worker.")
    for r in rows:
        ours, mg = r["ours"], r["mg"]
        print(f"  {r['images']} images, {r['annotations']} annotations")
        for name, side, written in (
            ("ours", ours, f"{ours['num_instances']} instances written"),
            ("MG  ", mg, f"{mg['num_skipped']} annotations skipped"),
        ):
            print(
                f"    {name} {side['records']} records in {side['shards']} shards, "
                f"{mib(side['bytes'])} MiB, {written}; process {side['process_wall']:.1f} s, "
                f"parent CPU {1000 * side['parent_cpu'] / r['images']:.1f} ms/img; "
                f"RSS parent {mib(side['parent_maxrss'])}, worker {mib(side['peak_worker_rss'])}"
            )
    print()
    for r in rows:
        ours, mg = r["ours"], r["mg"]
        mg_instances = r["annotations"] - (mg["num_skipped"] or 0)
        same = ours["records"] == mg["records"] == r["images"]
        same = same and ours["num_instances"] == mg_instances
        print(
            f"{'PASS' if same else 'FAIL'}  {r['images']} images: examples written: ours "
            f"{ours['records']}, Model Garden {mg['records']}; instances: ours "
            f"{ours['num_instances']}, Model Garden {mg_instances}"
        )
    speedup = min(r["speedup"] for r in rows)
    print(
        f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'}  speed: ours/Model Garden >= "
        f"{TARGET_SPEEDUP:g}x at every size (lowest {speedup:.2f}x)"
    )
    if len(rows) > 1:
        small, large = min(rows, key=lambda r: r["images"]), max(rows, key=lambda r: r["images"])
        growth = large["ours"]["peak_tree_rss"] / small["ours"]["peak_tree_rss"]
        mg_growth = large["mg"]["peak_tree_rss"] / small["mg"]["peak_tree_rss"]
        print(
            f"{'PASS' if growth <= TARGET_RSS_GROWTH else 'FAIL'}  memory: ours peak RSS("
            f"{large['images']})/RSS({small['images']}) = {growth:.2f} <= {TARGET_RSS_GROWTH:g}"
            f" (Model Garden: {mg_growth:.2f})"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated image counts")
    parser.add_argument("--quick", action="store_true", help="sizes 100,300 (for development)")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)),
        help="worker processes on both sides (default: the CPUs available)",
    )  # fmt: skip
    parser.add_argument("--data", choices=("auto", "fruits_nuts", "shapes"), default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()

    sizes = [100, 300] if args.quick else [int(s) for s in args.sizes.split(",")]
    kind = args.data
    if kind == "auto":
        kind = "fruits_nuts" if (FRUITS_NUTS / "trainval.json").is_file() else "shapes"
    out_root = args.out.resolve() / "runs"
    shutil.rmtree(out_root, ignore_errors=True)
    out_root.mkdir(parents=True)
    print(f"data {kind}, sizes {sizes}, {args.workers} worker(s), {os.cpu_count()} CPU(s) seen, "
          f"load average {os.getloadavg()[0]:.2f}; logs in {out_root}")  # fmt: skip
    rows = [bench_size(args.out.resolve() / "data", out_root, kind, n, args.workers) for n in sizes]
    report(rows)


if __name__ == "__main__":
    main()
