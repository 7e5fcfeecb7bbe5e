"""The Dataset artifact: loading, every validation rule, saving, and the views stages use."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from cvat_kfp.components.common import dataset as dataset_module
from cvat_kfp.components.common.dataset import (
    ANNOTATIONS_FILE,
    IMAGES_DIR,
    MAX_LISTED_PROBLEMS,
    Dataset,
    DatasetError,
    group_key,
)
from cvat_kfp.components.common.synthetic import make_shapes_dataset

WIDTH, HEIGHT = 128, 96  # make_shapes_dataset's default image size


@pytest.fixture
def shapes(tmp_path) -> Path:
    """A valid 4-image shapes Dataset directory; image ids 1..4, annotation ids 1..N."""
    return make_shapes_dataset(tmp_path / "shapes", num_images=4, seed=3)


def read_coco(root: Path) -> dict:
    return json.loads((root / ANNOTATIONS_FILE).read_text(encoding="utf-8"))


def write_coco(root: Path, coco: dict) -> None:
    (root / ANNOTATIONS_FILE).write_text(json.dumps(coco), encoding="utf-8")


def problems_after(root: Path, edit) -> list[str]:
    """Edit annotations.json in place with `edit(coco)`, load it, return the problems listed."""
    coco = read_coco(root)
    edit(coco)
    write_coco(root, coco)
    with pytest.raises(DatasetError) as error:
        Dataset.load(root)
    assert error.value.source == str(root / ANNOTATIONS_FILE)
    for problem in error.value.problems[:MAX_LISTED_PROBLEMS]:  # the message lists them
        assert f"  - {problem}" in str(error.value)
    return error.value.problems


def write_image(path: Path, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def small_dataset(root: Path, file_names: list[str]) -> Dataset:
    """A hand-made Dataset with one box per image; its image files written under root/images."""
    images, annotations = [], []
    for image_id, name in enumerate(file_names, start=1):
        write_image(root / IMAGES_DIR / name)
        images.append({"id": image_id, "file_name": name, "width": 8, "height": 6})
        annotations.append(
            {"id": image_id, "image_id": image_id, "category_id": 1, "bbox": [1, 1, 2, 2],
             "area": 4, "iscrowd": 0, "segmentation": []}
        )  # fmt: skip
    categories = [{"id": 1, "name": "thing", "supercategory": ""}]
    dataset = Dataset(images, annotations, categories, root=root)
    dataset.save(root)
    return dataset


# --- loading a valid Dataset ------------------------------------------------------------------


def test_load_reads_a_valid_dataset(shapes):
    coco = read_coco(shapes)
    dataset = Dataset.load(shapes)
    assert dataset.root == shapes
    assert dataset.images == coco["images"]
    assert dataset.annotations == coco["annotations"]
    assert dataset.categories == coco["categories"]
    assert dataset.extra == {}
    assert dataset.validate() == []
    assert dataset.label_map.names == ("circle", "square", "triangle")
    assert dataset.image_path(dataset.images[0]) == shapes / IMAGES_DIR / "shapes_00001.jpg"


def test_load_takes_a_string_path(shapes):
    assert Dataset.load(str(shapes)).root == shapes


def test_to_coco_keeps_extra_keys():
    dataset = Dataset.from_coco(
        {"info": {"year": 2024}, "images": [], "annotations": [], "categories": []}
    )
    assert dataset.extra == {"info": {"year": 2024}}
    assert dataset.to_coco() == {
        "info": {"year": 2024}, "images": [], "annotations": [], "categories": [],
    }  # fmt: skip


def test_dataset_without_root_cannot_find_images():
    dataset = Dataset([{"id": 1, "file_name": "a.jpg", "width": 1, "height": 1}], [], [])
    with pytest.raises(ValueError, match="no root directory"):
        dataset.image_path(dataset.images[0])


def test_check_files_false_skips_the_file_check(shapes):
    (shapes / IMAGES_DIR / "shapes_00002.jpg").unlink()
    with pytest.raises(DatasetError, match="shapes_00002.jpg does not exist"):
        Dataset.load(shapes)
    assert Dataset.load(shapes, check_files=False).validate(check_files=False) == []


# --- reading failures -------------------------------------------------------------------------


def test_missing_annotations_file(tmp_path):
    with pytest.raises(DatasetError) as error:
        Dataset.load(tmp_path)
    assert error.value.source == str(tmp_path)
    assert error.value.problems == [
        "no annotations.json here; a Dataset artifact is a directory holding annotations.json "
        "and images/ (made by export-annotations)"
    ]


def test_a_directory_named_annotations_json_is_not_the_file(tmp_path):
    (tmp_path / ANNOTATIONS_FILE).mkdir()
    with pytest.raises(DatasetError, match="no annotations.json here"):
        Dataset.load(tmp_path)


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"images": [', b"\xff\xfe{}"])
def test_invalid_json(tmp_path, content):
    (tmp_path / ANNOTATIONS_FILE).write_bytes(content)
    with pytest.raises(DatasetError) as error:
        Dataset.load(tmp_path)
    assert error.value.source == str(tmp_path / ANNOTATIONS_FILE)
    assert len(error.value.problems) == 1
    assert error.value.problems[0].startswith("not valid UTF-8 JSON: ")


@pytest.mark.parametrize(
    "coco, problem",
    [
        ([], "the top level must be a JSON object"),
        ("text", "the top level must be a JSON object"),
        ({}, "missing top-level key(s) ['images', 'annotations', 'categories']"),
        ({"images": [], "categories": []}, "missing top-level key(s) ['annotations']"),
        ({"images": {}, "annotations": [], "categories": None},
         "top-level key(s) ['images', 'categories'] must be lists"),
    ],
)  # fmt: skip
def test_top_level_shape(tmp_path, coco, problem):
    write_coco(tmp_path, coco)
    with pytest.raises(DatasetError) as error:
        Dataset.load(tmp_path)
    assert error.value.problems == [problem]


# --- validation rules: each problem names the place -------------------------------------------


def set_image(index, **fields):
    def edit(coco):
        coco["images"][index].update(fields)

    return edit


def set_annotation(index, **fields):
    def edit(coco):
        coco["annotations"][index].update(fields)

    return edit


ANN_1 = "annotation id 1 (image 'shapes_00001.jpg')"


@pytest.mark.parametrize(
    "edit, expected",
    [
        # images
        pytest.param(set_image(0, width=0), "image id 1: width 0 must be a positive integer",
                     id="zero-width"),
        pytest.param(set_image(1, height=-96), "image id 2: height -96 must be a positive integer",
                     id="negative-height"),
        pytest.param(set_image(0, width="128"),
                     "image id 1: width '128' must be a positive integer", id="string-width"),
        pytest.param(set_image(0, width=128.0),
                     "image id 1: width 128.0 must be a positive integer", id="float-width"),
        pytest.param(set_image(0, height=True),
                     "image id 1: height True must be a positive integer", id="bool-height"),
        pytest.param(set_image(2, group=7), "image id 3: group 7 must be a string", id="int-group"),
        pytest.param(set_image(0, frame=-1), "image id 1: frame -1 must be a non-negative integer",
                     id="negative-frame"),
        pytest.param(set_annotation(0, source=3),
                     "annotation id 1 (image 'shapes_00001.jpg'): source 3 must be a non-empty "
                     "string",
                     id="int-source"),
        pytest.param(set_image(0, subset=["train"]),
                     "image id 1: subset ['train'] must be a string", id="list-subset"),
        pytest.param(set_image(0, id="1"), "images[0]: id '1' must be a non-negative integer",
                     id="string-image-id"),
        pytest.param(set_image(3, id=-4), "images[3]: id -4 must be a non-negative integer",
                     id="negative-image-id"),
        pytest.param(lambda c: c["images"].append("x.jpg"), "images[4]: not an object",
                     id="image-not-object"),
        # annotations
        pytest.param(set_annotation(0, bbox=[0, 0, -1, 5]),
                     f"{ANN_1}: bbox [0, 0, -1, 5] has a negative width or height",
                     id="negative-bbox-width"),
        pytest.param(set_annotation(0, bbox=[0, 0, 5, -0.5]),
                     f"{ANN_1}: bbox [0, 0, 5, -0.5] has a negative width or height",
                     id="negative-bbox-height"),
        pytest.param(set_annotation(0, bbox=[1, 2, 3]),
                     f"{ANN_1}: bbox [1, 2, 3] must be [x, y, width, height] in pixels",
                     id="bbox-three-numbers"),
        pytest.param(set_annotation(0, bbox=[1, 2, 3, "4"]),
                     f"{ANN_1}: bbox [1, 2, 3, '4'] must be [x, y, width, height] in pixels",
                     id="bbox-string-number"),
        pytest.param(set_annotation(0, bbox=[1, 2, 3, float("nan")]),
                     f"{ANN_1}: bbox [1, 2, 3, nan] must be [x, y, width, height] in pixels",
                     id="bbox-nan"),
        pytest.param(set_annotation(0, bbox={"x": 1}),
                     f"{ANN_1}: bbox {{'x': 1}} must be [x, y, width, height] in pixels",
                     id="bbox-object"),
        pytest.param(lambda c: c["annotations"][0].pop("bbox"),
                     f"{ANN_1}: bbox None must be [x, y, width, height] in pixels", id="no-bbox"),
        pytest.param(set_annotation(0, iscrowd=2), f"{ANN_1}: iscrowd 2 must be 0 or 1",
                     id="iscrowd-2"),
        pytest.param(set_annotation(0, iscrowd="0"), f"{ANN_1}: iscrowd '0' must be 0 or 1",
                     id="iscrowd-string"),
        pytest.param(set_annotation(0, area=-1), f"{ANN_1}: area -1 must be a non-negative number",
                     id="negative-area"),
        pytest.param(set_annotation(0, area="big"),
                     f"{ANN_1}: area 'big' must be a non-negative number", id="string-area"),
        pytest.param(set_annotation(0, segmentation=[[0, 0, 5, 0, 5, 5, 9]]),
                     f"{ANN_1}: polygon 0 has 7 coordinates; "
                     "a polygon needs an even count of at least 6 (3 points)", id="odd-polygon"),
        pytest.param(set_annotation(0, segmentation=[[0, 0, 5, 0, 5, 5], [0, 0, 5, 5]]),
                     f"{ANN_1}: polygon 1 has 4 coordinates; "
                     "a polygon needs an even count of at least 6 (3 points)", id="short-polygon"),
        pytest.param(set_annotation(0, segmentation=[[0, 0, 5, 0, 5, "5"]]),
                     f"{ANN_1}: polygon 0 must be a flat list of numbers", id="polygon-string"),
        pytest.param(set_annotation(0, segmentation=[[[0, 0], [5, 0], [5, 5]]]),
                     f"{ANN_1}: polygon 0 must be a flat list of numbers", id="polygon-nested"),
        pytest.param(set_annotation(0, segmentation={"size": [HEIGHT, WIDTH + 1], "counts": "0"}),
                     f"{ANN_1}: RLE size [{HEIGHT}, {WIDTH + 1}] differs from the image's "
                     f"[height, width] [{HEIGHT}, {WIDTH}]", id="rle-size-mismatch"),
        pytest.param(set_annotation(0, segmentation={"size": [WIDTH, HEIGHT], "counts": [1]}),
                     f"{ANN_1}: RLE size [{WIDTH}, {HEIGHT}] differs from the image's "
                     f"[height, width] [{HEIGHT}, {WIDTH}]", id="rle-size-transposed"),
        pytest.param(set_annotation(0, segmentation={"size": [HEIGHT], "counts": "0"}),
                     f"{ANN_1}: RLE size [{HEIGHT}] must be [height, width]", id="rle-size-short"),
        pytest.param(set_annotation(0, segmentation={"size": [HEIGHT, WIDTH], "counts": 5}),
                     f"{ANN_1}: RLE counts must be a string or a list of integers",
                     id="rle-counts-int"),
        pytest.param(set_annotation(0, segmentation={"size": [HEIGHT, WIDTH], "counts": [1.5]}),
                     f"{ANN_1}: RLE counts must be a string or a list of integers",
                     id="rle-counts-floats"),
        pytest.param(set_annotation(0, segmentation="polygon"),
                     f"{ANN_1}: segmentation must be a list of polygons or an RLE object",
                     id="segmentation-string"),
        pytest.param(lambda c: c["annotations"].append(7),
                     None, id="annotation-not-object"),  # checked below: index varies
        # references
        pytest.param(set_annotation(0, image_id=999),
                     "annotation id 1: image_id 999 names no image", id="unknown-image"),
        pytest.param(lambda c: c["annotations"][0].pop("image_id"),
                     "annotation id 1: image_id None names no image", id="no-image-id"),
        pytest.param(set_annotation(0, image_id=[1]),
                     "annotation id 1: image_id [1] names no image", id="unhashable-image-id"),
        pytest.param(set_annotation(0, image_id=1.0),
                     "annotation id 1: image_id 1.0 names no image", id="float-image-id"),
        pytest.param(set_annotation(0, category_id=99),
                     f"{ANN_1}: category_id 99 names no category; valid ids are [1, 2, 3]",
                     id="unknown-category"),
        pytest.param(set_annotation(0, category_id=0),
                     f"{ANN_1}: category_id 0 names no category; valid ids are [1, 2, 3]",
                     id="background-category"),
        pytest.param(set_annotation(0, category_id=[1]),
                     f"{ANN_1}: category_id [1] names no category; valid ids are [1, 2, 3]",
                     id="unhashable-category-id"),
        pytest.param(set_annotation(0, category_id=True),
                     f"{ANN_1}: category_id True names no category; valid ids are [1, 2, 3]",
                     id="bool-category-id"),
        pytest.param(set_annotation(0, id="1"), "annotations[0]: id '1' must be an integer",
                     id="string-annotation-id"),
        # categories
        pytest.param(lambda c: c["categories"][2].update(id=4),
                     "categories: class ids must be 1..3 with no gaps (0 is background), "
                     "got [1, 2, 4]", id="category-gap"),
        pytest.param(lambda c: c["categories"][1].update(name="circle"),
                     "categories: class name 'circle' is used by ids 1 and 2; names must be unique",
                     id="category-duplicate-name"),
        pytest.param(lambda c: c["categories"].append("dog"), "categories[3]: not an object",
                     id="category-not-object"),
        pytest.param(lambda c: c["categories"].append({"id": [4], "name": "dog"}),
                     "categories: class id [4] of 'dog' is not an integer",
                     id="category-unhashable-id"),
    ],
)  # fmt: skip
def test_each_rule_names_the_place(shapes, edit, expected):
    problems = problems_after(shapes, edit)
    if expected is None:
        expected = f"annotations[{len(read_coco(shapes)['annotations']) - 1}]: not an object"
    assert expected in problems, problems


def test_empty_categories_are_refused(shapes):
    problems = problems_after(shapes, lambda c: c.update(categories=[]))
    assert "categories: label map is empty: the dataset needs at least one class" in problems


def test_duplicate_image_ids(shapes):
    problems = problems_after(shapes, set_image(1, id=1))
    assert "image id 1: the id is used by more than one image" in problems
    # the first image with the id keeps it, so annotations of image 2 now point nowhere
    assert any("image_id 2 names no image" in p for p in problems)


def test_duplicate_annotation_ids(shapes):
    problems = problems_after(shapes, set_annotation(1, id=1))
    assert problems == ["annotation id 1: the id is used by more than one annotation"]


@pytest.mark.parametrize(
    "file_name",
    ["../x.jpg", "a/../../x.jpg", "/abs.jpg", "a\\b.jpg", "", ".", "./", "..", "nul\x00.jpg", None],
)
def test_unsafe_file_names(shapes, file_name):
    problems = problems_after(shapes, set_image(0, file_name=file_name))
    assert problems == [
        f"image id 1: file_name {file_name!r} must be a relative path inside images/ "
        "(no '..', no leading '/', forward slashes)"
    ]


def test_missing_image_file_is_named(shapes):
    (shapes / IMAGES_DIR / "shapes_00003.jpg").unlink()
    with pytest.raises(DatasetError) as error:
        Dataset.load(shapes)
    assert error.value.problems == ["image id 3: image file images/shapes_00003.jpg does not exist"]


def test_a_directory_is_not_an_image_file(shapes):
    (shapes / IMAGES_DIR / "shapes_00003.jpg").unlink()
    (shapes / IMAGES_DIR / "shapes_00003.jpg").mkdir()
    with pytest.raises(DatasetError, match="shapes_00003.jpg does not exist"):
        Dataset.load(shapes)


def test_valid_optional_fields_pass(shapes):
    coco = read_coco(shapes)
    coco["images"][0].update(subset="train", group="video_1")
    coco["images"][1].update(subset=None, group=None)
    coco["images"][2]["id"] = 0  # 0 is a valid image id (only category 0 is reserved)
    for ann in coco["annotations"]:
        if ann["image_id"] == 3:
            ann["image_id"] = 0
    coco["annotations"][0].update(iscrowd=1, segmentation={"size": [HEIGHT, WIDTH], "counts": "x"})
    coco["annotations"][1].pop("area")
    coco["annotations"][1].pop("iscrowd")
    coco["annotations"][2].update(segmentation=[], bbox=[0.5, 1.5, 0, 0])
    coco["annotations"][3].update(segmentation={"size": [HEIGHT, WIDTH], "counts": [0, 5, 2]})
    write_coco(shapes, coco)
    assert Dataset.load(shapes).validate() == []


# --- the error lists everything, up to a limit ------------------------------------------------


def test_every_problem_is_listed_at_once(shapes):
    def edit(coco):
        coco["images"][0]["width"] = 0
        coco["images"][1]["file_name"] = "../up.jpg"
        coco["annotations"][0]["iscrowd"] = 5
        coco["annotations"][1]["category_id"] = 42
        coco["categories"][0]["name"] = " "

    (shapes / IMAGES_DIR / "shapes_00004.jpg").unlink()
    problems = problems_after(shapes, edit)
    assert len(problems) == 6, problems
    for words in ("class id 1 has a blank name", "image id 1: width 0", "file_name '../up.jpg'",
                  "image id 4: image file", "iscrowd 5", "category_id 42"):  # fmt: skip
        assert sum(words in p for p in problems) == 1, (words, problems)


def test_dataset_error_message_truncates_after_the_limit():
    assert MAX_LISTED_PROBLEMS == 25
    problems = [f"problem number {i}" for i in range(1, 31)]
    error = DatasetError("here/annotations.json", problems)
    message = str(error)
    assert message.startswith("here/annotations.json: 30 problem(s) in the dataset:\n")
    assert "  - problem number 25\n" in message
    assert "problem number 26" not in message
    assert message.endswith("\n  ... and 5 more")
    assert error.problems == problems  # the exception itself keeps them all


def test_dataset_error_at_the_limit_has_no_tail():
    message = str(DatasetError("x", [f"p{i}" for i in range(25)]))
    assert "more" not in message
    assert message.count("\n  - ") == 25


def test_many_problems_in_a_real_dataset_are_all_collected(tmp_path):
    root = make_shapes_dataset(tmp_path / "many", num_images=30, seed=0)
    problems = problems_after(root, lambda c: [im.update(width=-1) for im in c["images"]])
    assert len(problems) == 30
    with pytest.raises(DatasetError, match=r"\.\.\. and 5 more$"):
        Dataset.load(root)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


# --- saving -----------------------------------------------------------------------------------


def test_save_is_byte_identical_for_the_same_content(shapes, tmp_path):
    dataset = Dataset.load(shapes)
    dataset.save(tmp_path / "a")
    dataset.save(tmp_path / "b")
    first = (tmp_path / "a" / ANNOTATIONS_FILE).read_bytes()
    assert (tmp_path / "b" / ANNOTATIONS_FILE).read_bytes() == first
    Dataset.load(tmp_path / "a").save(tmp_path / "c")  # a saved copy saves the same again
    assert (tmp_path / "c" / ANNOTATIONS_FILE).read_bytes() == first
    dataset.save(tmp_path / "a")  # saving over an earlier save
    assert (tmp_path / "a" / ANNOTATIONS_FILE).read_bytes() == first
    assert not (tmp_path / "a" / (ANNOTATIONS_FILE + ".tmp")).exists()


def test_save_writes_compact_utf8_json(tmp_path):
    dataset = Dataset([], [], [{"id": 1, "name": "猫", "supercategory": ""}])
    dataset.save(tmp_path)
    raw = (tmp_path / ANNOTATIONS_FILE).read_bytes()
    assert "猫".encode() in raw
    assert b": " not in raw and b", " not in raw
    assert (tmp_path / IMAGES_DIR).is_dir()


def test_save_links_or_copies_every_image(shapes, tmp_path):
    dataset = Dataset.load(shapes)
    out = dataset.save(tmp_path / "out")
    assert out == tmp_path / "out"
    saved = sorted(p.name for p in (out / IMAGES_DIR).iterdir())
    assert saved == sorted(im["file_name"] for im in dataset.images)
    for image in dataset.images:
        src, dst = dataset.image_path(image), out / IMAGES_DIR / image["file_name"]
        assert dst.read_bytes() == src.read_bytes()
        assert os.path.samefile(src, dst)  # same filesystem: a hard link, not a copy
    assert Dataset.load(out).validate() == []


def test_save_copies_when_hard_links_fail(shapes, tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError("cross-device link")

    monkeypatch.setattr(dataset_module.os, "link", no_links)
    dataset = Dataset.load(shapes)
    out = dataset.save(tmp_path / "copied")
    for image in dataset.images:
        src, dst = dataset.image_path(image), out / IMAGES_DIR / image["file_name"]
        assert dst.read_bytes() == src.read_bytes()
        assert not os.path.samefile(src, dst)


def test_save_replaces_a_stale_image_at_the_destination(shapes, tmp_path):
    out = tmp_path / "out"
    (out / IMAGES_DIR).mkdir(parents=True)
    (out / IMAGES_DIR / "shapes_00001.jpg").write_bytes(b"stale")
    Dataset.load(shapes).save(out)
    assert (out / IMAGES_DIR / "shapes_00001.jpg").read_bytes() == (
        shapes / IMAGES_DIR / "shapes_00001.jpg"
    ).read_bytes()


def test_save_into_its_own_root_keeps_the_images(shapes):
    before = {p.name: p.read_bytes() for p in (shapes / IMAGES_DIR).iterdir()}
    Dataset.load(shapes).save(shapes)
    after = {p.name: p.read_bytes() for p in (shapes / IMAGES_DIR).iterdir()}
    assert after == before
    assert Dataset.load(shapes).validate() == []


def test_save_without_root_writes_only_the_json(tmp_path):
    dataset = Dataset(
        [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
        [],
        [{"id": 1, "name": "thing"}],
    )
    dataset.save(tmp_path / "out")
    assert list((tmp_path / "out" / IMAGES_DIR).iterdir()) == []
    assert read_coco(tmp_path / "out")["images"] == dataset.images


def test_subdirectories_in_file_name(tmp_path):
    names = ["task_1/frame_000001.png", "task_1/deep/er/frame_2.png", "top.png"]
    small_dataset(tmp_path / "src", names)
    Dataset.load(tmp_path / "src").save(tmp_path / "out")
    for name in names:
        assert (tmp_path / "out" / IMAGES_DIR / name).is_file()
    loaded = Dataset.load(tmp_path / "out")
    assert [im["file_name"] for im in loaded.images] == names


def test_unicode_file_names(tmp_path):
    names = ["猫 café 🐱.jpg", "ünï/Ωμέγα.png", "with space & 'quote'.jpg", 'dq".jpg']
    small_dataset(tmp_path / "src", names)
    Dataset.load(tmp_path / "src").save(tmp_path / "out")
    loaded = Dataset.load(tmp_path / "out")
    assert [im["file_name"] for im in loaded.images] == names
    for image in loaded.images:
        assert loaded.image_path(image).is_file()
    assert "猫 café 🐱.jpg".encode() in (tmp_path / "out" / ANNOTATIONS_FILE).read_bytes()


def test_extra_top_level_keys_survive_a_round_trip(shapes, tmp_path):
    info = {"description": "CVAT export", "version": "1.0", "year": 2024}
    licenses = [{"id": 0, "name": "", "url": ""}]
    coco = read_coco(shapes)
    coco = {"licenses": licenses, "info": info, **coco, "x_custom": {"nested": [1, 2]}}
    write_coco(shapes, coco)

    dataset = Dataset.load(shapes)
    assert dataset.extra == {"licenses": licenses, "info": info, "x_custom": {"nested": [1, 2]}}
    dataset.save(tmp_path / "out")
    saved = read_coco(tmp_path / "out")
    assert saved == coco
    assert Dataset.load(tmp_path / "out").extra == dataset.extra


def test_subset_keeps_all_categories_and_only_chosen_images(shapes, tmp_path):
    coco = read_coco(shapes)
    coco["info"] = {"year": 2024}
    write_coco(shapes, coco)
    dataset = Dataset.load(shapes)

    part = dataset.subset([4, 2, 99])  # any order, unknown ids ignored
    assert [im["id"] for im in part.images] == [2, 4]  # in the Dataset's order
    assert part.categories == dataset.categories
    assert part.annotations == [a for a in dataset.annotations if a["image_id"] in (2, 4)]
    assert part.annotations  # the fixture has shapes on every image
    assert part.root == dataset.root
    assert part.extra == {"info": {"year": 2024}}
    assert part.validate() == []

    part.save(tmp_path / "part")
    saved = sorted(p.name for p in (tmp_path / "part" / IMAGES_DIR).iterdir())
    assert saved == ["shapes_00002.jpg", "shapes_00004.jpg"]
    assert Dataset.load(tmp_path / "part").label_map == dataset.label_map


def test_empty_subset_keeps_the_categories(shapes):
    dataset = Dataset.load(shapes)
    part = dataset.subset([])
    assert (part.images, part.annotations, part.categories) == ([], [], dataset.categories)
    assert part.validate() == []


# --- views ------------------------------------------------------------------------------------


@pytest.fixture
def counted() -> Dataset:
    """Image 1: two cats and a dog; image 2: a cat; image 3: nothing. Class 3 (bird) unused."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 4, "height": 4} for i in (1, 2, 3)]

    def ann(ann_id, image_id, category_id):
        return {
            "id": ann_id,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [0, 0, 1, 1],
        }

    annotations = [ann(10, 1, 1), ann(11, 1, 1), ann(12, 1, 2), ann(13, 2, 1)]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    return Dataset(images, annotations, categories)


