"""Split one Dataset into train/val/test Datasets: seeded, stratified by class, groups kept whole.

The unit of assignment is a group (images sharing a non-empty `group`) or a lone image; target
sizes are in images. With `stratify`, every class is first placed in every non-empty split while
units carrying it remain (rarest class first), then the rest is assigned by iterative
stratification (Sechidis et al. 2011). Everything that could not be honoured becomes a note in
the Markdown summary and in the validation report.

The output depends only on the input and the parameters: all orders are list or sorted orders
and all randomness comes from `random.Random(seed)` (KFP caching relies on identical bytes).
"""

from __future__ import annotations

import math
import numbers
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..common.dataset import Dataset, group_key
from ..common.report import Report, markdown_cell, write_output

STAGE = "split-dataset"
SPLITS = ("train", "val", "test")
UNASSIGNED = "unassigned"  # the share left over when the fractions sum to less than 1
FRACTION_TOLERANCE = 1e-9

CVAT_SUBSET_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
FREE_SUBSETS = ("", "default")  # CVAT's "no subset": split these images by the fractions


@dataclass
class DatasetSplit:
    """A Dataset split in memory: the three split Datasets (always all three), the Markdown
    summary, and what it says."""

    datasets: dict[str, Dataset]
    summary_markdown: str
    notes: list[str]
    unassigned: Dataset  # images in no split (only when the fractions sum to less than 1)
    targets: dict[str, int]  # target images per split (and UNASSIGNED when fractions sum < 1)
    metadata: dict[str, dict]  # per split, for the KFP artifact metadata
    report: Report = field(default_factory=lambda: Report(STAGE))


@dataclass
class _Unit:
    """What is assigned as one: the images of a group, or a lone image."""

    key: str
    name: str  # the group, or the file name of a lone image
    image_ids: list[int]
    class_images: dict[int, int]  # category id -> images of this unit that show it
    pinned: str | None = None  # the split its CVAT subset names (keep_cvat_subsets)
    rank: int = 0  # seeded tie-break order

    @property
    def size(self) -> int:
        return len(self.image_ids)


class _Assignment:
    """Which split each unit went to, and how far each split is from its targets.

    `buckets` are where free units may go: splits with a fraction > 0, plus UNASSIGNED when the
    fractions sum to less than 1. Pinned units count for class presence, not for the targets.
    """

    def __init__(self, buckets: dict[str, float], targets: dict[str, int], units: list[_Unit]):
        self.buckets = buckets
        self.targets = targets
        self.split_of: dict[str, str] = {}
        self.images = {split: 0 for split in buckets}
        self.class_images = {split: Counter() for split in buckets}
        self.present: dict[str, set[int]] = {split: set() for split in (*SPLITS, UNASSIGNED)}
        self.class_totals: Counter = Counter()
        for unit in units:
            if unit.pinned:
                self.split_of[unit.key] = unit.pinned
                self.present[unit.pinned].update(unit.class_images)
            else:
                self.class_totals.update(unit.class_images)

    def assign(self, unit: _Unit, split: str) -> None:
        self.split_of[unit.key] = split
        self.images[split] += unit.size
        self.class_images[split].update(unit.class_images)
        self.present[split].update(unit.class_images)

    def demand(self, split: str) -> int:
        return self.targets[split] - self.images[split]

    def class_demand(self, split: str, class_id: int) -> float:
        wanted = self.buckets[split] * self.class_totals[class_id]
        return wanted - self.class_images[split][class_id]


# --- public API -----------------------------------------------------------------------------


def split_dataset(
    dataset: Dataset,
    train_fraction: float = 0.8,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    seed: int = 0,
    stratify: bool = True,
    keep_cvat_subsets: bool = False,
) -> DatasetSplit:
    """Split `dataset` into train/val/test Datasets that keep all its categories and its order.

    Raises ValueError for fractions outside [0, 1] or summing above 1, for fewer groups than
    non-empty splits, and (with keep_cvat_subsets) for unknown subset names or groups whose
    images name different subsets.
    """
    fractions = _checked_fractions(train_fraction, val_fraction, test_fraction)
    units = _build_units(dataset)
    notes = _pin_to_cvat_subsets(dataset, units) if keep_cvat_subsets else []
    split_of_unit, targets = _assign_units(units, fractions, seed, stratify, keep_cvat_subsets)

    ids_by_split: dict[str, list[int]] = {name: [] for name in (*SPLITS, UNASSIGNED)}
    for unit in units:
        ids_by_split[split_of_unit[unit.key]] += unit.image_ids
    datasets = {name: dataset.subset(ids_by_split[name]) for name in SPLITS}
    unassigned = dataset.subset(ids_by_split[UNASSIGNED])

    if UNASSIGNED in targets:
        notes.append(_unassigned_note(unassigned, fractions))
    notes += _pinned_outside_fractions_notes(units, fractions)
    notes += _missing_class_notes(dataset, datasets, units, stratify)
    params = {"seed": seed, "stratify": stratify, "keep_cvat_subsets": keep_cvat_subsets}
    messages = [message for _, message in notes]
    return DatasetSplit(
        datasets=datasets,
        summary_markdown=_summary_markdown(
            dataset, datasets, unassigned, units, fractions, targets, params, messages
        ),
        notes=messages,
        unassigned=unassigned,
        targets=targets,
        metadata={
            name: {
                **datasets[name].metadata(),
                "split": name,
                "fraction": fractions[name],
                "target_images": targets[name],
                "num_groups": _group_count(datasets[name]),
                **params,
            }
            for name in SPLITS
        },
        report=_report(notes, unassigned),
    )


