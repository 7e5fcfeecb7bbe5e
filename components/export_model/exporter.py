"""export-model's work: a trained Model → SavedModel (+ TFLite), label files, model card, copy.

The exported model directory:

    saved_model/        signatures serving_default (uint8 images) and serve_image_bytes
                        (encoded images); see cvat_kfp.components.inference.serving
    label_map.json      [{"id": 1, "name": ...}, ...]
    label_map.pbtxt     the TF Object Detection API form of the same
    classes.csv         Onepanel's form: a `labels,id` header, then one `name,id` row per class
                        in id order (row i below the header is class id i)
    model.tflite        the mobile presets (MobileNetV2 RetinaNet and Mask R-CNN): see
                        cvat_kfp.components.inference.tflite for its input contract
    model_card.md       preset, dataset lineage, training steps, metrics, score thresholds,
                        label map
    export.json         what this export is (preset, step, checkpoint, signatures, TFLite) and,
                        given evaluate-model's evaluation, the per-class score thresholds it
                        calibrated on the val split ("score_thresholds": its thresholds.json),
                        which preannotate and the CVAT function use when given no threshold

With `destination_uri`, the directory is also copied there (storage.upload_directory: `_SUCCESS`
written last). A destination that already holds files is never overwritten: the same export
(same export_id) is left as it is (or completed, if an earlier attempt stopped half-way); anything
else is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common import storage
from ..common.label_map import LabelMap
from ..common.report import markdown_cell
from ..inference.predictor import EXPORT_METADATA_FILE, SAVED_MODEL_DIR
from ..inference.serving import (
    IMAGE_BYTES_INPUT,
    IMAGES_INPUT,
    MASKS_KEY,
    OUTPUT_KEYS,
    SERVE_IMAGE_BYTES,
    SERVING_DEFAULT,
)
from ..inference.thresholds import (
    DEFAULT_SCORE_THRESHOLD,
    EXPORT_KEY,
    ThresholdsError,
    evaluation_thresholds,
    thresholds_markdown,
)
from ..inference.trained import TrainedModel, load_serving_module

logger = logging.getLogger(__name__)
Log = Callable[[str], None]

CLASSES_CSV = "classes.csv"
CLASSES_CSV_HEADER = ("labels", "id")  # Onepanel's header (its Mask R-CNN workflow wrote it)
MODEL_CARD_FILE = "model_card.md"
TFLITE_FILE = "model.tflite"
TFLITE_CHOICES = ("auto", "yes", "no")
FORMAT_VERSION = 1


class ExportError(RuntimeError):
    """The export cannot be made or copied: the message says what and what to do."""


@dataclass(frozen=True)
class ExportModelResult:
    output_dir: Path  # the exported model directory
    metadata: dict[str, dict[str, Any]]  # keyed by the face's output: exported_model


def classes_csv(label_map: LabelMap) -> str:
    """Onepanel's classes.csv: `labels,id` then `name,id` per class, in id order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLASSES_CSV_HEADER)
    for class_id, name in label_map.items():
        writer.writerow([name, class_id])
    return out.getvalue()


