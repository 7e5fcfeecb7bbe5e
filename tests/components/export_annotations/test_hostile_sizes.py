"""Exports that declare images or masks far larger than their files: refused by name before
anything is allocated at the declared size; masks of a resized copy are drawn at the file's size.
Memory follows the files, not the declarations."""

import json
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cvat_kfp.components.common import dataset as dataset_module
from cvat_kfp.components.common.dataset import mask_to_rle
from cvat_kfp.components.common.report import ReportError
from cvat_kfp.components.export_annotations.builder import DatasetBuilder
from cvat_kfp.components.export_annotations.readers import coco, cvat_xml

HUGE = 20000
PEAK_GROWTH_BOUND_MB = 150  # the unfixed readers peaked 380 to 1150 MB above their start
SIZE_MISMATCH = (
    "the annotation says {declared} but the file is {file}, over 8 times smaller on each side "
    "(not a resized copy of the annotated image): the annotations cannot be mapped onto it. "
    "Re-export the task with its original images"
)


def _png(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


def _cvat_export(root, file_size, declared, mask_box, runs, shapes="", group=""):
    """CVAT for images 1.1 as CVAT writes it: annotations.xml beside images/."""
    _png(root / "images" / "a.png", file_size)
    left, top, width, height = mask_box
    mask = (
        f'<mask label="cat" source="manual" occluded="0" rle="{runs}" left="{left}" top="{top}" '
        f'width="{width}" height="{height}" {group}z_order="0"></mask>'
    )
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
        "<id>1</id><mode>annotation</mode><labels><label><name>cat</name><type>any</type>"
        "</label></labels></task></meta>"
        f'<image id="0" name="a.png" width="{declared[0]}" height="{declared[1]}">'
        f"{mask}{shapes}</image></annotations>",
        encoding="utf-8",
    )
    return root


def _coco_export(root, file_size, declared, rle_size):
    """CVAT's COCO 1.0 layout: annotations/instances_default.json beside images/."""
    _png(root / "images" / "a.png", file_size)
    height, width = rle_size
    rle = {"size": [height, width], "counts": [height * 10 + 10, 10, height * (width - 10) - 20]}
    image = {"id": 1, "file_name": "a.png"}
    if declared:
        image.update(width=declared[0], height=declared[1])
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle,
                  "bbox": [10, 10, 1, 10], "area": 10, "iscrowd": 0}  # fmt: skip
    coco_json = {"images": [image], "annotations": [annotation],
                 "categories": [{"id": 1, "name": "cat", "supercategory": ""}]}  # fmt: skip
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(coco_json))
    return root


def _huge_image_cvat(root):
    return _cvat_export(root, (64, 48), (HUGE, 15000), (10, 10, 4, 3), "2,8,2")


def _huge_mask_cvat(root):
    return _cvat_export(root, (64, 48), (64, 48), (0, 0, HUGE, HUGE), f"0,{HUGE * HUGE}")


def _far_polygon_in_a_mask_group_cvat(root):
    """A mask and a polygon of one group, the polygon reaching 3 million pixels out: drawn by
    pycocotools unclipped, its outline alone took 340 MB."""
    far = 3_000_000
    polygon = (
        f'<polygon label="cat" source="manual" occluded="0" points="10,10;{far},10;{far},{far};'
        f'10,40" group_id="1" z_order="0"></polygon>'
    )
    return _cvat_export(root, (64, 48), (64, 48), (10, 10, 4, 3), "2,8,2", polygon, 'group_id="1" ')


def _refusal_lines(reader, root, out):
    builder = DatasetBuilder()
    reader.read(root, builder)
    with pytest.raises(ReportError):
        builder.build(out)
    assert not (out / "annotations.json").exists()
    return [(e.code, f"{e.location}: {e.message}") for e in builder.report.refusals]


def test_cvat_image_declared_far_beyond_its_file_is_a_size_mismatch(tmp_path):
    root = _huge_image_cvat(tmp_path / "export")
    message = SIZE_MISMATCH.format(declared="20000x15000", file="64x48")
    assert _refusal_lines(cvat_xml, root, tmp_path / "out") == [
        ("size-mismatch", f"annotations.xml: image 'a.png': {message}")
    ]


