"""Benchmark: our training engine against Model Garden's own `train_lib.run_experiment`.

Both train the same ExperimentConfig (built by `build_experiment_config` from a preset and
hyperparameters) on the same TFRecords, each in its own subprocess, on CPU:

- ours: `components.training.engine.train(config, ...)`, as train-tfod / train-maskrcnn run it;
- Model Garden: what `official/vision/train.py --mode=train` does with that config
  (`serialize_config`, precision policy, strategy, task, `train_lib.run_experiment`).

Steady-state s/step: both sides run under orbit's Controller, one loop of `--loop` steps at a
time. Each child wraps `orbit.Controller._train_n_steps` to note, at the end of every loop, the
global step, the wall clock, its own CPU time and the machine's busy CPU time, just after orbit
has written and flushed the loop's TensorBoard summaries (their wall_time, plus CPU times). The
first `--skip` loops (graph tracing, first-batch costs) are left out; s/step is the median over
the remaining loops of (loop seconds / loop steps), robust to a neighbour's burst; the mean over
the whole window is printed beside it. Repeats alternate the order of the two sides (ABBA), and
the figures are the medians over repeats. Checkpoints and evaluation fall outside the window
(checkpoint at the last step, after its loop; no val split).

Input pipeline: `task.build_inputs(config.task.train_data)` iterated without the model (warmup
batches, then `--input-batches` timed), images/s against what the model consumes
(batch / s per step of ours).

Preset table: CPU s/step of ours for each light preset (batch `--batch`), and with `--heavy` a few
steps of every other preset at its resolution (batch `--heavy-batch`, default 1): the README's
"measured CPU s/step" column.

    .venv/bin/python bench/train.py                          # light RetinaNet: ours vs MG, table
    .venv/bin/python bench/train.py --preset maskrcnn-mobilenetv2-light --steps 40
    .venv/bin/python bench/train.py --heavy --only-table     # the heavy presets' s/step only

The benchmark reports; it does not fail on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PRESET = "retinanet-mobilenetv2-light"
TARGET_RATIO = 1.02  # ours / Model Garden s/step, at most
TARGET_INPUT = 3.0  # input pipeline images/s / model consumption, at least
QUIET_CORES = 0.25  # a loop is "quiet" when other processes kept at most this many cores busy
MIN_QUIET_LOOPS = 5  # per side, for the ratio to use the quiet loops
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
MiB = 1024 * 1024


# --- data -------------------------------------------------------------------------------------


def cached_tfrecords(data_root: Path, num_images: int, width: int, height: int) -> Path:
    """Train TFRecords (with masks) of `num_images` shapes images, made once; manifest last."""
    out_dir = data_root / f"shapes_{num_images}_{width}x{height}"
    tfrecords = out_dir / "train"
    from cvat_kfp.components.common.tfrecords import MANIFEST_FILE

    if (tfrecords / MANIFEST_FILE).is_file():
        return tfrecords
    from cvat_kfp.components.common.synthetic import make_shapes_dataset
    from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord

    shutil.rmtree(out_dir, ignore_errors=True)
    print(f"generating {num_images} shapes images ({width}x{height}) in {out_dir} ...", flush=True)
    dataset = make_shapes_dataset(
        out_dir / "dataset", num_images=num_images, image_size=(width, height), seed=0
    )
    run_convert_to_tfrecord(dataset, tfrecords, split_name="train", num_workers=1)
    return tfrecords


# --- inside a measured subprocess -------------------------------------------------------------


def bench_config(spec: dict):
    """The ExperimentConfig both sides train: the preset with the benchmark's run length.

    No val split (no evaluation); one checkpoint, at the last step. Mask R-CNN presets run their
    stage 3 only (all layers trainable): the same work as Model Garden, which has no stages. The
    learning rate is a tenth of the preset's: speed does not depend on it, and a few steps from
    random weights at the full rate, with no room for a warmup, can diverge.
    """
    from cvat_kfp.components.common.synthetic import SHAPES
    from cvat_kfp.components.training.experiment import build_experiment_config
    from cvat_kfp.components.training.hyperparameters import parse_hyperparameters
    from cvat_kfp.components.training.presets import get_preset

    preset = get_preset(spec["preset"])
    steps = spec["steps"]
    values = {
        "num_steps": steps,
        "batch_size": spec["batch"],
        "initial_learning_rate": preset.defaults["initial_learning_rate"] / 10,
        "checkpoint_interval": steps,
        "eval_interval": steps,
    }
    if preset.include_mask:
        values.update(stage_1_epochs=0, stage_2_epochs=0, stage_3_epochs=1)
    hp = parse_hyperparameters(values, preset)
    config = build_experiment_config(
        preset,
        hp,
        train_pattern=str(Path(spec["tfrecords"]) / "train-*.tfrecord"),
        val_pattern=None,
        num_classes=len(SHAPES),
        include_masks=preset.include_mask,
    )
    config.trainer.steps_per_loop = config.trainer.summary_interval = spec["loop"]
    return config


def child_main(which: str, spec: dict, result_path: str) -> None:
    samples: list[dict] = [sample(None)]  # the child's start
    if which == "input":
        out = run_input_pipeline(spec, samples)
    else:
        install_loop_recorder(samples)
        model_dir = Path(spec["model_dir"])
        (run_ours if which == "ours" else run_model_garden)(spec, model_dir)
        import yaml

        out = {"config": yaml.safe_load((model_dir / "params.yaml").read_text())}
    out["samples"] = samples
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(result_path).write_text(json.dumps(out))


def sample(step: int | None) -> dict:
    """Now: wall clock, this process's CPU seconds, the machine's busy CPU seconds."""
    import psutil

    times = os.times()
    cpu = psutil.cpu_times()
    busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + cpu.steal
    return {"step": step, "time": time.perf_counter(), "cpu": times.user + times.system,
            "busy": busy}  # fmt: skip


def install_loop_recorder(samples: list[dict]) -> None:
    """Note a sample at the end of each orbit training loop (both sides run orbit's Controller)."""
    import orbit

    original = orbit.Controller._train_n_steps

    def recorded(self, num_steps):
        original(self, num_steps)
        samples.append(sample(int(self.global_step.numpy())))

    orbit.Controller._train_n_steps = recorded


def run_ours(spec: dict, model_dir: Path) -> None:
    from cvat_kfp.components.common.label_map import LabelMap
    from cvat_kfp.components.common.synthetic import SHAPES
    from cvat_kfp.components.training.engine import train

    config = bench_config(spec)
    train(config, model_dir=model_dir, label_map=LabelMap(SHAPES), log=print)


def run_model_garden(spec: dict, model_dir: Path) -> None:
    """official/vision/train.py's main() for --mode=train, with our config as its params."""
    from official.common import distribute_utils
    from official.core import task_factory, train_lib, train_utils
    from official.modeling import performance

    params = bench_config(spec)
    model_dir.mkdir(parents=True, exist_ok=True)
    train_utils.serialize_config(params, str(model_dir))
    if params.runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
    strategy = distribute_utils.get_distribution_strategy(
        distribution_strategy=params.runtime.distribution_strategy,
        all_reduce_alg=params.runtime.all_reduce_alg,
        num_gpus=params.runtime.num_gpus,
        tpu_address=params.runtime.tpu,
    )
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=str(model_dir))
    train_lib.run_experiment(
        distribution_strategy=strategy,
        task=task,
        mode="train",
        params=params,
        model_dir=str(model_dir),
    )