@dataclass(frozen=True)
class SplitDatasetResult:
    """What run_split_dataset saved, for the face: artifact metadata and what was not honoured."""

    metadata: dict[str, dict]  # keyed by the face's outputs: train, val, test
    notes: list[str]  # everything that could not be honoured, as in the summary
    targets: dict[str, int]  # target images per split (and UNASSIGNED when fractions sum < 1)


def run_split_dataset(
    dataset_dir: str | Path,
    train_dir: str | Path,
    val_dir: str | Path,
    test_dir: str | Path,
    summary_path: str | Path,
    *,
    train_fraction: float = 0.8,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
    keep_cvat_subsets: bool = False,
) -> SplitDatasetResult:
    """Load the Dataset in `dataset_dir`, split it (see split_dataset), save each split to its
    directory and the Markdown summary to `summary_path`."""
    split = split_dataset(
        Dataset.load(dataset_dir),
        train_fraction,
        val_fraction,
        test_fraction,
        seed=seed,
        stratify=stratify,
        keep_cvat_subsets=keep_cvat_subsets,
    )
    for name, directory in zip(SPLITS, (train_dir, val_dir, test_dir)):
        split.datasets[name].save(directory)
    write_output(summary_path, split.summary_markdown)
    return SplitDatasetResult(metadata=split.metadata, notes=split.notes, targets=split.targets)


# --- parameters and units -------------------------------------------------------------------


def _checked_fractions(train: float, val: float, test: float) -> dict[str, float]:
    given = {"train": train, "val": val, "test": test}
    bad = [
        f"{name}_fraction={value!r}"
        for name, value in given.items()
        if isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and 0 <= value <= 1)
    ]
    if bad:
        raise ValueError(f"each split fraction must be a number in [0, 1]; got {', '.join(bad)}")
    fractions = {name: float(value) for name, value in given.items()}
    total = sum(fractions.values())
    if total > 1 + FRACTION_TOLERANCE:
        raise ValueError(
            f"the split fractions must sum to at most 1; got train {train!r} + val {val!r} + "
            f"test {test!r} = {round(total, 12)!r}"
        )
    if total == 0:
        raise ValueError("every split fraction is 0; give at least one split a fraction > 0")
    return fractions


def _build_units(dataset: Dataset) -> list[_Unit]:
    classes_of_image: dict[int, set[int]] = {image["id"]: set() for image in dataset.images}
    for ann in dataset.annotations:
        classes_of_image[ann["image_id"]].add(ann["category_id"])
    units: dict[str, _Unit] = {}
    for image in dataset.images:
        key = group_key(image)
        if key not in units:
            name = image.get("group") or image.get("file_name", str(image["id"]))
            units[key] = _Unit(key, str(name), [], {})
        unit = units[key]
        unit.image_ids.append(image["id"])
        for class_id in sorted(classes_of_image[image["id"]]):
            unit.class_images[class_id] = unit.class_images.get(class_id, 0) + 1
    return list(units.values())