def run_export_model(
    model_dir: str | os.PathLike,
    exported_model_dir: str | os.PathLike,
    model_card_path: str | os.PathLike,
    evaluation_dir: str | os.PathLike | None = None,
    *,
    test_metrics: dict | None = None,
    checkpoint: str = "best",
    tflite: str = "auto",
    destination_uri: str = "",
) -> ExportModelResult:
    """Export the trained Model at `model_dir` into `exported_model_dir` (see the module
    docstring); the model card also goes to `model_card_path`. `evaluation_dir`: evaluate-model's
    evaluation, whose score thresholds go into export.json and the card. `test_metrics`:
    evaluate-model's metrics (name -> value) for the card."""
    log = logger.info
    output_dir = Path(exported_model_dir)
    tflite = (tflite or "auto").strip().lower()
    if tflite not in TFLITE_CHOICES:
        raise ExportError(f"tflite must be one of {', '.join(TFLITE_CHOICES)}; got {tflite!r}")
    trained = TrainedModel.read(model_dir)
    thresholds = None
    if evaluation_dir is not None:
        try:
            thresholds = evaluation_thresholds(evaluation_dir, trained.label_map.names)
        except ThresholdsError as error:
            raise ExportError(str(error)) from None
    output_dir.mkdir(parents=True, exist_ok=True)
    if any(output_dir.iterdir()):
        raise ExportError(f"{output_dir} is not empty: export-model writes into an empty directory")

    module, trained, description = load_serving_module(model_dir, checkpoint, log=log)
    saved_model_dir = output_dir / SAVED_MODEL_DIR
    save_serving_module(module, saved_model_dir)
    which = description["checkpoint"]
    log(f"saved the SavedModel of {trained.preset} ({which} checkpoint) to {saved_model_dir}")

    label_map = trained.label_map
    (output_dir / "label_map.json").write_text(label_map.to_json(), encoding="utf-8")
    (output_dir / "label_map.pbtxt").write_text(label_map.to_pbtxt(), encoding="utf-8")
    (output_dir / CLASSES_CSV).write_text(classes_csv(label_map), encoding="utf-8", newline="")

    tflite_info = export_tflite_if_wanted(module, trained, tflite, output_dir, log)

    metadata = export_metadata(trained, module, description, tflite_info)
    metadata["export_id"] = export_id(trained, description)
    if thresholds is not None:
        metadata[EXPORT_KEY] = thresholds
    card = model_card_markdown(trained, metadata, test_metrics)
    (output_dir / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    Path(model_card_path).parent.mkdir(parents=True, exist_ok=True)
    Path(model_card_path).write_text(card, encoding="utf-8")
    (output_dir / EXPORT_METADATA_FILE).write_text(
        json.dumps(metadata, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if destination_uri:
        metadata["destination_uri"] = copy_to_destination(
            output_dir, destination_uri, metadata["export_id"], log
        )
    return ExportModelResult(output_dir, {"exported_model": metadata})


def save_serving_module(module, saved_model_dir: Path) -> None:
    import tensorflow as tf

    signatures = module.signatures()
    # The model runs through model.call (as Model Garden's own export does), so Keras warns for
    # every layer that it "is not built" and skips its Keras metadata; the variables and the
    # signatures, all that serving reads, are saved. Those warnings are noise here.
    keras_logger = logging.getLogger("tensorflow")
    level = keras_logger.level
    keras_logger.setLevel(logging.ERROR)
    try:
        tf.saved_model.save(module, str(saved_model_dir), signatures=signatures)
    finally:
        keras_logger.setLevel(level)


def export_tflite_if_wanted(module, trained: TrainedModel, tflite: str, output_dir: Path, log):
    from ..inference.tflite import TFLiteUnsupported, export_tflite, tflite_supported

    if tflite == "no":
        return {"exported": False, "reason": "tflite: no"}
    supported, why = tflite_supported(trained.preset, module)
    if not supported:
        if tflite == "yes":
            raise ExportError(
                f"tflite: yes, but {trained.preset} cannot be exported to TFLite: {why}"
            )
        log(f"no TFLite export for {trained.preset}: {why}")
        return {"exported": False, "reason": why}
    try:
        info = export_tflite(module, output_dir / TFLITE_FILE)
    except TFLiteUnsupported as e:
        if tflite == "yes":
            raise ExportError(f"tflite: yes, but the TFLite conversion failed: {e}") from e
        log(f"no TFLite export for {trained.preset}: {e}")
        return {"exported": False, "reason": str(e)}
    log(f"wrote {output_dir / TFLITE_FILE} ({info['bytes']} bytes)")
    return {"exported": True, "file": TFLITE_FILE, **info}


def export_id(trained: TrainedModel, description: dict) -> str:
    """Names what was exported: the same checkpoint of the same run gives the same id."""
    digest = hashlib.sha256()
    digest.update(trained.preset.encode())
    digest.update(trained.config_yaml.encode())
    digest.update(trained.label_map.to_json().encode())
    prefix = Path(description["checkpoint_path"])
    for name in sorted(p.name for p in prefix.parent.glob(prefix.name + ".*")):
        if name.endswith(".index"):
            digest.update((prefix.parent / name).read_bytes())
    return digest.hexdigest()[:16]


def export_metadata(trained: TrainedModel, module, description: dict, tflite_info: dict) -> dict:
    outputs = list(OUTPUT_KEYS) + ([MASKS_KEY] if module.has_masks else [])
    generator = module.config.task.model.detection_generator
    return {
        "format_version": FORMAT_VERSION,
        "preset": trained.preset,
        "architecture": trained.metadata.get("architecture"),
        "global_step": description["global_step"] or trained.metadata.get("global_step"),
        "checkpoint": description["checkpoint"],
        "checkpoint_name": Path(description["checkpoint_path"]).name,
        "num_classes": len(trained.label_map),
        "class_names": list(trained.label_map.names),
        "has_masks": module.has_masks,
        "model_input_size": list(module.input_size),
        "detection": {
            "score_threshold": float(generator.pre_nms_score_threshold),
            "nms_iou_threshold": float(generator.nms_iou_threshold),
            "max_detections": int(generator.max_num_detections),
            "pre_nms_top_k": int(generator.pre_nms_top_k),
        },
        "signatures": {
            SERVING_DEFAULT: {"inputs": {IMAGES_INPUT: "uint8 [1, H, W, 3]"}, "outputs": outputs},
            SERVE_IMAGE_BYTES: {
                "inputs": {IMAGE_BYTES_INPUT: "string [1] (JPEG/PNG/GIF/BMP)"},
                "outputs": outputs,
            },
        },
        "tflite": tflite_info,
        "dataset": trained.metadata.get("dataset"),
        "val_metrics": trained.metadata.get("metrics"),
    }


# --- model card ----------------------------------------------------------------------------


# COCO's order (KFP hands Metrics metadata back in no particular order); others follow by name.
COCO_STATS = (
    *("AP", "AP50", "AP75", "APs", "APm", "APl"),
    *("AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
)
METRICS_ORDER = [*COCO_STATS, *(f"mask_{name}" for name in COCO_STATS)]


def _metric_rank(name: str) -> tuple[int, str]:
    if name in METRICS_ORDER:
        return METRICS_ORDER.index(name), ""
    return len(METRICS_ORDER), name


def _metrics_table(metrics: dict | None) -> list[str]:
    rows = [
        (name, value)
        for name, value in (metrics or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    rows.sort(key=lambda row: _metric_rank(row[0]))
    if not rows:
        return ["(none)"]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {markdown_cell(name)} | {value:.4f} |" for name, value in rows]
    return lines


def model_card_markdown(trained: TrainedModel, metadata: dict, test_metrics: dict | None) -> str:
    meta = trained.metadata
    lines = [
        f"# Model card: {markdown_cell(trained.preset)}",
        "",
        "| | |",
        "|---|---|",
        f"| preset | `{markdown_cell(trained.preset)}` |",
        f"| architecture | {markdown_cell(meta.get('architecture', '?'))} |",
        f"| backbone | {markdown_cell(meta.get('backbone', '?'))} |",
        f"| model input size | {'×'.join(str(x) for x in metadata['model_input_size'])} px |",
        f"| training steps | {metadata['global_step']} |",
        f"| exported checkpoint | {metadata['checkpoint']} (`{metadata['checkpoint_name']}`) |",
        f"| masks | {'yes (full-image, uint8 0/1)' if metadata['has_masks'] else 'no'} |",
        f"| detections | at most {metadata['detection']['max_detections']}, score ≥ "
        f"{metadata['detection']['score_threshold']:g}, NMS IoU "
        f"{metadata['detection']['nms_iou_threshold']:g} |",
        f"| TFLite | {'yes' if metadata['tflite'].get('exported') else 'no'} |",
        f"| export id | `{metadata['export_id']}` |",
        "",
        "## Dataset lineage",
        "",
    ]
    dataset = meta.get("dataset") or {}
    if dataset:
        lines += ["| split | examples | instances | masks | source |", "|---|---|---|---|---|"]
        for split, info in dataset.items():
            info = info if isinstance(info, dict) else {"source": info}
            source = info.get("source") or info.get("path") or ""
            lines.append(
                f"| {markdown_cell(split)} | {info.get('num_examples', '')} | "
                f"{info.get('num_instances', '')} | {info.get('has_masks', '')} | "
                f"{markdown_cell(source)} |"
            )
    else:
        lines.append("(not recorded)")
    if meta.get("initial_weights"):
        lines += ["", f"Initial weights: `{markdown_cell(json.dumps(meta['initial_weights']))}`"]
    lines += ["", "## Validation metrics (during training)", ""]
    lines += _metrics_table(meta.get("metrics"))
    lines += ["", "## Test metrics (evaluate-model)", ""]
    lines += _metrics_table(test_metrics) if test_metrics else ["(not given)"]
    lines += ["", "## Score thresholds", ""]
    if metadata.get(EXPORT_KEY):
        lines += [
            "Per class, the score of highest F1 on the validation split (evaluate-model); "
            "preannotate and the CVAT function keep detections at or above it unless given a "
            "threshold.",
            "",
            thresholds_markdown(metadata[EXPORT_KEY]).rstrip(),
        ]
    else:
        lines.append(
            f"Not calibrated (exported without evaluate-model's evaluation): users of this model "
            f"get {DEFAULT_SCORE_THRESHOLD:g} for every class unless they give a threshold."
        )
    lines += ["", "## Label map", "", "| id | name |", "|---|---|"]
    lines += [f"| {i} | {markdown_cell(name)} |" for i, name in trained.label_map.items()]
    lines += [
        "",
        "## Serving",
        "",
        f"`{SERVING_DEFAULT}`: `{IMAGES_INPUT}` uint8 [1, H, W, 3] RGB; `{SERVE_IMAGE_BYTES}`: "
        f"`{IMAGE_BYTES_INPUT}` string [1] (encoded JPEG/PNG). Outputs: "
        + ", ".join(f"`{k}`" for k in metadata["signatures"][SERVING_DEFAULT]["outputs"])
        + "; boxes are [ymin, xmin, ymax, xmax] normalized to the input image, only the "
        "num_detections valid detections are returned.",
        "",
    ]
    return "\n".join(lines)


# --- destination ---------------------------------------------------------------------------


def copy_to_destination(output_dir: Path, destination_uri: str, our_id: str, log: Log) -> str:
    """Copy the export to `destination_uri`; never over another export (see module docstring)."""
    uri = destination_uri.strip().rstrip("/")
    if storage.is_local(uri):
        uri = str(storage.local_path(uri))
    try:
        existing = storage.list_files(uri) if storage.exists(uri) else []
    except storage.StorageError as e:
        raise ExportError(f"cannot read the destination {storage.redacted(uri)}: {e}") from e
    if existing:
        theirs = _existing_export_id(uri, existing)
        if theirs != our_id:
            what = f"export {theirs}" if theirs else f"{len(existing)} other file(s)"
            raise ExportError(
                f"the destination {storage.redacted(uri)} already holds {what}; export-model "
                f"never overwrites it. Choose a new destination_uri (e.g. add a version: "
                f"{storage.redacted(uri)}/v2) or delete the old export first."
            )
        if storage.is_complete(uri):
            log(f"{storage.redacted(uri)} already holds this export ({our_id}): left as it is")
            return uri
        log(f"completing an unfinished copy of this export ({our_id}) at {storage.redacted(uri)}")
    if storage.is_local(uri):
        _copy_local(output_dir, Path(uri))
    else:
        storage.upload_directory(output_dir, uri)
    log(f"copied the export to {storage.redacted(uri)}")
    return uri


def _existing_export_id(uri: str, existing: list[str]) -> str | None:
    if EXPORT_METADATA_FILE not in existing:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        local = storage.download_file(
            storage.join_uri(uri, EXPORT_METADATA_FILE), Path(scratch) / "x"
        )
        try:
            return json.loads(local.read_text(encoding="utf-8")).get("export_id")
        except (json.JSONDecodeError, AttributeError):
            return None


def _copy_local(output_dir: Path, target: Path) -> None:
    """A local destination appears whole: copied beside it, renamed into place, marker last."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        storage.upload_directory(output_dir, str(staging))
        if target.exists():
            shutil.rmtree(target)  # only our own unfinished copy reaches here
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
