"""split-dataset: fractions, stratification, groups, CVAT subsets, determinism, the summary."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cvat_kfp.components.common.dataset import Dataset, group_key
from cvat_kfp.components.split_dataset.split import SPLITS, run_split_dataset, split_dataset

CLASSES = ("apple", "banana", "fig")


def image(*classes, group=None, subset=None) -> dict:
    """One image spec: a class name per instance (repeat a name for more instances)."""
    return {"classes": classes, "group": group, "subset": subset}


def make_dataset(root: Path, specs: list[dict], class_names=CLASSES) -> Dataset:
    """A Dataset with a few-byte file per image under root/images/, ids 1..N in spec order."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": n} for i, n in enumerate(class_names, start=1)]
    class_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for image_id, spec in enumerate(specs, start=1):
        file_name = f"{image_id:04d}.jpg"
        (root / "images" / file_name).write_bytes(f"image {image_id}".encode())
        record = {"id": image_id, "file_name": file_name, "width": 32, "height": 24}
        for key in ("group", "subset"):
            if spec[key] is not None:
                record[key] = spec[key]
        images.append(record)
        for name in spec["classes"]:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": class_id[name],
                "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0,
            })  # fmt: skip
    return Dataset(images, annotations, categories, root, {"info": {"description": "test"}})


def random_multilabel_specs(n_images: int, shares: dict[str, float], seed: int) -> list[dict]:
    rng = random.Random(seed)
    specs = []
    for _ in range(n_images):
        classes = [n for n, share in shares.items() if rng.random() < share]
        specs.append(image(*(c for c in classes for _ in range(rng.randint(1, 3)))))
    return specs


def ids(dataset: Dataset) -> list[int]:
    return [im["id"] for im in dataset.images]


def class_image_counts(dataset: Dataset) -> dict[str, int]:
    names = dict(enumerate(dataset.label_map.names, start=1))
    return {names[c]: n for c, n in dataset.image_counts().items()}


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fractions, expected",
    [
        ((-0.1, 0.5, 0.5), "train_fraction=-0.1"),
        ((0.5, 1.5, 0.0), "val_fraction=1.5"),
        ((0.5, 0.2, float("nan")), "test_fraction=nan"),
        (("0.8", 0.1, 0.1), "train_fraction='0.8'"),
        ((True, 0.0, 0.0), "train_fraction=True"),
        ((0.8, 0.2, 0.1), "sum to at most 1; got train 0.8 + val 0.2 + test 0.1 = 1.1"),
        ((0.0, 0.0, 0.0), "every split fraction is 0"),
    ],
)
def test_bad_fractions_are_refused_naming_the_values(tmp_path, fractions, expected):
    dataset = make_dataset(tmp_path, [image("apple") for _ in range(10)])
    with pytest.raises(ValueError) as error:
        split_dataset(dataset, *fractions)
    assert expected in str(error.value)


def test_fractions_summing_to_one_up_to_float_error_assign_every_image(tmp_path):
    assert 0.7 + 0.2 + 0.1 != 1.0
    dataset = make_dataset(tmp_path, [image("apple") for _ in range(10)], class_names=("apple",))
    result = split_dataset(dataset, 0.7, 0.2, 0.1)
    assert [len(result.datasets[s].images) for s in SPLITS] == [7, 2, 1]
    assert result.unassigned.images == []
    assert result.notes == []
    assert "| in no split |" not in result.summary_markdown


def test_too_few_images_for_the_splits_is_an_error_with_the_counts(tmp_path):
    dataset = make_dataset(tmp_path, [image("apple"), image("fig")])
    with pytest.raises(ValueError) as error:
        split_dataset(dataset)
    assert (
        "3 non-empty splits requested (train 0.8, val 0.1, test 0.1) "
        "but the dataset has 2 images in 2 groups" in str(error.value)
    )