def _pin_to_cvat_subsets(dataset: Dataset, units: list[_Unit]) -> list[tuple[str, str]]:
    """Pin every unit whose images name a split in their CVAT `subset`; returns notes."""
    subset_of_image: dict[int, tuple[str, str]] = {}
    unknown: Counter = Counter()
    for image in dataset.images:
        raw = image.get("subset") or ""
        name = str(raw).strip().lower()
        if name in FREE_SUBSETS:
            continue
        if name not in CVAT_SUBSET_ALIASES:
            unknown[str(raw)] += 1
            continue
        subset_of_image[image["id"]] = (str(raw), CVAT_SUBSET_ALIASES[name])
    if unknown:
        listed = ", ".join(f"{raw!r} ({_count(n, 'image')})" for raw, n in sorted(unknown.items()))
        raise ValueError(
            f"keep_cvat_subsets: unknown CVAT subset name(s) {listed}; accepted (any case): "
            f"{', '.join(CVAT_SUBSET_ALIASES)}; images with no subset, '' or 'default' are split "
            "by the fractions. Rename the subsets in CVAT or set keep_cvat_subsets=False"
        )

    conflicts, notes = [], []
    for unit in units:
        subsets = [subset_of_image[i] for i in unit.image_ids if i in subset_of_image]
        splits = sorted({split for _, split in subsets})
        if len(splits) > 1:
            raw_names = ", ".join(repr(raw) for raw in sorted({raw for raw, _ in subsets}))
            conflicts.append(f"group {unit.name!r} has images in CVAT subsets {raw_names}")
        elif splits:
            unit.pinned = splits[0]
            if len(subsets) < unit.size:
                notes.append((
                    "group-partly-in-subset",
                    f"group {unit.name!r}: {unit.size - len(subsets)} of its {unit.size} "
                    f"images have no CVAT subset; they follow the others (subset "
                    f"{subsets[0][0]!r}) to {splits[0]}, as a group is never split",
                ))  # fmt: skip
    if conflicts:
        raise ValueError(
            "keep_cvat_subsets: a group must stay in one split, but "
            + "; ".join(conflicts)
            + ". Put each group's images in one subset in CVAT, or set keep_cvat_subsets=False"
        )
    return notes


def _check_enough_units(units, free, needing, fractions, keep_cvat_subsets) -> None:
    if len(free) >= len(needing) and units:
        return
    requested = ", ".join(f"{s} {fractions[s]:g}" for s in needing) or "none"
    free_images = sum(unit.size for unit in free)
    if keep_cvat_subsets:
        raise ValueError(
            f"keep_cvat_subsets: no CVAT subset names the non-empty split(s) {requested}; each "
            "needs at least one group of the images without a subset, but the dataset has "
            f"{_count(free_images, 'image')} in {_count(len(free), 'group')} without one: "
            "set their fraction to 0 or give them images in CVAT"
        )
    all_images = sum(unit.size for unit in units)
    raise ValueError(
        f"{_count(len(needing), 'non-empty split')} requested ({requested}) but the dataset has "
        f"{_count(all_images, 'image')} in {_count(len(units), 'group')}; each non-empty split "
        "needs at least one group (images sharing a `group` stay together): set a fraction to 0 "
        "or add images"
    )


def _target_sizes(n_images: int, buckets: dict[str, float], needing: list[str]) -> dict[str, int]:
    """Images per bucket: fraction × n by largest remainder, at least 1 for each needing split."""
    total = sum(buckets.values())
    exact = {name: n_images * fraction / total for name, fraction in buckets.items()}
    targets = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: targets[name] - exact[name])
    for name in by_remainder[: n_images - sum(targets.values())]:
        targets[name] += 1
    for name in needing:
        if targets[name] == 0:
            donors = [t for t in targets if targets[t] > (1 if t in needing else 0)]
            donor = max(donors, key=lambda t: targets[t])
            targets[donor] -= 1
            targets[name] += 1
    return targets


# --- assignment -----------------------------------------------------------------------------


def _assign_units(units, fractions, seed, stratify, keep_cvat_subsets):
    """The split (or UNASSIGNED) of every unit by key, and the target images per split."""
    free = [unit for unit in units if unit.pinned is None]
    pinned_images = _pinned_image_counts(units)
    needing = [s for s in SPLITS if fractions[s] > 0 and not pinned_images[s]]
    _check_enough_units(units, free, needing, fractions, keep_cvat_subsets)

    rng = random.Random(seed)
    rng.shuffle(free)
    for rank, unit in enumerate(free):
        unit.rank = rank
    buckets = {s: fractions[s] for s in SPLITS if fractions[s] > 0}
    leftover = 1.0 - sum(fractions.values())
    if leftover > FRACTION_TOLERANCE:
        buckets[UNASSIGNED] = leftover
    targets = _target_sizes(sum(unit.size for unit in free), buckets, needing)
    state = _Assignment(buckets, targets, units)

    if stratify:
        free = _place_every_class(state, free, needing)
    free = _give_every_split_a_unit(state, free, needing)
    if stratify:
        free = _fill_stratified(state, free, rng)
    _fill_shuffled(state, free, rng)

    full_targets = {s: targets.get(s, 0) + pinned_images[s] for s in SPLITS}
    if UNASSIGNED in targets:
        full_targets[UNASSIGNED] = targets[UNASSIGNED]
    return state.split_of, full_targets