def test_instance_counts(counted):
    assert counted.instance_counts() == Counter({1: 3, 2: 1})


def test_image_counts(counted):
    assert counted.image_counts() == Counter({1: 2, 2: 1})


def test_metadata(counted):
    assert counted.metadata() == {
        "num_images": 3,
        "num_annotations": 4,
        "num_classes": 3,
        "class_names": ["cat", "dog", "bird"],
    }


def test_annotations_by_image_lists_every_image(counted):
    by_image = counted.annotations_by_image()
    assert {k: [a["id"] for a in v] for k, v in by_image.items()} == {
        1: [10, 11, 12],
        2: [13],
        3: [],
    }


def test_metadata_of_the_shapes_dataset(shapes):
    dataset = Dataset.load(shapes)
    coco = read_coco(shapes)
    metadata = dataset.metadata()
    assert metadata == {
        "num_images": 4,
        "num_annotations": len(coco["annotations"]),
        "num_classes": 3,
        "class_names": ["circle", "square", "triangle"],
    }
    assert sum(dataset.instance_counts().values()) == len(coco["annotations"])
    assert json.loads(json.dumps(metadata)) == metadata  # fit for KFP artifact metadata


def test_label_map_follows_category_ids_not_list_order():
    dataset = Dataset([], [], [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}])
    assert dataset.label_map.names == ("cat", "dog")


@pytest.mark.parametrize(
    "image, key",
    [
        ({"id": 5, "group": "video_1"}, "group:video_1"),
        ({"id": 5, "group": ""}, "image:5"),
        ({"id": 5, "group": None}, "image:5"),
        ({"id": 5}, "image:5"),
        ({"id": 5, "group": "5"}, "group:5"),  # never equal to an image's own key
    ],
)
def test_group_key(image, key):
    assert group_key(image) == key
