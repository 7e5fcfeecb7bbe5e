"""Does select-frames choose better frames to label than chance? mAP after adding its top-N frames
of a pool to a small seed set, against adding N random frames, same budget, real training engine.

One round of the loop on generated shapes (components/common/synthetic.py):
1. a seed model: the light RetinaNet trained from scratch on the seed set;
2. select-frames ranks the pool (as a folder of images, the model as a trained Model directory)
   and picks N frames: with diversity (the default radius) and without (uncertainty only). The
   class threshold it measures uncertainty against is the seed model's F1-best score on a small
   validation split (as evaluate-model calibrates one; `--score-threshold` gives one instead):
   a young model scores low, and at 0.5 nearly every frame has "nothing confident";
3. N random frames of the pool, for several draws;
4. for each choice, a new model trained on seed + chosen (from scratch, or from the seed model)
   with the same schedule and training seed, evaluated (COCO AP on boxes) on a held-out test
   split.

`--duplicates K` makes the pool video-like: each scene K times, the copies with pixel noise
(consecutive frames), so that near-duplicates compete for the picks; `--empty-share F` empties
that share of the pool's scenes. `--repeats N` trains each choice N times and N random draws,
paired by training seed; `--fine-tune` starts round 1 from the seed model's weights.

    .venv/bin/python bench/select_frames.py --repeats 4 --fine-tune --test-images 120  # ~30 min
    .venv/bin/python bench/select_frames.py --random-draws 1 --steps 80   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cvat_kfp.components.common.dataset import IMAGES_DIR, Dataset  # noqa: E402
from cvat_kfp.components.common.synthetic import make_shapes_dataset  # noqa: E402
from cvat_kfp.components.convert_to_tfrecord.convert import run_convert_to_tfrecord  # noqa: E402

PRESET = "retinanet-mobilenetv2-light"
CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = (256, 192)


def hyperparameters(steps: int, seed: int) -> str:
    # tests/trained_models.py's schedule for the light RetinaNet from scratch
    return (
        f"num_steps: {steps}\nbatch_size: 4\ninitial_learning_rate: 0.08\n"
        f"warmup_steps: {max(steps // 10, 1)}\neval_interval: {steps}\n"
        f"checkpoint_interval: {steps}\nseed: {seed}\n"
        "model_garden_overrides: {task.model.norm_activation.norm_momentum: 0.9}\n"
    )


def make_data(
    out: Path, seed_count: int, pool_scenes: int, duplicates: int, empty_share: float,
    test_count: int,
):  # fmt: skip
    """(all: seed images then pool frames, seed ids, pool ids, the pool as a folder, test)."""
    scenes = make_shapes_dataset(
        out / "scenes", seed_count + pool_scenes, IMAGE_SIZE, CLASSES, max_shapes=3, seed=11
    )
    dataset = Dataset.load(scenes)
    seed_ids = [im["id"] for im in dataset.images[:seed_count]]
    pool_images = dataset.images[seed_count:]
    if empty_share > 0:  # scenes with nothing in them: the background alone, with noise
        rng = np.random.default_rng(7)
        empty = {im["id"] for im in pool_images[: round(empty_share * len(pool_images))]}
        for image in pool_images:
            if image["id"] in empty:
                path = dataset.image_path(image)
                colour = np.asarray(Image.open(path).convert("RGB"))[0, 0].astype(np.float64)
                picture = np.broadcast_to(colour, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3))
                noisy = picture + rng.normal(0, 4, picture.shape)
                Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        annotations = [a for a in dataset.annotations if a["image_id"] not in empty]
        dataset = Dataset(dataset.images, annotations, dataset.categories, scenes)
        dataset.save(scenes)
    if duplicates > 1:  # video-like: each scene again, with noise, same objects
        rng = np.random.default_rng(5)
        images, annotations = list(dataset.images), list(dataset.annotations)
        by_image = dataset.annotations_by_image()
        next_id = max(im["id"] for im in images) + 1
        next_ann = max((a["id"] for a in annotations), default=0) + 1
        for image in pool_images:
            picture = np.asarray(Image.open(dataset.image_path(image)).convert("RGB"), np.float64)
            for copy in range(1, duplicates):
                noisy = np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8)
                name = image["file_name"].replace(".jpg", f"_{copy}.jpg")
                Image.fromarray(noisy).save(scenes / IMAGES_DIR / name, quality=90)
                images.append({**image, "id": next_id, "file_name": name})
                for ann in by_image[image["id"]]:
                    annotations.append({**ann, "id": next_ann, "image_id": next_id})
                    next_ann += 1
                next_id += 1
        dataset = Dataset(images, annotations, dataset.categories, scenes)
        dataset.save(scenes)
    pool_ids = [im["id"] for im in dataset.images if im["id"] not in set(seed_ids)]
    pool_dir = out / "pool"
    pool_dir.mkdir(exist_ok=True)
    for image in dataset.images:
        if image["id"] in set(pool_ids):
            target = pool_dir / image["file_name"]
            if not target.exists():
                target.hardlink_to(dataset.image_path(image))
    test = make_shapes_dataset(
        out / "test_dataset", test_count, IMAGE_SIZE, CLASSES, max_shapes=3, seed=12
    )
    shutil.rmtree(out / "test", ignore_errors=True)
    run_convert_to_tfrecord(test, out / "test", split_name="test", num_workers=1)
    return dataset, seed_ids, pool_ids, pool_dir, out / "test"


def train(
    out: Path, name: str, dataset: Dataset, image_ids, test_dir: Path, steps: int, seed: int,
    reuse: bool = False, init_model: Path | None = None,
):  # fmt: skip
    """A model trained on these images, from scratch or from `init_model`'s weights (the
    pipeline's fine-tune by lineage); (its directory, test AP, AP50).

    `reuse`: an earlier run's model of the same images and schedule, when there is one."""
    from cvat_kfp.components.training.engine import DivergedLossError
    from cvat_kfp.components.training.run import run_training

    work = out / name
    recipe = {"images": sorted(image_ids), "steps": steps, "seed": seed,
              "init": str(init_model or "")}  # fmt: skip
    if reuse and (work / "recipe.json").is_file() and (work / "model" / "model.json").is_file():
        if json.loads((work / "recipe.json").read_text()) == recipe:
            metrics = json.loads((work / "model" / "model.json").read_text())["metrics"]
            ap, ap50 = metrics["AP"], metrics["AP50"]
            print(f"  {name}: {len(image_ids)} images, test AP {ap:.3f}, AP50 {ap50:.3f} (reused)")
            return work / "model", ap, ap50
    shutil.rmtree(work, ignore_errors=True)
    dataset.subset(image_ids).save(work / "dataset")
    run_convert_to_tfrecord(work / "dataset", work / "train", split_name="train", num_workers=1)
    started = time.perf_counter()
    try:
        result = run_training(
            work / "train",
            test_dir,  # evaluated once, after the last step: no checkpoint is chosen by it
            work / "model",
            component="train_tfod",
            preset=PRESET,
            hyperparameters=hyperparameters(steps, seed),
            init_model_dir=init_model,
        )
    except DivergedLossError as e:  # counted, left out of the means: the bench goes on
        print(f"  {name}: {len(image_ids)} images, diverged ({str(e).split('. ')[0]})")
        return None, float("nan"), float("nan")
    seconds = time.perf_counter() - started
    (work / "recipe.json").write_text(json.dumps(recipe))
    ap, ap50 = result.metrics.get("AP", float("nan")), result.metrics.get("AP50", float("nan"))
    print(f"  {name}: {len(image_ids)} images, test AP {ap:.3f}, AP50 {ap50:.3f} ({seconds:.0f} s)")
    return work / "model", ap, ap50