def _place_every_class(state: _Assignment, free: list[_Unit], needing: list[str]) -> list[_Unit]:
    """For each class, rarest first, give each non-empty split lacking it one unit showing it."""
    carriers = Counter(class_id for unit in free for class_id in unit.class_images)
    splits = [s for s in SPLITS if s in state.buckets]
    for class_id in sorted(carriers, key=lambda c: (carriers[c], state.class_totals[c], c)):
        for split in splits:
            if class_id in state.present[split]:
                continue
            candidates = [unit for unit in free if class_id in unit.class_images]
            if not candidates or not _can_spare_a_unit(state, free, needing, split):
                continue
            chosen = min(candidates, key=lambda unit: _presence_preference(state, unit, split))
            state.assign(chosen, split)
            free = [unit for unit in free if unit is not chosen]
    return free


def _presence_preference(state: _Assignment, unit: _Unit, split: str) -> tuple:
    """Prefer units bringing most classes the split lacks, then units that fit its target."""
    newly_present = len(set(unit.class_images) - state.present[split])
    fits = unit.size <= max(1, state.demand(split))
    return (-newly_present, not fits, unit.rank)


def _can_spare_a_unit(state: _Assignment, free: list[_Unit], needing: list[str], split: str):
    """Whether giving `split` a unit still leaves one for every other empty needing split."""
    still_empty = [s for s in needing if state.images[s] == 0 and s != split]
    return len(free) - 1 >= len(still_empty)


def _give_every_split_a_unit(state: _Assignment, free: list[_Unit], needing: list[str]):
    for split in needing:
        if state.images[split] == 0:
            fitting = [unit for unit in free if unit.size <= max(1, state.demand(split))]
            chosen = fitting[0] if fitting else min(free, key=lambda u: (u.size, u.rank))
            state.assign(chosen, split)
            free = [unit for unit in free if unit is not chosen]
    return free


def _fill_stratified(state: _Assignment, free: list[_Unit], rng: random.Random) -> list[_Unit]:
    """Iterative stratification: rarest remaining class first, to the split wanting it most.

    Returns the units showing no class (background images), still to be placed.
    """
    while True:
        carriers = Counter(class_id for unit in free for class_id in unit.class_images)
        if not carriers:
            return free
        rarest = min(carriers, key=lambda c: (carriers[c], c))

        def wanting_rarest(split: str, rarest=rarest) -> tuple:
            return (state.class_demand(split, rarest), state.demand(split))

        for unit in [unit for unit in free if rarest in unit.class_images]:
            state.assign(unit, _most_wanting(state.buckets, wanting_rarest, rng))
        free = [unit for unit in free if rarest not in unit.class_images]


def _fill_shuffled(state: _Assignment, free: list[_Unit], rng: random.Random) -> None:
    for unit in free:
        state.assign(unit, _most_wanting(state.buckets, state.demand, rng))