def test_too_few_groups_for_the_splits_is_an_error_with_the_counts(tmp_path):
    specs = [image("apple", group="a") for _ in range(3)] + [image(group="b") for _ in range(2)]
    dataset = make_dataset(tmp_path, specs)
    with pytest.raises(ValueError, match="but the dataset has 5 images in 2 groups"):
        split_dataset(dataset)
    result = split_dataset(dataset, 0.5, 0.5, 0.0)  # two splits fit two groups
    assert sorted(len(result.datasets[s].images) for s in ("train", "val")) == [2, 3]


def test_an_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="the dataset has 0 images in 0 groups"):
        split_dataset(make_dataset(tmp_path, []))


def test_targets_round_by_largest_remainder_and_give_each_split_one_image(tmp_path):
    seven = make_dataset(tmp_path / "seven", [image("apple") for _ in range(7)])
    assert split_dataset(seven, 0.5, 0.25, 0.25).targets == {"train": 3, "val": 2, "test": 2}
    three = make_dataset(tmp_path / "three", [image("apple") for _ in range(3)])
    result = split_dataset(three)
    assert result.targets == {"train": 1, "val": 1, "test": 1}
    assert [len(result.datasets[s].images) for s in SPLITS] == [1, 1, 1]


# --- stratification -------------------------------------------------------------------------


def test_every_class_reaches_every_split_when_the_data_allows(tmp_path):
    specs = [image("apple") for _ in range(30)]
    specs += [image("apple", "banana") for _ in range(3)]
    specs += [image("fig", group="g"), image("fig", group="g")]  # one group of two
    specs += [image("fig", group="h"), image("fig", "fig", group="k")]
    for seed in range(5):
        result = split_dataset(make_dataset(tmp_path, specs), seed=seed)
        for split in SPLITS:
            assert set(class_image_counts(result.datasets[split])) == set(CLASSES), (seed, split)
        assert result.notes == []
        assert "- None: every request was honoured." in result.summary_markdown


def test_a_class_in_fewer_groups_than_splits_is_noted_where_it_is_missing(tmp_path):
    specs = [image("apple") for _ in range(20)] + [image("banana") for _ in range(5)]
    specs += [image("fig", "apple"), image("fig")]
    result = split_dataset(make_dataset(tmp_path, specs))
    note = "class 'fig' has 2 images (2 groups) for 3 splits: absent from test"
    assert result.notes == [note]
    assert f"- {note}" in result.summary_markdown.split("## Notes")[1]
    assert [class_image_counts(result.datasets[s]).get("fig", 0) for s in SPLITS] == [1, 1, 0]


def test_a_class_without_images_is_noted_once(tmp_path):
    specs = [image("apple") for _ in range(10)]
    result = split_dataset(make_dataset(tmp_path, specs, class_names=("apple", "ghost")))
    assert result.notes == ["class 'ghost' has no annotated image: it is in no split"]


def test_multilabel_stratification_keeps_each_class_share_per_split(tmp_path):
    shares = {"a": 0.6, "b": 0.4, "c": 0.25, "d": 0.12, "e": 0.05}
    specs = random_multilabel_specs(300, shares, seed=7)
    dataset = make_dataset(tmp_path, specs, class_names=tuple(shares))
    totals = class_image_counts(dataset)
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}

    def worst_deviation(stratify: bool) -> float:
        result = split_dataset(dataset, *fractions.values(), seed=3, stratify=stratify)
        assert [len(result.datasets[s].images) for s in SPLITS] == [210, 45, 45]
        return max(
            abs(class_image_counts(result.datasets[s]).get(name, 0) - fractions[s] * total)
            for s in SPLITS
            for name, total in totals.items()
        )

    assert worst_deviation(stratify=True) <= 1.5  # images, for every class and split
    assert worst_deviation(stratify=False) > 3  # what a plain shuffle gives on the same data