def calibrated_threshold(model_dir: Path, val: Dataset) -> tuple[float, float]:
    """The score threshold with the best F1 at IoU 0.5 on `val` (all classes together; ties to
    the higher threshold), and that F1."""
    from cvat_kfp.components.inference.predictor import TrainedPredictor
    from cvat_kfp.components.select_frames.selection import box_iou

    predictor = TrainedPredictor(model_dir)
    names = {c["id"]: c["name"] for c in val.categories}
    outcomes, objects = [], 0  # (score, matched)
    for image in val.images:
        picture = np.asarray(Image.open(val.image_path(image)).convert("RGB"))
        height, width = picture.shape[:2]
        truths = [
            (names[a["category_id"]], np.array([a["bbox"][1] / height, a["bbox"][0] / width,
             (a["bbox"][1] + a["bbox"][3]) / height, (a["bbox"][0] + a["bbox"][2]) / width]))
            for a in val.annotations_by_image()[image["id"]]
        ]  # fmt: skip
        objects += len(truths)
        found = predictor.predict(picture)
        taken = set()
        for k in np.argsort(-found.scores):
            best, match = 0.5, None
            for t, (name, box) in enumerate(truths):
                if t in taken or name != found.class_names[k]:
                    continue
                overlap = box_iou(found.boxes[k], box)
                if overlap >= best:
                    best, match = overlap, t
            if match is not None:
                taken.add(match)
            outcomes.append((float(found.scores[k]), match is not None))
    outcomes.sort(key=lambda o: -o[0])
    best_f1, best_threshold, true_positives = 0.0, 0.5, 0
    for kept, (score, matched) in enumerate(outcomes, start=1):
        true_positives += matched
        f1 = 2 * true_positives / (kept + objects)
        if f1 > best_f1 or (f1 == best_f1 and score > best_threshold):
            best_f1, best_threshold = f1, score
    return best_threshold, best_f1


