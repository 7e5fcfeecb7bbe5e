"""run_convert_to_tfrecord end to end: shards, temporaries, refusals, parallel runs, decoding."""

import json
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder
from official.vision.dataloaders.tf_example_label_map_decoder import TfExampleDecoderLabelMap

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.common.report import Report, ReportError
from cvat_kfp.components.common.synthetic import make_shapes_dataset
from cvat_kfp.components.convert_to_tfrecord import convert
from cvat_kfp.components.convert_to_tfrecord import writer as writer_module
from cvat_kfp.components.convert_to_tfrecord.convert import available_cpus, run_convert_to_tfrecord
from cvat_kfp.components.convert_to_tfrecord.writer import ShardedTFRecordWriter

from .conftest import CLASS_NAMES


def records(output_dir, split="train") -> list[bytes]:
    shards = sorted(output_dir.glob(f"{split}-*-of-*.tfrecord"))
    return [r.numpy() for r in tf.data.TFRecordDataset([str(p) for p in shards])]


def leftovers(output_dir) -> list[str]:
    """Anything that looks like shards or a manifest, finished or not."""
    names = [p.name for p in output_dir.iterdir()] if output_dir.exists() else []
    return sorted(n for n in names if ".tfrecord" in n or n.startswith("manifest"))


@pytest.fixture()
def mixed_dataset(tmp_path, image_bytes, write_dataset):
    """Three images: a JPEG with a polygon and a box-only instance, a BMP, a negative PNG."""
    square = [4, 4, 20, 4, 20, 20, 4, 20]
    return write_dataset(
        tmp_path / "mixed",
        [
            ("a.jpg", image_bytes(48, 32), 48, 32),
            ("b.bmp", image_bytes(32, 24, "BMP"), 32, 24),
            ("sub/c.png", image_bytes(16, 16, "PNG"), 16, 16),
        ],
        [
            {"image_id": 1, "bbox": [4, 4, 16, 16], "area": 256.0, "segmentation": [square]},
            {"image_id": 1, "bbox": [30, 10, 40, 10], "area": 400.0, "category_id": 3},
            {"image_id": 2, "bbox": [1, 2, 10, 5], "area": 50.0, "category_id": 2},
        ],
    )


def test_records_decode_with_model_garden_decoders(mixed_dataset, tmp_path):
    out = tmp_path / "out"
    result = run_convert_to_tfrecord(mixed_dataset, out, split_name="val", num_workers=1)

    assert (result.num_examples, result.num_instances, result.num_shards) == (3, 3, 1)
    assert result.shard_paths == [out / "val-00000-of-00001.tfrecord"]
    assert LabelMap.load(out / "label_map.pbtxt").names == CLASS_NAMES
    plain = TfExampleDecoder(include_mask=True)
    by_name = TfExampleDecoderLabelMap(str(out / "label_map.csv"), include_mask=True)
    decoded = [plain.decode(tf.constant(r)) for r in records(out, "val")]
    with_map = [by_name.decode(tf.constant(r)) for r in records(out, "val")]

    assert [d["source_id"].numpy() for d in decoded] == [b"1", b"2", b"3"]
    assert [tuple(d["image"].shape) for d in decoded] == [(32, 48, 3), (24, 32, 3), (16, 16, 3)]
    first = decoded[0]
    np.testing.assert_allclose(
        first["groundtruth_boxes"].numpy(),
        [[4 / 32, 4 / 48, 20 / 32, 20 / 48], [10 / 32, 30 / 48, 20 / 32, 1.0]],
        rtol=1e-6,
    )
    assert first["groundtruth_classes"].numpy().tolist() == [1, 3]
    assert first["groundtruth_area"].numpy().tolist() == [256.0, 18 * 10]  # second one clipped
    masks = first["groundtruth_instance_masks"].numpy()
    assert masks.shape == (2, 32, 48) and set(np.unique(masks)) == {0.0, 1.0}
    assert masks[1].sum() == 18 * 10  # the box-only instance got its clipped box as mask
    for plain_decoded, map_decoded in zip(decoded, with_map):
        classes = map_decoded["groundtruth_classes"].numpy()
        np.testing.assert_array_equal(plain_decoded["groundtruth_classes"].numpy(), classes)
    assert decoded[2]["groundtruth_boxes"].shape == (0, 4)
    assert decoded[2]["groundtruth_instance_masks"].shape == (0, 16, 16)

    summary = Report.load(out).summary()
    assert summary == {"fixed": {"box-clipped": 1, "image-converted": 1, "mask-from-box": 2}}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == list(CLASS_NAMES) and manifest["has_masks"] is True
    assert manifest["shards"] == [
        {
            "file": "val-00000-of-00001.tfrecord",
            "num_examples": 3,
            "num_bytes": out.joinpath("val-00000-of-00001.tfrecord").stat().st_size,
        }
    ]
    assert result.metadata["tfrecords"]["num_examples"] == 3
    assert result.metadata["tfrecords"]["split"] == "val"