def run_input_pipeline(spec: dict, samples: list[dict]) -> dict:
    """The training input pipeline alone: warmup batches, then `batches` timed."""
    import tensorflow as tf
    from official.core import task_factory

    config = bench_config(spec)
    task = task_factory.get_task(config.task)
    dataset = task.build_inputs(config.task.train_data)
    iterator = iter(dataset)
    for _ in range(spec["warmup"]):
        next(iterator)
    samples.append(sample(0))
    for _ in range(spec["batches"]):
        images, _ = next(iterator)
    samples.append(sample(spec["batches"]))
    return {"image_shape": [int(d) for d in tf.shape(images)]}


# --- running and reading one side -------------------------------------------------------------


def run_side(which: str, spec: dict, log_path: Path, args) -> dict:
    """Run one side in a subprocess; its samples and peak RSS, or {"error": ...}."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    argv = [sys.executable, __file__, "_child", which, json.dumps(spec), str(result_path)]
    timeout, max_rss = args.timeout, args.max_rss_gb * 1024 * MiB
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, **CHILD_ENV})
        code = watch(proc, timeout, max_rss)
    wall = time.perf_counter() - started
    if "model_dir" in spec:
        shutil.rmtree(spec["model_dir"], ignore_errors=True)  # heavy checkpoints: GBs
    if code != 0:
        result_path.unlink(missing_ok=True)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return {"error": f"exit {code}: {' | '.join(tail)[-300:]} (log {log_path})"}
    result = json.loads(result_path.read_text())
    result_path.unlink()
    return {**result, "load_before": load, "process_wall": wall}


def watch(proc: subprocess.Popen, timeout: float, max_rss: float) -> int | str:
    """Wait for `proc`; kill it past `timeout` seconds or `max_rss` bytes of RSS (the machine is
    shared and has no swap: better our run fails than the kernel's OOM killer picks another)."""
    import psutil

    deadline = time.monotonic() + timeout
    child = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = child.memory_info().rss
        except psutil.NoSuchProcess:
            rss = 0
        why = None
        if time.monotonic() > deadline:
            why = f"killed after {timeout:.0f} s"
        elif rss > max_rss:
            why = f"killed at {rss / MiB:,.0f} MiB RSS (--max-rss-gb)"
        if why:
            proc.kill()
            proc.wait()
            return why
        time.sleep(0.5)
    return proc.returncode


def steady(result: dict, skip: int) -> dict:
    """s/step over the loops after the first `skip` (median of loops, and mean), CPU s/step,
    the other processes' CPU use (cores) over that window, and the first loops' seconds."""
    start, *loops = result["samples"]
    window = loops[skip - 1 :]  # from the end of loop `skip`: loops skip+1.. are measured
    if len(window) < 2:
        raise SystemExit(f"too few loops to measure ({len(loops)}): raise --steps")
    first, last = window[0], window[-1]
    steps = last["step"] - first["step"]
    seconds = last["time"] - first["time"]
    per_loop, quiet = [], []
    for a, b in zip(window, window[1:]):
        seconds_per_step = (b["time"] - a["time"]) / (b["step"] - a["step"])
        per_loop.append(seconds_per_step)
        if others_cores(a, b) <= QUIET_CORES:
            quiet.append(seconds_per_step)
    own_cpu = last["cpu"] - first["cpu"]
    return {
        "s_per_step": statistics.median(per_loop),
        "quiet": quiet,
        "mean_s_per_step": seconds / steps,
        "cpu_s_per_step": own_cpu / steps,
        "others_cores": others_cores(first, last),
        "startup": first["time"] - start["time"],  # import, build, trace, the skipped loops
        "steps": steps,
        "maxrss": result["maxrss"],
        "load_before": result["load_before"],
    }


def others_cores(a: dict, b: dict) -> float:
    """CPU cores that other processes kept busy between samples `a` and `b`."""
    return max(0.0, (b["busy"] - a["busy"] - (b["cpu"] - a["cpu"])) / (b["time"] - a["time"]))


def input_rate(result: dict, batch: int) -> dict:
    start, before, after = result["samples"]
    seconds = after["time"] - before["time"]
    images = after["step"] * batch
    return {
        "images_per_s": images / seconds,
        "cpu_ms_per_image": 1000 * (after["cpu"] - before["cpu"]) / images,
        "others_cores": others_cores(before, after),
        "image_shape": result["image_shape"],
        "load_before": result["load_before"],
    }


# --- the benchmark ----------------------------------------------------------------------------


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def spread(runs: list[dict], key: str, fmt: str = ".3f") -> str:
    values = [run[key] for run in runs]
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if len(values) > 1 else "-"


def compare(args, tfrecords: Path, runs_dir: Path) -> dict:
    """Ours against Model Garden on args.preset, ABBA order; then the input pipeline alone."""
    spec = {"preset": args.preset, "steps": args.steps, "batch": args.batch, "loop": args.loop,
            "tfrecords": str(tfrecords)}  # fmt: skip
    runs: dict[str, list[dict]] = {"ours": [], "mg": []}
    configs: dict[str, dict] = {}
    errors: list[str] = []
    for repeat in range(args.repeats):
        order = ("ours", "mg") if repeat % 2 == 0 else ("mg", "ours")
        for side in order:
            name = f"{side}_{args.preset}_{repeat}"
            print(f"  {name} ...", flush=True)
            model_dir = runs_dir / name
            result = run_side(
                side, {**spec, "model_dir": str(model_dir)}, runs_dir / f"{name}.log", args
            )
            if "error" in result:
                errors.append(f"{name}: {result['error']}")
                print(f"    failed: {result['error']}", flush=True)
                continue
            configs[side] = result["config"]
            runs[side].append(steady(result, args.skip))
            r = runs[side][-1]
            print(f"    {r['s_per_step']:.3f} s/step (median of loops), {r['cpu_s_per_step']:.3f}"
                  f" CPU s/step, others {r['others_cores']:.2f} cores", flush=True)  # fmt: skip
    inputs = []
    input_spec = {**spec, "warmup": args.input_warmup, "batches": args.input_batches}
    for repeat in range(args.input_repeats):
        name = f"input_{args.preset}_{repeat}"
        print(f"  {name} ...", flush=True)
        result = run_side("input", input_spec, runs_dir / f"{name}.log", args)
        if "error" in result:
            errors.append(f"{name}: {result['error']}")
            continue
        inputs.append(input_rate(result, args.batch))
    return {"runs": runs, "inputs": inputs, "configs": configs, "errors": errors}


def quiet_median(runs: list[dict]) -> tuple[float | None, int]:
    """The median s/step of the quiet loops of all `runs`, and their count."""
    loops = [value for run in runs for value in run["quiet"]]
    return (statistics.median(loops) if loops else None), len(loops)


def quiet_text(runs: list[dict]) -> str:
    value, count = quiet_median(runs)
    return f"{value:.3f} ({count})" if count else "- (0)"


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    found = []
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found += config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            found.append(f"{prefix}{key}: ours {x!r}, MG {y!r}")
    return found


def report_comparison(args, found: dict) -> dict[str, float]:
    runs, inputs = found["runs"], found["inputs"]
    print()
    print(f"{args.preset}: ours (engine.train) vs Model Garden (train_lib.run_experiment), same "
          f"config and TFRecords, CPU, batch {args.batch}, {args.steps} steps in loops of "
          f"{args.loop}, first {args.skip} loop(s) left out, {args.repeats} repeat(s) "
          "alternating the order.")  # fmt: skip
    print("s/step: median over the loops of a run, then over repeats (range over repeats); mean:")
    print("the window's seconds / steps; CPU s/step: the process's user+system CPU per step;")
    print("others: CPU cores busy with other processes during the window (from /proc/stat);")
    print(f"quiet: median s/step of the loops (all runs pooled) with others <= {QUIET_CORES} "
          "cores, and how many; load: 1-min load average before the runs.")  # fmt: skip
    head = (
        f"{'side':<6}{'runs':>5} | {'s/step':>7}{'range':>13}{'mean':>7}{'quiet':>12} | "
        f"{'CPU s/step':>10} | {'others':>6}{'load':>6} | {'startup s':>9}{'RSS MiB':>8}"
    )
    print(head)
    print("-" * len(head))
    for side, label in (("ours", "ours"), ("mg", "MG")):
        r = runs[side]
        if not r:
            print(f"{label:<6}{0:>5} | failed")
            continue
        print(
            f"{label:<6}{len(r):>5} | {median_of(r, 's_per_step'):>7.3f}"
            f"{spread(r, 's_per_step'):>13}{median_of(r, 'mean_s_per_step'):>7.3f}"
            f"{quiet_text(r):>12} | {median_of(r, 'cpu_s_per_step'):>10.3f} | "
            f"{median_of(r, 'others_cores'):>6.2f}"
            f"{median_of(r, 'load_before'):>6.2f} | {median_of(r, 'startup'):>9.1f}"
            f"{median_of(r, 'maxrss') / MiB:>8,.0f}"
        )
    figures: dict[str, float] = {}
    if runs["ours"] and runs["mg"]:
        for key in ("s_per_step", "mean_s_per_step", "cpu_s_per_step"):
            figures[key] = median_of(runs["ours"], key) / median_of(runs["mg"], key)
        pairs = [o["s_per_step"] / m["s_per_step"] for o, m in zip(runs["ours"], runs["mg"])]
        (ours_quiet, n_ours), (mg_quiet, n_mg) = map(quiet_median, (runs["ours"], runs["mg"]))
        quiet = min(n_ours, n_mg) >= MIN_QUIET_LOOPS
        quiet_ratio = f"- (fewer than {MIN_QUIET_LOOPS})"
        if quiet:
            figures["quiet"] = ours_quiet / mg_quiet
            quiet_ratio = f"{figures['quiet']:.3f}"
        print(
            f"ratio ours/MG: s/step {figures['s_per_step']:.3f} (per repeat: "
            f"{', '.join(f'{p:.3f}' for p in pairs)}), mean s/step "
            f"{figures['mean_s_per_step']:.3f}, quiet loops "
            f"{quiet_ratio}, "
            f"CPU s/step {figures['cpu_s_per_step']:.3f}"
        )
        figures["target"] = figures.get("quiet", figures["s_per_step"])
    if inputs and runs["ours"]:
        consumed = args.batch / median_of(runs["ours"], "s_per_step")
        rate = median_of(inputs, "images_per_s")
        figures["input"] = rate / consumed
        print()
        print(f"Input pipeline alone (task.build_inputs, {args.input_warmup} warmup + "
              f"{args.input_batches} timed batches of {args.batch}, output "
              f"{inputs[0]['image_shape']}), {len(inputs)} run(s):")  # fmt: skip
        print(
            f"  {rate:.1f} images/s (range {spread(inputs, 'images_per_s', '.1f')}), "
            f"{median_of(inputs, 'cpu_ms_per_image'):.1f} CPU ms/image, others "
            f"{median_of(inputs, 'others_cores'):.2f} cores; the model consumes "
            f"{consumed:.2f} images/s (batch / ours s/step): {figures['input']:.1f}x"
        )
    print()
    if "ours" in found["configs"] and "mg" in found["configs"]:
        diff = config_differences(found["configs"]["ours"], found["configs"]["mg"])
        print(f"{'PASS' if not diff else 'FAIL'}  same config on both sides (params.yaml)"
              + "".join(f"\n      {d}" for d in diff))  # fmt: skip
    if "target" in figures:
        ratio = figures["target"]
        which = "quiet loops" if "quiet" in figures else "all loops (too few quiet ones)"
        print(f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}  s/step ours/Model Garden = "
              f"{ratio:.3f} <= {TARGET_RATIO} ({which})")  # fmt: skip
    if "input" in figures:
        ratio = figures["input"]
        print(f"{'PASS' if ratio >= TARGET_INPUT else 'FAIL'}  input pipeline images/s / model "
              f"consumption = {ratio:.1f} >= {TARGET_INPUT:g}")  # fmt: skip
    for error in found["errors"]:
        print(f"FAIL  {error}")
    return figures