def select(
    out: Path, name: str, model_dir: Path, pool_dir: Path, top_n: int, radius: float, threshold
):
    from cvat_kfp.components.inference.predictor import TrainedPredictor
    from cvat_kfp.components.select_frames.selection import run_select_frames

    started = time.perf_counter()
    run_select_frames(
        str(model_dir),
        str(out / name),
        str(out / name / "report.md"),
        images_dir=str(pool_dir),
        top_n=top_n,
        score_threshold=threshold,
        diversity_radius=radius,
        predictor=TrainedPredictor(model_dir),
    )
    ranking = json.loads((out / name / "ranking.json").read_text())
    picked = [frame["name"] for frame in ranking["selected"]]
    mean = np.mean([frame["uncertainty"] for frame in ranking["selected"]])
    overall = np.mean([frame["uncertainty"] for frame in ranking["frames"]])
    print(
        f"  {name}: {len(picked)} of {len(ranking['frames'])} frames, mean uncertainty "
        f"{mean:.3f} (pool {overall:.3f}), {time.perf_counter() - started:.0f} s"
    )
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "select_frames")
    parser.add_argument("--seed-images", type=int, default=16)
    parser.add_argument("--pool", type=int, default=240, help="pool scenes")
    parser.add_argument("--duplicates", type=int, default=1, help="frames per pool scene")
    parser.add_argument(
        "--empty-share", type=float, default=0.0, help="share of pool scenes with no object"
    )
    parser.add_argument("--test-images", type=int, default=60)
    parser.add_argument("--val-images", type=int, default=24, help="to calibrate the threshold")
    parser.add_argument("--score-threshold", type=float, help="instead of calibrating one")
    parser.add_argument("--top-n", type=int, default=24)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--random-draws", type=int, default=2)
    parser.add_argument("--train-seed", type=int, default=1)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="trainings of each selection (seeds from --train-seed)",
    )
    parser.add_argument(
        "--fine-tune",
        action="store_true",
        help="round 1 starts from the seed model's weights (fine-tune by lineage), not scratch",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse an earlier run's models of the same images"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    dataset, seed_ids, pool_ids, pool_dir, test_dir = make_data(
        out, args.seed_images, args.pool, args.duplicates, args.empty_share, args.test_images
    )
    id_of = {im["file_name"]: im["id"] for im in dataset.images}
    print(
        f"{len(seed_ids)} seed images, {len(pool_ids)} pool frames ({args.duplicates} per scene, "
        f"{args.empty_share:.0%} of scenes empty), "
        f"{args.test_images} test images; {args.top_n} frames added; {args.steps} steps at batch 4"
    )
    print("round 0:")
    seed_model, seed_ap, seed_ap50 = train(
        out, "seed", dataset, seed_ids, test_dir, args.steps, args.train_seed, args.reuse
    )
    print("selection:")
    threshold = args.score_threshold
    if threshold is None:
        val = make_shapes_dataset(
            out / "val_dataset", args.val_images, IMAGE_SIZE, CLASSES, max_shapes=3, seed=13
        )
        threshold, f1 = calibrated_threshold(seed_model, Dataset.load(val))
        print(
            f"  threshold {threshold:.3f}: the seed model's best F1 ({f1:.3f}) on "
            f"{args.val_images} val images"
        )
    choices = {
        "select-frames": select(out, "selected", seed_model, pool_dir, args.top_n, 0.5, threshold),
        "uncertainty only (radius 0)": select(
            out, "selected_radius0", seed_model, pool_dir, args.top_n, 0.0, threshold
        ),
    }
    names = sorted(p.name for p in pool_dir.iterdir())
    draws = max(args.random_draws, args.repeats)
    for draw in range(draws):
        choices[f"random #{draw + 1}"] = random.Random(draw).sample(names, args.top_n)
    start = "the seed model" if args.fine_tune else "scratch"
    print(f"round 1 (seed + chosen frames, trained from {start}):")
    results = {}  # (choice, training seed) -> (AP, AP50, "distinct scenes, objects")
    by_image = dataset.annotations_by_image()
    for number, (label, picked) in enumerate(choices.items()):
        ids = seed_ids + [id_of[name] for name in picked]
        scenes = len({name.split(".")[0].split("_")[1] for name in picked})
        objects = sum(len(by_image[id_of[name]]) for name in picked)
        scenes = f"{scenes}, {objects}"
        if label.startswith("random"):  # draw d paired with training seed d
            draw = int(label.split("#")[1]) - 1
            seeds = [args.train_seed + draw % args.repeats]
        else:
            seeds = [args.train_seed + repeat for repeat in range(args.repeats)]
        for seed in seeds:
            name = f"round1_{number}" + (f"_seed{seed}" if seed != args.train_seed else "")
            _, ap, ap50 = train(
                out, name, dataset, ids, test_dir, args.steps, seed, args.reuse,
                seed_model if args.fine_tune else None,
            )  # fmt: skip
            results[(label, seed)] = (ap, ap50, scenes)

    print()
    print(
        f"| frames added ({args.top_n}) | training seed | distinct scenes, objects | test AP "
        "| AP50 |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| none (seed model, {len(seed_ids)} images) | {args.train_seed} | — | {seed_ap:.3f} "
        f"| {seed_ap50:.3f} |"
    )
    for (label, seed), (ap, ap50, scenes) in results.items():
        print(f"| {label} | {seed} | {scenes} | {ap:.3f} | {ap50:.3f} |")
    print()
    print("| arm | trainings | mean AP | std | mean AP50 |")
    print("|---|---|---|---|---|")
    by_arm: dict[str, list[tuple[float, float]]] = {}
    for (label, _), (ap, ap50, _) in results.items():
        by_arm.setdefault(label.split(" #")[0], []).append((ap, ap50))
    for arm, runs in by_arm.items():
        finished = [r for r in runs if np.isfinite(r[0])]  # a diverged training has no AP
        aps, ap50s = [r[0] for r in finished], [r[1] for r in finished]
        diverged = f" ({len(runs) - len(finished)} diverged)" if len(finished) < len(runs) else ""
        print(
            f"| {arm} | {len(aps)}{diverged} | {np.mean(aps):.3f} | {np.std(aps):.3f} "
            f"| {np.mean(ap50s):.3f} |"
        )
    if args.repeats > 1:  # paired by training seed: selection's gain over the random draw
        randoms = {s: v[0] for (k, s), v in results.items() if k.startswith("random")}
        for arm in ("select-frames", "uncertainty only (radius 0)"):
            gains = [results[(arm, s)][0] - randoms[s] for s in randoms if (arm, s) in results]
            gains = [g for g in gains if np.isfinite(g)]
            if gains:
                print(
                    f"\n{arm} minus random, paired by training seed: "
                    + ", ".join(f"{g:+.3f}" for g in gains)
                    + f" (mean {np.mean(gains):+.3f}, {sum(g > 0 for g in gains)} of "
                    f"{len(gains)} positive)"
                )
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