def test_shuffle_mode_fills_the_target_sizes_exactly_with_single_images(tmp_path):
    dataset = make_dataset(tmp_path, [image("apple") for _ in range(100)])
    result = split_dataset(dataset, 0.7, 0.2, 0.1, stratify=False, seed=4)
    assert [len(result.datasets[s].images) for s in SPLITS] == [70, 20, 10]
    assert "seeded shuffle (not stratified)" in result.summary_markdown


def test_background_images_are_assigned_too(tmp_path):
    specs = [image("apple") for _ in range(10)] + [image() for _ in range(10)]
    for stratify in (True, False):
        result = split_dataset(make_dataset(tmp_path, specs), stratify=stratify)
        assigned = sorted(i for s in SPLITS for i in ids(result.datasets[s]))
        assert assigned == list(range(1, 21))
        backgrounds = [i for s in SPLITS for i in ids(result.datasets[s]) if i > 10]
        assert len(backgrounds) == 10


# --- groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stratify", [True, False])
def test_groups_never_cross_splits_and_big_groups_count_by_images(tmp_path, stratify):
    rng = random.Random(11)
    specs = []
    for g in range(50):
        size, classes = rng.randint(1, 8), rng.sample(CLASSES, rng.randint(0, 2))
        specs += [image(*classes, group=f"video {g}" if size > 1 else "") for _ in range(size)]
    dataset = make_dataset(tmp_path, specs)
    result = split_dataset(dataset, seed=2, stratify=stratify)

    split_of_group: dict[str, str] = {}
    for split in SPLITS:
        for record in result.datasets[split].images:
            assert split_of_group.setdefault(group_key(record), split) == split
    assert sorted(i for s in SPLITS for i in ids(result.datasets[s])) == ids(dataset)
    for split in SPLITS:  # within one biggest group of the target, in images
        assert abs(len(result.datasets[split].images) - result.targets[split]) <= 8


# --- CVAT subsets ---------------------------------------------------------------------------


def test_keep_cvat_subsets_keeps_named_subsets_and_splits_the_rest(tmp_path):
    specs = [image("apple", subset="Train") for _ in range(5)]
    specs += [image("banana", subset="validation") for _ in range(3)]
    specs += [image("fig", subset=" TEST ") for _ in range(2)]
    free_subsets = [None, "", "default", "Default"] * 5
    specs += [image("apple", "fig", subset=s) for s in free_subsets]
    result = split_dataset(make_dataset(tmp_path, specs), keep_cvat_subsets=True)

    assert ids(result.datasets["train"])[:5] == [1, 2, 3, 4, 5]
    assert ids(result.datasets["val"])[:3] == [6, 7, 8]
    assert ids(result.datasets["test"])[:2] == [9, 10]
    assert [len(result.datasets[s].images) for s in SPLITS] == [5 + 16, 3 + 2, 2 + 2]
    assert "10 images kept their CVAT subset (train 5, val 3, test 2)" in result.summary_markdown
    assert "20 were split by the fractions" in result.summary_markdown


def test_keep_cvat_subsets_moves_a_partly_labelled_group_whole(tmp_path):
    specs = [image("apple", group="clip", subset="val"), image("apple", group="clip")]
    specs += [image("apple") for _ in range(10)]
    dataset = make_dataset(tmp_path, specs, class_names=("apple",))
    result = split_dataset(dataset, keep_cvat_subsets=True)
    assert ids(result.datasets["val"])[:2] == [1, 2]
    assert result.notes == [
        "group 'clip': 1 of its 2 images have no CVAT subset; they follow the others "
        "(subset 'val') to val, as a group is never split"
    ]


def test_keep_cvat_subsets_refuses_unknown_subset_names(tmp_path):
    specs = [image("apple", subset=s) for s in ("train", "holdout", "holdout", "Extra")]
    with pytest.raises(ValueError) as error:
        split_dataset(make_dataset(tmp_path, specs), keep_cvat_subsets=True)
    message = str(error.value)
    assert "unknown CVAT subset name(s) 'Extra' (1 image), 'holdout' (2 images)" in message
    assert "train, training, val, valid, validation, test, testing" in message