def test_shards_rotate_by_bytes_and_hold_every_example_once(tmp_path):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=12, image_size=(64, 48))
    out = tmp_path / "out"
    result = run_convert_to_tfrecord(source, out, shard_size_bytes=5_000, num_workers=1)

    count = result.num_shards
    assert 1 < count < 12
    assert [p.name for p in result.shard_paths] == [
        f"train-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)
    ]
    decoder = TfExampleDecoder()
    ids = [decoder.decode(tf.constant(r))["source_id"].numpy() for r in records(out)]
    assert ids == [str(i).encode() for i in range(1, 13)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["num_examples"] for s in manifest["shards"]) == 12
    assert all(s["num_bytes"] >= 5_000 for s in manifest["shards"][:-1])
    for shard in manifest["shards"]:
        assert (out / shard["file"]).stat().st_size == shard["num_bytes"]


def test_parallel_output_is_byte_identical_to_inline(tmp_path, monkeypatch):
    pools = []

    class RecordingPool(ProcessPoolExecutor):
        """Records its start method and, at each submit, how many tasks were unfinished."""

        def __init__(self, max_workers, mp_context):
            super().__init__(max_workers, mp_context=mp_context)
            self.start_method = mp_context.get_start_method()
            self.futures, self.unfinished = [], []
            pools.append(self)

        def submit(self, fn, *args, **kwargs):
            self.futures = [f for f in self.futures if not f.done()]
            self.unfinished.append(len(self.futures))
            self.futures.append(super().submit(fn, *args, **kwargs))
            return self.futures[-1]

    source = make_shapes_dataset(tmp_path / "shapes", num_images=24, image_size=(64, 48))
    inline, parallel = tmp_path / "inline", tmp_path / "parallel"
    run_convert_to_tfrecord(source, inline, shard_size_bytes=20_000, num_workers=1)
    monkeypatch.setattr(convert, "ProcessPoolExecutor", RecordingPool)
    run_convert_to_tfrecord(source, parallel, shard_size_bytes=20_000, num_workers=2)

    [pool] = pools
    assert pool.start_method == "spawn"  # never fork a parent that loaded TensorFlow
    assert len(pool.unfinished) == 24
    assert max(pool.unfinished) <= convert.TASKS_IN_FLIGHT_PER_WORKER * 2
    names = sorted(p.name for p in inline.iterdir())
    assert names == sorted(p.name for p in parallel.iterdir())
    assert len([n for n in names if n.endswith(".tfrecord")]) > 1
    for name in names:
        assert (inline / name).read_bytes() == (parallel / name).read_bytes(), name


def test_a_refused_image_fails_the_run_after_the_report_leaving_no_shards(
    tmp_path, image_bytes, write_dataset
):
    source = write_dataset(
        tmp_path / "ds",
        [
            ("ok.jpg", image_bytes(16, 16), 16, 16),
            ("broken.jpg", image_bytes(64, 64)[:300], 64, 64),
            ("small.png", image_bytes(16, 16, "PNG"), 32, 32),
        ],
    )
    out = tmp_path / "out"
    with pytest.raises(ReportError, match="broken.jpg"):
        run_convert_to_tfrecord(source, out, shard_size_bytes=1, num_workers=1)

    assert leftovers(out) == []
    report = Report.load(out)
    assert [(e.code, e.location) for e in report.refusals] == [
        ("image-unreadable", "broken.jpg"),
        ("size-mismatch", "small.png"),
    ]


def test_an_error_mid_run_removes_the_temporary_shards(tmp_path, monkeypatch):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=5)
    build = convert.build_image_record
    calls = []

    def failing_build(task):
        calls.append(sorted(p.name for p in (tmp_path / "out").iterdir()))
        if len(calls) == 4:
            raise RuntimeError("disk full")
        return build(task)

    monkeypatch.setattr(convert, "build_image_record", failing_build)
    with pytest.raises(RuntimeError, match="disk full"):
        run_convert_to_tfrecord(source, tmp_path / "out", shard_size_bytes=1, num_workers=1)
    # while writing, shards exist only under hidden temporary names
    assert calls[-1] == [f".train-{i:05d}.tfrecord.tmp" for i in range(3)]
    assert leftovers(tmp_path / "out") == []


def test_writer_starts_a_shard_once_the_current_one_reaches_the_size(tmp_path):
    record = b"x" * 100  # 116 bytes framed
    with ShardedTFRecordWriter(tmp_path, "val", shard_size_bytes=300) as writer:
        for _ in range(7):
            writer.write(record)
        shards = writer.finish()
    assert [(s.path.name, s.num_examples, s.num_bytes) for s in shards] == [
        ("val-00000-of-00003.tfrecord", 3, 348),
        ("val-00001-of-00003.tfrecord", 3, 348),
        ("val-00002-of-00003.tfrecord", 1, 116),
    ]
    assert all(s.path.stat().st_size == s.num_bytes for s in shards)
    assert sorted(p.name for p in tmp_path.iterdir()) == [s.path.name for s in shards]


