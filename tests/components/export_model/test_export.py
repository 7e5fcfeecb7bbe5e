"""export-model: SavedModel in a fresh process vs the trained model, label files, card, TFLite."""

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cvat_kfp.components.common.label_map import LabelMap
from cvat_kfp.components.export_model.exporter import (
    ExportError,
    classes_csv,
    export_tflite_if_wanted,
    save_serving_module,
)
from cvat_kfp.components.inference.predictor import ExportedPredictor, load_predictor
from cvat_kfp.components.inference.tflite import TFLiteDetector, export_tflite
from cvat_kfp.components.inference.trained import load_serving_module
from tests.components.export_model.conftest import THRESHOLDS, write_evaluation
from tests.components.inference.test_predictor import read_test_split
from tests.trained_models import CLASSES

pytestmark = pytest.mark.slow  # trains or loads a model, or runs a pipeline


BOX_ATOL = 1e-4  # same graph, same weights: only float summation order may differ
TFLITE_ATOL = 1e-3  # float32 TFLite kernels (XNNPACK) vs TF's: boxes and scores

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    saved_model, images_file, out_file = sys.argv[1:]
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    images = np.load(images_file)
    results = {}
    for i in range(len(images.files)):
        outputs = serve(images=tf.constant(images[f"image{i}"][None]))
        for key, value in outputs.items():
            results[f"{key}/{i}"] = value.numpy()
    np.savez(out_file, **results)
    """
)


def run_in_fresh_process(saved_model, images: list[np.ndarray], tmp_path) -> list[dict]:
    images_file, out_file = tmp_path / "images.npz", tmp_path / "outputs.npz"
    np.savez(images_file, **{f"image{i}": image for i, image in enumerate(images)})
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    subprocess.run(
        [sys.executable, str(script), str(saved_model), str(images_file), str(out_file)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    data = np.load(out_file, allow_pickle=True)  # class names: an object array we wrote
    results = [{} for _ in images]
    for name in data.files:
        key, i = name.rsplit("/", 1)
        results[int(i)][key] = data[name]
    return results


def assert_same_detections(expected: dict, actual: dict, mask_tolerance: float = 0.001):
    n = int(expected["num_detections"][0])
    assert int(actual["num_detections"][0]) == n
    np.testing.assert_allclose(
        actual["detection_boxes"], expected["detection_boxes"], atol=BOX_ATOL
    )
    np.testing.assert_allclose(
        actual["detection_scores"], expected["detection_scores"], atol=BOX_ATOL
    )
    np.testing.assert_array_equal(actual["detection_classes"], expected["detection_classes"])
    np.testing.assert_array_equal(
        actual["detection_class_names"], expected["detection_class_names"]
    )
    if "detection_masks" in expected:
        differ = np.mean(actual["detection_masks"] != expected["detection_masks"]) if n else 0.0
        assert differ <= mask_tolerance


# --- the export's files --------------------------------------------------------------------


def test_the_export_holds_the_documented_files(retinanet_export):
    out = retinanet_export.output_dir
    for name in ("saved_model/saved_model.pb", "label_map.json", "label_map.pbtxt", "classes.csv"):
        assert (out / name).is_file(), name
    for name in ("model_card.md", "export.json", "model.tflite"):
        assert (out / name).is_file(), name
    assert LabelMap.load(out / "label_map.json").names == CLASSES
    meta = retinanet_export.metadata["exported_model"]
    assert meta == json.loads((out / "export.json").read_text())
    assert meta["preset"] == "retinanet-mobilenetv2-light"
    assert meta["global_step"] == 160 and meta["checkpoint"] == "best"
    assert meta["class_names"] == list(CLASSES)
    assert meta["tflite"]["exported"] and meta["tflite"]["input_size"] == [256, 256]
    assert set(meta["signatures"]) == {"serving_default", "serve_image_bytes"}


def test_classes_csv_follows_onepanels_row_order_contract(retinanet_export):
    rows = list(csv.reader((retinanet_export.output_dir / "classes.csv").open(newline="")))
    assert rows == [["labels", "id"], ["circle", "1"], ["square", "2"], ["triangle", "3"]]
    tricky = LabelMap.from_pairs([(1, 'a "b", c'), (2, "é\nf")])
    parsed = list(csv.reader(classes_csv(tricky).splitlines(keepends=True)))
    assert parsed == [["labels", "id"], ['a "b", c', "1"], ["é\nf", "2"]]


def test_the_model_card_tells_preset_lineage_steps_metrics_and_labels(retinanet_export):
    card = (retinanet_export.output_dir.parent / "model_card.md").read_text()
    assert card == (retinanet_export.output_dir / "model_card.md").read_text()
    assert "# Model card: retinanet-mobilenetv2-light" in card
    assert "| training steps | 160 |" in card
    assert "| detections | at most 100, score ≥ 0.05, NMS IoU 0.5 |" in card
    assert "| train | 48 | " in card and "| val | 8 | " in card  # dataset lineage
    assert "| AP | " in card  # val metrics from model.json
    assert "| AP50 | 0.6600 |" in card  # the given test metrics
    assert "| 2 | square |" in card
    assert "## Score thresholds" in card
    assert "| circle | 0.310 | highest F1 on val | 5 | 0.900 | 0.800 | 0.847 |" in card
    assert "| triangle | 0.500 | default: no validation objects | 0 |" in card


def test_the_export_carries_the_calibrated_thresholds_for_its_users(retinanet_export):
    from cvat_kfp.components.inference.thresholds import score_thresholds

    assert retinanet_export.metadata["exported_model"]["score_thresholds"] == THRESHOLDS
    found = score_thresholds(retinanet_export.output_dir)
    assert found == {"circle": 0.31, "square": 0.42, "triangle": 0.5}


def test_an_export_without_evaluation_says_its_thresholds_are_not_calibrated(maskrcnn_export):
    assert "score_thresholds" not in maskrcnn_export.metadata["exported_model"]
    card = (maskrcnn_export.output_dir / "model_card.md").read_text()
    assert "Not calibrated (exported without evaluate-model's evaluation)" in card


def test_thresholds_of_other_classes_are_refused_before_exporting(tiny_retinanet, tmp_path):
    from cvat_kfp.components.export_model.exporter import run_export_model

    other = {**THRESHOLDS, "classes": THRESHOLDS["classes"][:2]}
    (tmp_path / "evaluation").mkdir()
    evaluation = write_evaluation(tmp_path / "evaluation", other)
    with pytest.raises(ExportError, match=r"thresholds for the classes \['circle', 'square'\]"):
        run_export_model(tiny_retinanet, tmp_path / "out", tmp_path / "card.md", evaluation)
    assert not (tmp_path / "out" / "saved_model").exists()
    (tmp_path / "evaluation" / "thresholds.json").unlink()
    with pytest.raises(ExportError, match="thresholds.json: no such file"):
        run_export_model(tiny_retinanet, tmp_path / "out", tmp_path / "card.md", evaluation)


# --- the SavedModel against the trained model ----------------------------------------------


def test_the_savedmodel_in_a_fresh_process_answers_as_the_trained_model(
    retinanet_export, tiny_retinanet, tmp_path
):
    images = [example["image"] for example in read_test_split(tiny_retinanet, 4)]
    exported = run_in_fresh_process(retinanet_export.output_dir / "saved_model", images, tmp_path)
    module, _, _ = load_serving_module(tiny_retinanet, "best")
    for image, actual in zip(images, exported):
        expected = {k: v.numpy() for k, v in module.detect(image[None]).items()}
        assert int(expected["num_detections"][0]) > 0
        assert_same_detections(expected, actual)


def test_the_exported_predictor_matches_the_trained_predictor(retinanet_export, tiny_retinanet):
    exported = load_predictor(retinanet_export.output_dir)
    assert isinstance(exported, ExportedPredictor)
    assert exported.description["source"] == "exported"
    assert exported.description["global_step"] == 160
    trained = load_predictor(tiny_retinanet)
    for example in read_test_split(tiny_retinanet, 3):
        a, b = trained.predict(example["image"]), exported.predict(example["image"])
        np.testing.assert_allclose(a.boxes, b.boxes, atol=BOX_ATOL)
        np.testing.assert_array_equal(a.classes, b.classes)
        assert a.class_names == b.class_names
    with pytest.raises(ValueError, match="got dtype int64"):
        exported.predict(np.zeros((4, 4, 3), np.int64))


def test_the_image_bytes_signature_answers_as_the_uint8_one(retinanet_export, tiny_retinanet):
    loaded = tf.saved_model.load(str(retinanet_export.output_dir / "saved_model"))
    image = read_test_split(tiny_retinanet, 1)[0]["image"]
    from_pixels = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    png = tf.io.encode_png(image)
    from_png = loaded.signatures["serve_image_bytes"](image_bytes=tf.reshape(png, [1]))
    assert_same_detections(
        {k: v.numpy() for k, v in from_pixels.items()}, {k: v.numpy() for k, v in from_png.items()}
    )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((1, 8, 8, 3), np.float32), "expected to be a uint8 tensor but is a float"),
        (np.zeros((1, 8, 8, 1), np.uint8), "convert grayscale or RGBA to RGB); got channels"),
        (np.zeros((2, 8, 8, 3), np.uint8), "got batch size"),
        (np.zeros((1, 0, 8, 3), np.uint8), "got an empty image"),
    ],
)
def test_bad_inputs_to_the_signature_are_refused_clearly(retinanet_export, images, message):
    serve = _loaded(retinanet_export).signatures["serving_default"]
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)) as error:
        serve(images=tf.constant(images))
    assert message in str(error.value)
    if "uint8" not in message:
        assert "expected one uint8 RGB image of shape [1, height, width, 3]" in str(error.value)


def test_a_wrong_rank_is_refused_by_the_signature(retinanet_export):
    serve = _loaded(retinanet_export).signatures["serving_default"]
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)) as error:
        serve(images=tf.zeros((8, 8, 3), tf.uint8))
    assert "shape" in str(error.value)


_LOADED = {}


def _loaded(export):
    key = str(export.output_dir)
    if key not in _LOADED:
        _LOADED[key] = tf.saved_model.load(str(export.output_dir / "saved_model"))
    return _LOADED[key]


# --- Mask R-CNN ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maskrcnn_all_detections(tiny_maskrcnn, tmp_path_factory):
    """The barely trained Mask R-CNN scores under 0.05: without a score threshold its 100
    detections (and their masks) are there to compare. Saved and converted like an export."""
    module, _, _ = load_serving_module(
        tiny_maskrcnn, detection_overrides={"pre_nms_score_threshold": 0.0}
    )
    out = tmp_path_factory.mktemp("maskrcnn_all")
    save_serving_module(module, out / "saved_model")
    export_tflite(module, out / "model.tflite")
    return module, out


def test_maskrcnn_export_has_full_image_masks_and_a_tflite(maskrcnn_export, tiny_maskrcnn):
    meta = maskrcnn_export.metadata["exported_model"]
    assert meta["has_masks"]
    assert "detection_masks" in meta["signatures"]["serving_default"]["outputs"]
    assert meta["tflite"]["exported"] and "detection_masks" in meta["tflite"]["outputs"]
    assert (maskrcnn_export.output_dir / "model.tflite").is_file()
    predictor = load_predictor(maskrcnn_export.output_dir)
    assert predictor.has_masks
    image = read_test_split(tiny_maskrcnn, 1)[0]["image"]
    detections = predictor.predict(image)
    assert detections.masks.shape == (len(detections), *image.shape[:2])


def test_maskrcnn_savedmodel_masks_in_a_fresh_process(
    maskrcnn_all_detections, tiny_maskrcnn, tmp_path
):
    module, out = maskrcnn_all_detections
    images = [example["image"] for example in read_test_split(tiny_maskrcnn, 2)]
    exported = run_in_fresh_process(out / "saved_model", images, tmp_path)
    for image, actual in zip(images, exported):
        expected = {k: v.numpy() for k, v in module.detect(image[None]).items()}
        n = int(expected["num_detections"][0])
        assert n > 0
        assert actual["detection_masks"].shape == (1, n, 192, 256)
        assert_same_detections(expected, actual)


def test_maskrcnn_tflite_box_masks_paste_to_the_savedmodel_masks(
    maskrcnn_all_detections, tiny_maskrcnn
):
    """Its scores are all ~1e-12 and many tie exactly, so which of the tied boxes NMS keeps,
    and in what order, differs between the two runtimes (and between runs of the tiny training):
    detections found by both (same class and box) must have the same pasted masks. How many are
    found by both is the ties' luck (11 to over 25 of 100 seen), so only a few are required."""
    module, out = maskrcnn_all_detections
    detector = TFLiteDetector(out / "model.tflite")
    image = detector.resize(read_test_split(tiny_maskrcnn, 1)[0]["image"])
    lite = detector(image)
    saved = {k: v.numpy() for k, v in module.detect(image[None]).items()}
    assert lite["detection_masks"].shape == (1, 100, 28, 28)
    lite_masks = detector.full_image_masks(lite, 256, 256)
    n = int(lite["num_detections"][0])
    matched = differing = 0
    free = set(range(int(saved["num_detections"][0])))
    for i in range(n):
        for j in sorted(free):
            same_box = np.abs(lite["detection_boxes"][0, i] - saved["detection_boxes"][0, j])
            if (
                same_box.max() <= TFLITE_ATOL
                and lite["detection_classes"][0, i] == saved["detection_classes"][0, j]
            ):
                free.remove(j)
                matched += 1
                differing += np.sum(lite_masks[i] != saved["detection_masks"][0, j])
                break
    assert n == int(saved["num_detections"][0])
    assert matched >= 5, f"only {matched} of {n} detections found in both"
    assert differing <= 0.001 * matched * 256 * 256


