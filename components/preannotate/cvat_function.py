"""Our exported (or trained) model as a CVAT auto-annotation function (cvat-sdk's detection
function interface), for CVAT's own tools instead of our preannotate step:

    cvat-cli --server-host URL task auto-annotate TASK_ID \
        --function-module cvat_kfp.components.preannotate.cvat_function -p model=str:URI \
        [-p score_threshold=float:0.5] [-p checkpoint=str:best] [-p cache_dir=str:PATH] \
        [--conf-threshold 0.4] [--conv-mask-to-poly] [--clear-existing]

and, on CVAT Enterprise/Cloud, as a native function served by `cvat-cli function run-agent`
(see cvat_agent.py and deploy/agent/).

`model` is export-model's output (a folder holding saved_model/ and label_map.json) or a trained
Model (train-tfod / train-maskrcnn), as a local folder, an archive of one, a gs:// folder or
archive, or an https:// archive. Remote models and archives are fetched once into a cache
(`cache_dir`, else $CVAT_KFP_CACHE_DIR, else ~/.cache/cvat-kfp/models) and reused by later runs:
a remote URI is taken to name one model for good, as export-model never writes over a
destination (remove its cache entry to fetch it again); a local archive is fetched again when
its size or modification time changes.

Score threshold: CVAT's (`--conf-threshold`) when it gives one, else `score_threshold`; its default
-1 means each label's threshold as the exported model carries it (calibrated on the val split by
evaluate-model; inference.thresholds), 0.5 for a model that carries none.

The spec declares the model's labels by name with the label map's ids: rectangle labels for a
detector, mask labels for Mask R-CNN (polygons when CVAT asks for conv_mask_to_poly). CVAT's
driver matches them to the task's labels by name. Shapes come from the same conversion as the
preannotate step (shapes.detections_to_shapes), in the pixels of the image CVAT hands over,
turned by its EXIF orientation as CVAT shows it. A mask of several parts gives one polygon per
part, ungrouped: the function cannot know the task's groups, and a clashing group id would merge
ours into a person's group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import numpy as np
from PIL import Image, ImageOps

from ..common import storage
from ..inference.thresholds import MODEL_THRESHOLDS, resolve_score_thresholds
from . import shapes as geometry

DEFAULT_SCORE_THRESHOLD = 0.5
CACHE_DIR_ENV = "CVAT_KFP_CACHE_DIR"
CACHE_ROOT_FILE = ".model-root"  # beside a cached model: where in it the model lies

logger = logging.getLogger(__name__)


class ModelSourceError(ValueError):
    """The `model` parameter names nothing we can load; the message says what to pass."""


class ModelFunction:
    """A Predictor (components/inference) behind cvat-sdk's DetectionFunction interface."""

    def __init__(
        self, predictor, score_threshold: float | Mapping[str, float] = DEFAULT_SCORE_THRESHOLD
    ):
        """`score_threshold`: one for every label, or label -> threshold (the model's)."""
        self.predictor = predictor
        if isinstance(score_threshold, Mapping):
            self.score_threshold = {k: check_threshold(v) for k, v in score_threshold.items()}
        else:
            self.score_threshold = check_threshold(score_threshold)
        label_type = "mask" if predictor.has_masks else "rectangle"
        self.label_ids = {name: int(i) for i, name in predictor.label_map.items()}
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[
                cvataa.label_spec(name, label_id, type=label_type)
                for name, label_id in self.label_ids.items()
            ]
        )
        self.skipped: Counter = Counter()  # reason -> detections at or above the threshold left out

    def detect(self, context, image: Image.Image) -> list:
        """The shapes of the detections scoring at least the threshold, in the image's pixels.

        The threshold is CVAT's (`context.conf_threshold`) when it gives one, else ours.
        """
        threshold = context.conf_threshold
        if threshold is None:
            threshold = self.score_threshold
        pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        height, width = pixels.shape[:2]
        if self.predictor.has_masks:
            shape_type = "polygon" if context.conv_mask_to_poly else "mask"
        else:
            shape_type = "rectangle"
        frame = geometry.detections_to_shapes(
            self.predictor.predict(pixels),
            width,
            height,
            dict.fromkeys(self.label_ids, shape_type),
            threshold,
        )
        if frame.skipped:
            reasons = Counter(skip.reason for skip in frame.skipped)
            self.skipped.update(reasons)
            logger.info(
                "%s: %s",
                context.frame_name,
                ", ".join(f"{n} detection(s) left out: {why}" for why, n in reasons.items()),
            )
        factory = {"rectangle": cvataa.rectangle, "polygon": cvataa.polygon, "mask": cvataa.mask}
        return [
            factory[shape.type](
                self.label_ids[shape.label], [float(v) for v in part], score=shape.score
            )
            for shape in frame.shapes
            for part in shape.parts
        ]