def test_skipping_the_image_counts_the_masks_it_did_not_draw(tmp_path):
    root = _huge_image_cvat(tmp_path / "export")
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    dataset = builder.build(tmp_path / "out", skip_bad_images=True)
    assert dataset.images == [] and dataset.annotations == []
    [entry] = builder.report.of("skipped")
    assert entry.code == "size-mismatch"
    assert entry.message.endswith("original images (1 annotation(s) skipped with it)")


def test_cvat_mask_box_beyond_the_whole_image_is_refused_undecoded(tmp_path):
    root = _huge_mask_cvat(tmp_path / "export")
    assert _refusal_lines(cvat_xml, root, tmp_path / "out") == [
        (
            "mask-too-large",
            "annotations.xml: image 'a.png': mask #1 label 'cat': the mask box is 20000x20000, "
            "more pixels than the whole 64x48 image: it is not a mask of this image. Re-export "
            "the task from CVAT",
        )
    ]


@pytest.mark.parametrize("declared", [(HUGE, HUGE), None], ids=["image-declared", "rle-only"])
def test_coco_image_and_rle_declared_far_beyond_the_file_is_a_size_mismatch(tmp_path, declared):
    root = _coco_export(tmp_path / "export", (64, 64), declared, (HUGE, HUGE))
    message = SIZE_MISMATCH.format(declared="20000x20000", file="64x64")
    assert _refusal_lines(coco, root, tmp_path / "out") == [
        ("size-mismatch", f"annotations/instances_default.json: image id 1 'a.png': {message}")
    ]


def test_coco_rle_sized_unlike_its_image_is_refused_before_decoding(tmp_path):
    root = _coco_export(tmp_path / "export", (64, 48), (64, 48), (HUGE, HUGE))
    assert _refusal_lines(coco, root, tmp_path / "out") == [
        (
            "rle-invalid",
            "annotations/instances_default.json: annotation id 1 (image id 1): unusable RLE: its "
            "size [20000, 20000] (height, width) is not the image's [48, 64]",
        )
    ]


def test_a_downscale_of_8_still_maps_masks_onto_the_file(tmp_path):
    """CVAT exports at 4096x2304 over 512x288 files exist: 8 times is a resized copy."""
    root = _cvat_export(tmp_path / "export", (64, 48), (512, 384), (80, 80, 16, 8), "0,128")
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    dataset = builder.build(tmp_path / "out")
    [annotation] = dataset.annotations
    assert annotation["bbox"] == [10, 10, 2, 1] and annotation["area"] == 2
    assert [e.code for e in builder.report.entries] == ["image-rescaled"]


def test_a_group_is_drawn_in_its_own_box_as_on_the_whole_image(tmp_path):
    """A mask and a fractional polygon of one group: the same pixels as drawn on the full image."""
    polygon = [30.4, 20.5, 50.6, 22.2, 44.5, 40.7, 29.5, 33.3]
    points = ";".join(f"{x},{y}" for x, y in zip(polygon[0::2], polygon[1::2]))
    shapes = ('<polygon label="cat" source="manual" occluded="0" group_id="1" z_order="0" '
              f'points="{points}"/>')  # fmt: skip
    root = _cvat_export(
        tmp_path / "export", (64, 48), (64, 48), (5, 6, 4, 3), "2,8,2", shapes, 'group_id="1" '
    )
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    [annotation] = builder.build(tmp_path / "out").annotations

    expected = np.zeros((48, 64), np.uint8)
    expected[6:9, 5:9] = np.array([0, 0] + [1] * 8 + [0, 0]).reshape(3, 4)
    expected |= mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 48, 64)))
    rle = annotation["segmentation"]
    drawn = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert (drawn == expected).all() and annotation["area"] == expected.sum()


def _cvat_runs(bits) -> list[int]:
    """CVAT's mask RLE of these pixels (row by row): run lengths, starting with a run of 0s."""
    runs, current, count = [], False, 0
    for bit in bits:
        if bit == current:
            count += 1
        else:
            runs.append(count)
            current, count = bit, 1
    return runs + [count]


def _old_way(declared, file_size, masks, polygons):
    """What the reader made before it drew within boxes: every shape on a declared-size canvas,
    then the whole canvas resized to the file by PIL."""
    width, height = declared
    canvas = np.zeros((height, width), np.uint8)
    for runs, left, top, mask_width, mask_height in masks:
        tight = np.repeat(np.arange(len(runs)) % 2, runs).reshape(mask_height, mask_width)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + mask_width, width), min(top + mask_height, height)
        if x1 > x0 and y1 > y0:
            canvas[y0:y1, x0:x1] |= tight[y0 - top : y1 - top, x0 - left : x1 - left].astype(bool)
    for polygon in polygons:
        canvas |= mask_utils.decode(mask_utils.frPyObjects([polygon], height, width)[0])
    if declared != file_size:
        canvas = np.array(Image.fromarray(canvas * 255).resize(file_size, Image.NEAREST)) > 0
    return mask_to_rle(canvas)