def test_keep_cvat_subsets_refuses_a_group_across_subsets(tmp_path):
    specs = [image("apple", group="clip 7", subset=s) for s in ("Train", "Validation", "")]
    specs += [image("apple") for _ in range(5)]
    with pytest.raises(ValueError) as error:
        split_dataset(make_dataset(tmp_path, specs), keep_cvat_subsets=True)
    assert "group 'clip 7' has images in CVAT subsets 'Train', 'Validation'" in str(error.value)


def test_keep_cvat_subsets_with_no_image_for_a_requested_split_is_an_error(tmp_path):
    specs = [image("apple", subset="train") for _ in range(8)] + [image("fig", subset="val")]
    dataset = make_dataset(tmp_path, specs)
    message = r"no CVAT subset names the non-empty split\(s\) test 0.1; .* has 0 images in 0 groups"
    with pytest.raises(ValueError, match=message):
        split_dataset(dataset, keep_cvat_subsets=True)
    result = split_dataset(dataset, 0.9, 0.1, 0.0, keep_cvat_subsets=True)
    assert [len(result.datasets[s].images) for s in SPLITS] == [8, 1, 0]


def test_subsets_are_ignored_unless_asked(tmp_path):
    specs = [image("apple", subset="holdout") for _ in range(10)]
    result = split_dataset(make_dataset(tmp_path, specs))
    assert [len(result.datasets[s].images) for s in SPLITS] == [8, 1, 1]
    assert "- CVAT subsets: ignored" in result.summary_markdown


# --- outputs --------------------------------------------------------------------------------


def test_fractions_below_one_leave_images_out_and_say_so(tmp_path):
    dataset = make_dataset(tmp_path, [image("apple") for _ in range(20)])
    result = split_dataset(dataset, 0.6, 0.2, 0.1)
    assert [len(result.datasets[s].images) for s in SPLITS] == [12, 4, 2]
    assert len(result.unassigned.images) == 2
    note = "2 images (2 groups) are in no split: the fractions sum to 0.9, so 0.1 of the images"
    assert note in result.summary_markdown
    assert "| in no split | 0.1 | 2 | 2 | 2 | 2 |" in result.summary_markdown
    skipped = result.report.of("skipped")
    assert [e.location for e in skipped] == [im["file_name"] for im in result.unassigned.images]


def test_a_zero_fraction_gives_an_empty_dataset_with_every_class(tmp_path):
    dataset = make_dataset(tmp_path / "in", [image("apple", "fig") for _ in range(10)])
    out = {s: tmp_path / s for s in SPLITS}
    saved = dataset.save(tmp_path / "saved")
    result = run_split_dataset(
        saved, *out.values(), tmp_path / "summary.md",
        train_fraction=0.8, val_fraction=0.2, test_fraction=0.0,
    )  # fmt: skip
    assert result.metadata["test"]["num_images"] == 0
    loaded = Dataset.load(out["test"])
    assert loaded.images == [] and loaded.annotations == []
    assert loaded.categories == dataset.categories
    assert len(Dataset.load(out["train"]).images) + len(Dataset.load(out["val"]).images) == 10


def test_saved_splits_load_and_keep_classes_extra_keys_and_input_order(tmp_path):
    specs = random_multilabel_specs(40, {"apple": 0.5, "banana": 0.3, "fig": 0.2}, seed=1)
    dataset = make_dataset(tmp_path / "in", specs)
    random.Random(0).shuffle(dataset.images)  # input order is not id order
    out = {s: tmp_path / "out" / s for s in SPLITS}
    summary = tmp_path / "out" / "summary.md"
    result = run_split_dataset(dataset.save(tmp_path / "saved"), *out.values(), summary, seed=5)
    in_memory = split_dataset(dataset, seed=5)

    position = {record["id"]: k for k, record in enumerate(dataset.images)}
    for split in SPLITS:
        loaded = Dataset.load(out[split])
        assert loaded.categories == dataset.categories
        assert loaded.extra == {"info": {"description": "test"}}
        assert ids(loaded) == sorted(ids(loaded), key=position.__getitem__)
        assert ids(loaded) == ids(in_memory.datasets[split])
        assert result.metadata[split]["num_images"] == len(loaded.images)
        assert result.metadata[split]["class_names"] == list(CLASSES)
    assert result.metadata == in_memory.metadata and result.notes == in_memory.notes
    assert summary.read_text(encoding="utf-8") == in_memory.summary_markdown