def _most_wanting(buckets, demand, rng: random.Random) -> str:
    """The bucket with the largest demand; a seeded choice among ties."""
    best = max(demand(name) for name in buckets)
    tied = [name for name in buckets if demand(name) == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


# --- notes ----------------------------------------------------------------------------------


def _unassigned_note(unassigned: Dataset, fractions) -> tuple[str, str]:
    total = sum(fractions.values())
    leftover = 1 - total
    return (
        "images-unassigned",
        f"{_count(len(unassigned.images), 'image')} ({_count(_group_count(unassigned), 'group')}) "
        f"are in no split: the fractions sum to {total:g}, so {leftover:g} of the images "
        "stay out",
    )


def _pinned_outside_fractions_notes(units, fractions) -> list[tuple[str, str]]:
    pinned_images = _pinned_image_counts(units)
    return [
        (
            "subset-kept-despite-fraction",
            f"{_count(pinned_images[split], 'image')} kept their CVAT subset {split!r} although "
            f"{split}_fraction is 0 (keep_cvat_subsets wins)",
        )
        for split in SPLITS
        if pinned_images[split] and fractions[split] == 0
    ]


def _missing_class_notes(dataset, datasets, units, stratify) -> list[tuple[str, str]]:
    """One note per class absent from a split that has images, saying why."""
    in_use = [s for s in SPLITS if datasets[s].images]
    image_counts = {s: datasets[s].image_counts() for s in in_use}
    notes = []
    for class_id, name in dataset.label_map.items():
        absent = [s for s in in_use if image_counts[s][class_id] == 0]
        if not absent:
            continue
        carriers = [unit for unit in units if class_id in unit.class_images]
        images = sum(unit.class_images[class_id] for unit in carriers)
        where = ", ".join(absent)
        groups = _count(len(carriers), "group")
        if images == 0:
            message = f"class {name!r} has no annotated image: it is in no split"
        elif not stratify:
            message = f"class {name!r} ({_count(images, 'image')}, {groups}) is absent from "
            message += f"{where}: stratify is off"
        elif len(carriers) < len(in_use):
            message = f"class {name!r} has {_count(images, 'image')} ({groups}) for "
            message += f"{len(in_use)} splits: absent from {where}"
        elif any(unit.pinned for unit in carriers):
            pinned = sum(1 for unit in carriers if unit.pinned)
            message = f"class {name!r} ({_count(images, 'image')}, {groups}, {pinned} of them "
            message += f"kept their CVAT subset) is absent from {where}"
        else:
            message = f"class {name!r} ({_count(images, 'image')}, {groups}) is absent from "
            message += f"{where}: its groups went to other splits to place rarer classes or "
            message += "to give every split an image"
        notes.append(("class-missing-from-split", message))
    return notes


def _report(notes: list[tuple[str, str]], unassigned: Dataset) -> Report:
    report = Report(STAGE)
    for code, message in notes:
        report.note(code, message)
    for image in unassigned.images:
        message = "in no split: the fractions sum to less than 1"
        report.skipped("image-unassigned", message, image.get("file_name", image["id"]))
    return report


# --- summary --------------------------------------------------------------------------------


def _summary_markdown(dataset, datasets, unassigned, units, fractions, targets, params, notes):
    mode = (
        "stratified by class (presence in every split first, then iterative stratification)"
        if params["stratify"]
        else "seeded shuffle (not stratified)"
    )
    if params["keep_cvat_subsets"]:
        pinned_images = _pinned_image_counts(units)
        kept = sum(pinned_images.values())
        per_split = ", ".join(f"{s} {pinned_images[s]}" for s in SPLITS if pinned_images[s])
        subsets = f"kept: {_count(kept, 'image')} kept their CVAT subset"
        subsets += f" ({per_split})" if per_split else ""
        subsets += f"; {len(dataset.images) - kept} were split by the fractions"
    else:
        subsets = "ignored"
    lines = [
        "# Dataset split",
        "",
        "- Fractions: " + ", ".join(f"{s} {fractions[s]:g}" for s in SPLITS),
        f"- Seed: {params['seed']}",
        f"- Mode: {mode}; groups are never split",
        f"- CVAT subsets: {subsets}",
        f"- Input: {_count(len(dataset.images), 'image')} in {_count(len(units), 'group')} "
        f"(an image without a `group` is its own), {_count(len(dataset.annotations), 'instance')}, "
        f"{_count(len(dataset.categories), 'class', 'classes')}",
        "",
        "## Images per split",
        "",
        "| split | fraction | target images | images | groups | instances |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in SPLITS:
        split = datasets[name]
        lines.append(
            f"| {name} | {fractions[name]:g} | {targets[name]} | {len(split.images)} "
            f"| {_group_count(split)} | {len(split.annotations)} |"
        )
    if UNASSIGNED in targets:
        leftover = 1 - sum(fractions.values())
        lines.append(
            f"| in no split | {leftover:g} | {targets[UNASSIGNED]} | {len(unassigned.images)} "
            f"| {_group_count(unassigned)} | {len(unassigned.annotations)} |"
        )

    header = "| id | class | " + " | ".join(f"{s} images | {s} instances" for s in SPLITS) + " |"
    lines += ["", "## Classes", "", header, "|---:|---|" + "---:|" * (2 * len(SPLITS))]
    counts = {s: (datasets[s].image_counts(), datasets[s].instance_counts()) for s in SPLITS}
    for class_id, name in dataset.label_map.items():
        cells = [f"{counts[s][0][class_id]} | {counts[s][1][class_id]}" for s in SPLITS]
        lines.append(f"| {class_id} | {markdown_cell(name)} | " + " | ".join(cells) + " |")

    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in notes] or ["- None: every request was honoured."]
    return "\n".join(lines) + "\n"


def _pinned_image_counts(units: list[_Unit]) -> Counter:
    counts: Counter = Counter()
    for unit in units:
        if unit.pinned:
            counts[unit.pinned] += unit.size
    return counts


def _group_count(dataset: Dataset) -> int:
    return len({group_key(image) for image in dataset.images})


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