def test_instances_drawn_from_their_runs_match_the_whole_canvas_way(tmp_path):
    """Random groups of masks (some past the border) and polygons, on images the same size as
    their files or 2 to 8 times larger: the same pixels as drawing on a declared-size canvas."""
    generator = np.random.default_rng(13)
    root, images, expected = tmp_path / "export", [], []
    for index in range(40):
        file_size = tuple(int(v) for v in generator.integers(6, 40, 2))
        scale = int(generator.choice([1, 1, 2, 3, 8]))
        declared = (file_size[0] * scale, file_size[1] * scale)
        _png(root / "images" / f"{index}.png", file_size)
        masks, polygons, shapes = [], [], ""
        for _ in range(int(generator.integers(1, 4))):
            mask_width = int(generator.integers(1, min(12 * scale, declared[0]) + 1))
            mask_height = int(generator.integers(1, min(12 * scale, declared[1]) + 1))
            left = int(generator.integers(-mask_width + 1, declared[0]))
            top = int(generator.integers(-mask_height + 1, declared[1]))
            runs = _cvat_runs(generator.random(mask_width * mask_height) < 0.6)
            masks.append((runs, left, top, mask_width, mask_height))
            shapes += (
                f'<mask label="cat" rle="{", ".join(map(str, runs))}" left="{left}" top="{top}" '
                f'width="{mask_width}" height="{mask_height}" group_id="1"/>'
            )
        if generator.random() < 0.5:
            points = generator.random(8) * np.array(declared * 4) * 1.2 - 3
            polygons.append([round(float(v), 2) for v in points])
            text = ";".join(f"{x},{y}" for x, y in zip(polygons[0][0::2], polygons[0][1::2]))
            shapes += f'<polygon label="cat" points="{text}" group_id="1"/>'
        images.append(f'<image id="{index}" name="{index}.png" width="{declared[0]}" '
                      f'height="{declared[1]}">{shapes}</image>')  # fmt: skip
        expected.append(_old_way(declared, file_size, masks, polygons))
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
        "<id>1</id><mode>annotation</mode><labels><label><name>cat</name><type>any</type>"
        f"</label></labels></task></meta>{''.join(images)}</annotations>",
        encoding="utf-8",
    )
    builder = DatasetBuilder()
    cvat_xml.read(root, builder)
    dataset = builder.build(tmp_path / "out")
    drawn = {a["image_id"]: a["segmentation"] for a in dataset.annotations}
    codes = Counter(e.code for e in builder.report.entries)
    assert len(drawn) == 40 and codes["image-rescaled"] == 23 and codes["mask-clipped"] == 21
    for index, rle in enumerate(expected):
        empty = rle == mask_to_rle(np.zeros(rle["size"], np.uint8))
        assert drawn.get(index + 1, rle if empty else None) == rle, index


def test_drawable_size_is_decided_by_the_file_header(tmp_path):
    path = tmp_path / "a.png"
    _png(path, (64, 48))
    builder = DatasetBuilder()
    images = [
        builder.add_image(path, "same.png", width=64, height=48),
        builder.add_image(path, "downscaled-by-4.png", width=256, height=192),
        builder.add_image(path, "undeclared.png"),
        builder.add_image(path, "huge.png", width=HUGE, height=15000),
        builder.add_image(path, "other-aspect.png", width=64, height=64),
        builder.add_image(tmp_path / "gone.png", "missing.png", width=64, height=48),
    ]
    sizes = [builder.drawable_size(image) for image in images]
    assert sizes == [(64, 48), (64, 48), (64, 48), None, None, None]  # masks go at the file's size