def preset_table(args, tfrecords: Path, runs_dir: Path, compared: list[dict]) -> list[dict]:
    """Our s/step per preset: light ones at --batch; with --heavy the others at --heavy-batch."""
    from cvat_kfp.components.training.presets import PRESETS

    rows = []
    chosen = args.presets.split(",") if args.presets else list(PRESETS)
    unknown = [name for name in chosen if name not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown preset(s) {unknown}; known: {', '.join(PRESETS)}")
    for preset in PRESETS.values():
        if preset.name not in chosen:
            continue
        if preset.light:
            steps, batch, loop, skip, repeats = (args.steps, args.batch, args.loop, args.skip,
                                                 args.table_repeats)  # fmt: skip
        elif args.heavy:
            steps, batch, loop, skip, repeats = args.heavy_steps, args.heavy_batch, 1, 2, 1
        else:
            continue
        row = {"preset": preset.name, "size": preset.image_size, "batch": batch, "runs": []}
        if preset.name == args.preset and batch == args.batch and compared:
            row["runs"] = compared  # measured by the comparison already
        else:
            spec = {"preset": preset.name, "steps": steps, "batch": batch, "loop": loop,
                    "tfrecords": str(tfrecords)}  # fmt: skip
            for repeat in range(repeats):
                name = f"table_{preset.name}_{repeat}"
                print(f"  {name} ({preset.image_size} px, batch {batch}, {steps} steps) ...",
                      flush=True)  # fmt: skip
                result = run_side(
                    "ours",
                    {**spec, "model_dir": str(runs_dir / name)},
                    runs_dir / f"{name}.log",
                    args,
                )
                if "error" in result:
                    row["error"] = result["error"]
                    print(f"    failed: {result['error']}", flush=True)
                    break
                row["runs"].append(steady(result, skip))
                print(f"    {row['runs'][-1]['s_per_step']:.3f} s/step", flush=True)
        row["window"] = f"{row['runs'][0]['steps']} steps" if row["runs"] else "-"
        rows.append(row)
    return rows


def report_table(rows: list[dict]) -> None:
    print()
    print("CPU s/step of our engine per preset (2 cores unless stated; s/step = median of the")
    print("measured loops, then of runs; the first loop(s) with tracing left out).")
    head = (
        f"{'preset':<28}{'px':>5}{'batch':>6}{'measured':>10} | {'s/step':>7}{'CPU s/step':>11}"
        f"{'others':>7} | {'startup s':>9}{'RSS MiB':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        lead = f"{row['preset']:<28}{row['size']:>5}{row['batch']:>6}{row['window']:>10} | "
        runs = row["runs"]
        if not runs:
            print(lead + f"failed: {row.get('error', '')[:200]}")
            continue
        print(
            f"{lead}{median_of(runs, 's_per_step'):>7.2f}"
            f"{median_of(runs, 'cpu_s_per_step'):>11.2f}"
            f"{median_of(runs, 'others_cores'):>7.2f} | {median_of(runs, 'startup'):>9.0f}"
            f"{median_of(runs, 'maxrss') / MiB:>8,.0f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="the preset to compare")
    parser.add_argument("--steps", type=int, default=60, help="steps per run")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--loop", type=int, default=5, help="steps per orbit loop")
    parser.add_argument("--skip", type=int, default=1, help="first loops left out (tracing)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side")
    parser.add_argument("--input-warmup", type=int, default=20)
    parser.add_argument("--input-batches", type=int, default=300)
    parser.add_argument("--input-repeats", type=int, default=2)
    parser.add_argument("--table-repeats", type=int, default=1,
                        help="runs of each light preset not already compared")  # fmt: skip
    parser.add_argument(
        "--heavy", action="store_true", help="also every non-light preset, at its resolution"
    )
    parser.add_argument("--presets", default="", help="the table's presets (comma-separated)")
    parser.add_argument("--heavy-steps", type=int, default=5)
    parser.add_argument("--heavy-batch", type=int, default=1)
    parser.add_argument("--only-table", action="store_true", help="skip the comparison")
    parser.add_argument("--no-table", action="store_true", help="skip the preset table")
    parser.add_argument("--images", type=int, default=64, help="training images generated")
    parser.add_argument("--image-size", default="640x480", help="generated images, WxH")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--max-rss-gb", type=float, default=12, help="RSS limit per subprocess")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    if args.steps % args.loop or args.steps // args.loop < args.skip + 2:
        parser.error("--steps must be a multiple of --loop, with at least --skip + 2 loops")
    if args.skip < 1 or args.heavy_steps < 4:
        parser.error("--skip must be at least 1, --heavy-steps at least 4 (2 left out)")

    width, height = (int(x) for x in args.image_size.lower().split("x"))
    tfrecords = cached_tfrecords(args.out.resolve() / "data", args.images, width, height)
    runs_dir = args.out.resolve() / "train_runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{len(os.sched_getaffinity(0))} CPU(s), load average {load}; data {tfrecords} "
          f"({args.images} images {width}x{height}); logs in {runs_dir}")  # fmt: skip
    started = time.perf_counter()
    compared = []
    found = None
    if not args.only_table:
        found = compare(args, tfrecords, runs_dir)
        compared = found["runs"]["ours"]
    rows = [] if args.no_table else preset_table(args, tfrecords, runs_dir, compared)
    if found:
        report_comparison(args, found)
    if rows:
        report_table(rows)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end {load}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