def test_tflite_yes_fails_clearly_for_a_server_preset(tmp_path):
    class Trained:
        preset = "frcnn-res50-coco"

    with pytest.raises(ExportError, match="tflite: yes, but frcnn-res50-coco cannot be exported"):
        export_tflite_if_wanted(object(), Trained(), "yes", tmp_path, print)
    info = export_tflite_if_wanted(object(), Trained(), "auto", tmp_path, lambda m: None)
    assert not info["exported"] and "mobile presets" in info["reason"]


# --- TFLite --------------------------------------------------------------------------------


def test_tflite_matches_the_savedmodel_within_tolerance(retinanet_export, tiny_retinanet):
    """The TFLite contract: the image stretched to S×S; fed the same S×S pixels, the SavedModel
    (which then does not resize) and the .tflite agree within TFLITE_ATOL."""
    detector = TFLiteDetector(retinanet_export.output_dir / "model.tflite")
    assert detector.input_size == [256, 256]
    serve = _loaded(retinanet_export).signatures["serving_default"]
    compared = 0
    for example in read_test_split(tiny_retinanet, 4):
        square = detector.resize(example["image"])
        assert square.shape == (256, 256, 3)
        lite = detector(example["image"])
        saved = {k: v.numpy() for k, v in serve(images=tf.constant(square[None])).items()}
        n = int(saved["num_detections"][0])
        assert int(lite["num_detections"][0]) == n
        assert lite["detection_boxes"].shape == (1, 100, 4)  # padded to max_num_detections
        np.testing.assert_allclose(
            lite["detection_boxes"][:, :n], saved["detection_boxes"], atol=TFLITE_ATOL
        )
        np.testing.assert_allclose(
            lite["detection_scores"][:, :n], saved["detection_scores"], atol=TFLITE_ATOL
        )
        np.testing.assert_array_equal(lite["detection_classes"][:, :n], saved["detection_classes"])
        compared += n
    assert compared > 0


def test_model_card_lists_metrics_in_coco_order_whatever_order_kfp_gives():
    from cvat_kfp.components.export_model.exporter import _metrics_table

    shuffled = {"ARl": -1.0, "final_loss": 0.5, "mask_AP": 0.2, "AP50": 0.7, "AP": 0.5}
    names = [row.split("|")[1].strip() for row in _metrics_table(shuffled)[2:]]
    assert names == ["AP", "AP50", "ARl", "mask_AP", "final_loss"]