def test_a_mask_given_by_its_box_is_the_whole_image_mask(tmp_path):
    path = tmp_path / "a.png"
    _png(path, (64, 48))
    builder = DatasetBuilder()
    image = builder.add_image(path, "a.png", width=64, height=48)
    box = np.array([[0, 1, 1], [1, 1, 0]], np.uint8)
    whole = np.zeros((48, 64), np.uint8)
    whole[30:32, 60:63] = box
    builder.add_mask(image, "cat", whole)
    builder.add_mask(image, "cat", box, left=60, top=30)
    first, second = builder.build(tmp_path / "out").annotations
    assert first["segmentation"] == second["segmentation"] and second["bbox"] == [60, 30, 3, 2]


CHILD = textwrap.dedent(
    """
    import importlib, json, resource, sys
    from cvat_kfp.components.common.report import ReportError
    from cvat_kfp.components.export_annotations.builder import DatasetBuilder
    cases = json.loads(sys.argv[1])
    readers = {name: importlib.import_module(
        "cvat_kfp.components.export_annotations.readers." + name) for name, _ in cases}
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    codes = []
    for index, (name, root) in enumerate(cases):
        builder = DatasetBuilder()
        readers[name].read(root, builder)
        try:
            builder.build(root + "-out", skip_bad_images=index % 2 == 1)
        except ReportError:
            pass
        codes.append([e.code for e in builder.report.entries if e.action != "note"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - start) / 1024, "codes": codes}))
    """
)


def _peak_growth(cases) -> dict:
    """Read and build each (reader, export) in one fresh process: its peak RSS growth over its
    RSS once everything is imported, and the codes each report holds."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([(name, str(root)) for name, root in cases])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_peak_memory_follows_the_files_not_the_declarations(tmp_path):
    """All the hostile exports above: the peak grows by well under what one declared-size mask
    would take (a 20000x15000 uint8 mask is 300 MB)."""
    measured = _peak_growth(
        [
            ("cvat_xml", _huge_image_cvat(tmp_path / "a")),
            ("cvat_xml", _huge_mask_cvat(tmp_path / "b")),
            ("coco", _coco_export(tmp_path / "c", (64, 64), (HUGE, HUGE), (HUGE, HUGE))),
            ("coco", _coco_export(tmp_path / "d", (64, 64), None, (HUGE, HUGE))),
            ("cvat_xml", _far_polygon_in_a_mask_group_cvat(tmp_path / "e")),
        ]
    )
    assert measured["growth_mb"] < PEAK_GROWTH_BOUND_MB
    assert measured["codes"] == [["size-mismatch"], ["mask-too-large"], ["size-mismatch"],
                                 ["size-mismatch"], []]  # fmt: skip


def test_rescaled_masks_cost_the_files_size_not_the_declared_one(tmp_path):
    """A whole-image CVAT mask and COCO RLE declared 8192x6144 over a 1024x768 file (8 times
    smaller: a resized copy, accepted): one declared-size mask alone is 50 MB."""
    file_size, declared = (1024, 768), (8192, 6144)
    whole = (0, 0, *declared)
    cvat = _cvat_export(tmp_path / "a", file_size, declared, whole, f"0,{8192 * 6144}")
    coco_export = _coco_export(tmp_path / "b", file_size, declared, declared[::-1])
    measured = _peak_growth([("cvat_xml", cvat), ("coco", coco_export)])
    assert measured["codes"] == [["image-rescaled"], ["image-rescaled"]]
    assert measured["growth_mb"] < 40


@pytest.mark.parametrize("chunk_px", [1 << 20, 7], ids=["one-pass", "in-chunks"])
def test_a_rescaled_rle_is_what_pil_nearest_makes_of_the_decoded_mask(tmp_path, monkeypatch,
                                                                      chunk_px):  # fmt: skip
    monkeypatch.setattr(dataset_module, "RLE_SAMPLE_CHUNK_PX", chunk_px)
    generator = np.random.default_rng(5)
    for declared, file_size in [((90, 60), (30, 20)), ((30, 20), (87, 58)), ((64, 64), (9, 9))]:
        _png(tmp_path / "a.png", file_size)
        builder = DatasetBuilder()
        image = builder.add_image(tmp_path / "a.png", "a.png", width=declared[0],
                                  height=declared[1])  # fmt: skip
        mask = (generator.random(declared[::-1]) < 0.4).astype(np.uint8)
        builder.add_mask(image, "cat", mask)
        [annotation] = builder.build(tmp_path / "out").annotations
        expected = np.array(Image.fromarray(mask * 255).resize(file_size, Image.NEAREST)) > 0
        assert annotation["segmentation"] == mask_to_rle(expected)