def create(
    model: str,
    score_threshold: float = MODEL_THRESHOLDS,
    checkpoint: str = "best",
    cache_dir: str = "",
) -> ModelFunction:
    """The function for cvat-cli's `-p` parameters: the model at `model`, loaded once.

    `score_threshold` applies when CVAT gives no threshold of its own (-1: each label's threshold
    as the exported model carries it, 0.5 where it carries none); `checkpoint` ("best" or
    "latest") picks a trained Model's checkpoint.
    """
    _log_to_stderr()
    if score_threshold != MODEL_THRESHOLDS:
        check_threshold(score_threshold)
    if checkpoint not in ("best", "latest"):
        raise ModelSourceError(f"checkpoint must be 'best' or 'latest', not {checkpoint!r}")
    local = fetch_model(model, cache_dir or default_cache_dir())

    from ..inference.predictor import load_predictor
    from ..inference.trained import ModelArtifactError

    try:
        predictor = load_predictor(local, checkpoint)
    except ModelArtifactError as error:
        raise ModelSourceError(f"model {storage.redacted(model)}: {error}") from None
    kind = "masks" if predictor.has_masks else "boxes"
    logger.info(
        "model %s loaded: %s, %d label(s): %s",
        storage.redacted(model),
        kind,
        len(predictor.label_map),
        ", ".join(predictor.label_map.names),
    )
    thresholds = resolve_score_thresholds(local, predictor.label_map.names, score_threshold)
    logger.info("score threshold (when CVAT gives none): %s", thresholds.describe())
    if thresholds.source == "given":
        return ModelFunction(predictor, score_threshold)
    return ModelFunction(predictor, thresholds.by_label)


def check_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(
            f"score_threshold must be a number in [0, 1] (-p score_threshold=float:0.5), "
            f"not {value!r}"
        )
    return float(value)


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "cvat-kfp" / "models"


def fetch_model(uri: str, cache_dir: str | os.PathLike) -> Path:
    """A local folder holding the model at `uri`: a local folder in place; anything else fetched
    once into `cache_dir` (an archive extracted) and found there by later calls."""
    from ..common.archives import ArchiveError
    from ..export_annotations.sources import fetch_source

    uri = str(uri or "").strip()
    if not uri:
        raise ModelSourceError(
            "no model given: pass -p model=str:URI, the export-model output or a trained Model "
            "(a folder, an archive of one, gs:// or https://)"
        )
    label = storage.redacted(uri)
    try:
        storage.backend_for(uri)
    except storage.UnsupportedSchemeError as error:
        raise ModelSourceError(f"model {label}: {error}") from None
    if storage.is_local(uri):
        path = storage.local_path(uri)
        if path.is_dir():
            return path
        if not path.is_file():
            raise ModelSourceError(f"model {label}: no such file or folder")
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    else:
        key = uri
    cache_dir = Path(cache_dir)
    cached = cache_dir / hashlib.sha256(key.encode()).hexdigest()[:32]
    root_file = cached / CACHE_ROOT_FILE
    if root_file.is_file():
        root = cached / json.loads(root_file.read_text(encoding="utf-8"))["root"]
        if root.is_dir():
            logger.info("model %s: cached at %s", label, root)
            return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetching-", dir=cache_dir))
    try:
        root = fetch_source(uri, staging)
    except storage.ObjectNotFoundError:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelSourceError(
            f"model {label}: not found (no such object, and no files under it as a folder)"
        ) from None
    except (ArchiveError, storage.StorageError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelSourceError(f"model {label}: {error}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    relative = root.relative_to(staging).as_posix()
    (staging / CACHE_ROOT_FILE).write_text(json.dumps({"root": relative}), encoding="utf-8")
    shutil.rmtree(cached, ignore_errors=True)  # an unfinished earlier fetch
    try:
        staging.rename(cached)
    except OSError:  # another process cached it meanwhile: use our own copy
        logger.info("model %s: fetched to %s", label, root)
        return root
    logger.info("model %s: fetched once into the cache at %s", label, cached)
    return cached / relative


def _log_to_stderr() -> None:
    """Our log lines beside cvat-cli's (it configures only its own logger)."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s] %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