def test_records_wait_in_memory_while_tensorflow_imports(tmp_path, monkeypatch):
    importing_done = threading.Event()

    def slow_import():
        thread = threading.Thread(target=importing_done.wait)
        thread.start()
        return thread

    monkeypatch.setattr(writer_module, "_import_tensorflow_in_background", slow_import)
    monkeypatch.setattr(writer_module, "STARTUP_BUFFER_BYTES", 250)
    written = [bytes([48 + i]) * 100 for i in range(4)]
    with ShardedTFRecordWriter(tmp_path, "val", shard_size_bytes=10_000) as writer:
        writer.write(written[0])
        writer.write(written[1])
        assert list(tmp_path.iterdir()) == []  # held in memory: TensorFlow is still importing
        threading.Timer(0.2, importing_done.set).start()
        writer.write(written[2])  # over the budget: waits for the import, then writes them all
        assert importing_done.is_set() and leftovers(tmp_path) == [".val-00000.tfrecord.tmp"]
        writer.write(written[3])
        writer.finish()
    assert records(tmp_path, "val") == written


@pytest.mark.parametrize("existing", ["train-00000-of-00001.tfrecord", "manifest.json"])
def test_output_holding_shards_or_a_manifest_is_refused_untouched(tmp_path, existing):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=existing):
        run_convert_to_tfrecord(source, out, num_workers=1)
    assert [p.name for p in out.iterdir()] == [existing]
    assert (out / existing).read_bytes() == b"precious"


def test_boxes_only_dataset_writes_no_masks_with_a_note(tmp_path, image_bytes, write_dataset):
    source = write_dataset(
        tmp_path / "ds", [("a.png", image_bytes(20, 10, "PNG"), 20, 10)],
        [{"image_id": 1, "bbox": [1, 1, 5, 5], "area": 25.0}],
    )  # fmt: skip
    result = run_convert_to_tfrecord(source, tmp_path / "out", num_workers=1)
    assert result.has_masks is False
    assert Report.load(tmp_path / "out").summary() == {"note": {"no-masks": 1}}
    example = tf.train.Example.FromString(records(tmp_path / "out")[0])
    assert "image/object/mask" not in example.features.feature


def test_include_masks_false_writes_none(tmp_path):
    source = make_shapes_dataset(tmp_path / "shapes", num_images=2)
    result = run_convert_to_tfrecord(source, tmp_path / "out", include_masks=False, num_workers=1)
    assert result.has_masks is False and result.metadata["tfrecords"]["has_masks"] is False
    example = tf.train.Example.FromString(records(tmp_path / "out")[0])
    assert "image/object/mask" not in example.features.feature
    assert Report.load(tmp_path / "out").entries == []


def test_an_invalid_dataset_is_refused_with_its_problems_in_the_report(tmp_path, write_dataset):
    source = write_dataset(tmp_path / "ds", [], [{"image_id": 9, "bbox": [0, 0, 1, 1]}])
    report = tmp_path / "report" / "report.md"
    with pytest.raises(ReportError, match="names no image"):
        run_convert_to_tfrecord(source, tmp_path / "out", report, num_workers=1)
    assert Report.load(tmp_path / "out").summary() == {"refused": {"invalid-dataset": 1}}
    assert leftovers(tmp_path / "out") == []
    assert "invalid-dataset" in report.read_text()  # the face's Markdown output, also on refusal


def test_an_empty_dataset_gives_one_empty_shard(tmp_path, write_dataset):
    source = write_dataset(tmp_path / "ds", [])
    report = tmp_path / "report.md"
    result = run_convert_to_tfrecord(source, tmp_path / "out", report, split_name="test")
    assert report.read_text() == (tmp_path / "out" / "report.md").read_text()
    assert [p.name for p in result.shard_paths] == ["test-00000-of-00001.tfrecord"]
    assert result.num_examples == 0 and records(tmp_path / "out", "test") == []
    assert Report.load(tmp_path / "out").summary()["note"]["empty-split"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split_name": "../up"}, "split_name"),
        ({"exif_policy": "rotate"}, "exif_policy"),
        ({"shard_size_bytes": 0}, "shard_size_bytes"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_are_rejected_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_convert_to_tfrecord(tmp_path / "nowhere", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_available_cpus_honours_the_cgroup_quota(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert available_cpus(cpu_max) == min(2, available_cpus(tmp_path / "absent"))
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == available_cpus(tmp_path / "absent") >= 1