def test_summary_tables_escape_class_names(tmp_path):
    names = ("a|b", "two\nlines", "back\\slash")
    specs = [image(*names) for _ in range(10)]
    summary = split_dataset(make_dataset(tmp_path, specs, class_names=names)).summary_markdown
    table = summary.split("## Classes")[1].split("## Notes")[0].strip().splitlines()
    cells = [len(re.split(r"(?<!\\)\|", row)) for row in table]
    assert cells == [cells[0]] * 5
    assert r"| 1 | a\|b | 8 | 8 |" in summary
    assert "| 2 | two lines |" in summary
    assert "| 3 | back\\\\slash |" in summary


# --- determinism ----------------------------------------------------------------------------

SUBPROCESS_SPLIT = """
import sys
from cvat_kfp.components.split_dataset.split import run_split_dataset
source, out = sys.argv[1], sys.argv[2]
outs = [f"{out}/{s}" for s in ("train", "val", "test")]
run_split_dataset(source, *outs, f"{out}/summary.md", seed=9, keep_cvat_subsets=True)
"""


def test_same_input_and_seed_give_byte_identical_files_across_processes(tmp_path):
    rng = random.Random(3)
    specs = [
        image(*rng.sample(CLASSES, rng.randint(0, 3)), group=f"g{rng.randint(0, 30)}",
              subset=rng.choice(["", "default", "Train", None, None, None]))
        for _ in range(120)
    ]  # fmt: skip
    source = make_dataset(tmp_path / "in", specs).save(tmp_path / "saved")

    def run_here(out: Path) -> dict[str, bytes]:
        outs = [out / s for s in SPLITS]
        run_split_dataset(source, *outs, out / "summary.md", seed=9, keep_cvat_subsets=True)
        return tree_bytes(out)

    first = run_here(tmp_path / "first")
    assert run_here(tmp_path / "second") == first
    hash_seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "17"
    subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SPLIT, str(source), str(tmp_path / "third")],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        check=True,
        timeout=60,
    )
    assert tree_bytes(tmp_path / "third") == first
    assert {"train/annotations.json", "summary.md"} <= set(first)


def test_different_seeds_give_different_splits(tmp_path):
    specs = random_multilabel_specs(60, {"apple": 0.5, "banana": 0.3, "fig": 0.2}, seed=2)
    dataset = make_dataset(tmp_path, specs)
    for stratify in (True, False):
        a = split_dataset(dataset, seed=0, stratify=stratify)
        b = split_dataset(dataset, seed=1, stratify=stratify)
        assert ids(a.datasets["val"]) != ids(b.datasets["val"])
        assert [len(a.datasets[s].images) for s in SPLITS] == [48, 6, 6]


# --- real data ------------------------------------------------------------------------------


def test_fruits_nuts_every_class_in_every_split(shared_test_data):
    data = shared_test_data / "fruits_nuts_coco" / "data"
    coco = json.loads((data / "trainval.json").read_text(encoding="utf-8"))
    dataset = Dataset.from_coco(coco, data)
    for seed in range(3):
        result = split_dataset(dataset, seed=seed)
        assert [len(result.datasets[s].images) for s in SPLITS] == [14, 2, 2]
        for split in SPLITS:
            part = result.datasets[split]
            assert part.validate() == []
            assert set(class_image_counts(part)) == {"date", "fig", "hazelnut"}
        assert result.notes == []
