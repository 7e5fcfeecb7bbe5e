"""Submit runs to, and upload pipelines to, a Kubeflow Pipelines cluster (kfp.Client, API v2beta1).

The host comes from the argument or `KF_PIPELINES_ENDPOINT` (kfp's own variable); a bearer token,
when the cluster wants one, only from the environment: `KFP_TOKEN` (e.g. `export
KFP_TOKEN=$(gcloud auth print-access-token)` or a ServiceAccount token), never from a flag, so it
stays out of shell history and process lists. Each call compiles the pipeline afresh (with the
component image of this version, or `CVAT_KFP_IMAGE` / `CVAT_KFP_GPU_IMAGE`), so what is sent is
what the code says; the arguments are checked against the pipeline first, and a training
pipeline's `hyperparameters` are parsed as its training step will parse them.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvat_kfp.pipelines import parameters, registry
from cvat_kfp.pipelines.parameters import ParameterError

TOKEN_ENV = "KFP_TOKEN"
HOST_ENV = "KF_PIPELINES_ENDPOINT"
PREFLIGHT_TIMEOUT_S = 15


class ClusterError(RuntimeError):
    """The cluster could not be reached or refused the request; the message says which."""


@dataclass(frozen=True)
class Submitted:
    run_id: str
    experiment_id: str
    url: str


@dataclass(frozen=True)
class Uploaded:
    pipeline_id: str
    pipeline_version_id: str
    new_pipeline: bool
    url: str


def resolve_host(host: str | None) -> str:
    host = (host or os.environ.get(HOST_ENV) or "").rstrip("/")
    if not host:
        raise ClusterError(f"no Kubeflow Pipelines host: pass --host https://... or set {HOST_ENV}")
    return host


def _preflight(host: str, token: str | None) -> None:
    """Fail fast with a clear message: kfp.Client retries a refused healthz call for 25 s and
    then reports a timeout."""
    request = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=PREFLIGHT_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise ClusterError(_explain(host, error)) from None
        # other statuses: some gateways do not route healthz; let the real calls decide
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ClusterError(f"cannot reach {host}: {reason}") from None


def connect(host: str | None = None, namespace: str | None = None):
    """A kfp.Client for `host` (else $KF_PIPELINES_ENDPOINT), with $KFP_TOKEN if set."""
    import kfp

    host = resolve_host(host)
    _preflight(host, os.environ.get(TOKEN_ENV) or None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # "only works with KFP v2"
        try:
            return kfp.Client(
                host=host,
                namespace=namespace or "kubeflow",
                existing_token=os.environ.get(TOKEN_ENV) or None,
            )
        except Exception as error:  # urllib3 and kfp_server_api errors alike
            raise ClusterError(_explain(host, error)) from None


def _explain(host: str, error: Exception) -> str:
    status = getattr(error, "status", None) or getattr(error, "code", None)
    if status in (401, 403):
        return (
            f"{host} refused the request ({status}): set {TOKEN_ENV} to a valid token for this "
            f"cluster (and --namespace to one you may use)"
        )
    reason = getattr(error, "reason", None) or error
    return f"{host}: {type(error).__name__}: {reason}"


def _compiled(pipeline_name: str, directory: str) -> Path:
    parameters.load(pipeline_name)  # unknown pipeline: a ParameterError listing them
    return registry.compile_pipeline(pipeline_name, directory)


def submit(
    pipeline_name: str,
    arguments: Mapping[str, Any],
    *,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str = "cvat-kfp",
    run_name: str | None = None,
    enable_caching: bool | None = None,
) -> Submitted:
    """Start a run of `pipeline_name` with `arguments` on the cluster; returns its ids and URL.

    `enable_caching` None keeps the pipeline's own choices (data stages cached, training not).
    """
    checked = parameters.check_arguments(pipeline_name, arguments)
    check_hyperparameters(pipeline_name, checked)
    host = resolve_host(host)
    client = connect(host, namespace)
    run_name = run_name or f"{pipeline_name} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    with tempfile.TemporaryDirectory() as directory:
        package = _compiled(pipeline_name, directory)
        try:
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=checked,
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
                enable_caching=enable_caching,
            )
        except Exception as error:
            raise ClusterError(_explain(host, error)) from None
    run_id = result.run_id
    return Submitted(run_id, result.run_info.experiment_id, f"{host}/#/runs/details/{run_id}")


def check_hyperparameters(pipeline_name: str, arguments: Mapping[str, Any]) -> None:
    """Parse the `hyperparameters` argument (or default) for the run's preset, as train-tfod and
    train-maskrcnn will: a mistake is a ParameterError now, not a failed step after the data
    stages ran on the cluster. Pipelines without the parameter pass."""
    from cvat_kfp.components.training.hyperparameters import (
        HyperparameterError,
        parse_hyperparameters,
    )
    from cvat_kfp.components.training.presets import PresetError, get_preset

    declared = parameters.pipeline_parameters(pipeline_name)
    if "hyperparameters" not in declared or "preset" not in declared:
        return
    try:
        preset = get_preset(arguments.get("preset", declared["preset"].default))
    except PresetError as error:
        raise ParameterError(f"--param preset: {error}") from None
    text = arguments.get("hyperparameters", declared["hyperparameters"].default)
    try:
        parse_hyperparameters(text, preset)
    except HyperparameterError as error:
        raise ParameterError(f"--param hyperparameters (preset {preset.name!r}): {error}") from None


def upload(
    pipeline_name: str,
    *,
    host: str | None = None,
    namespace: str | None = None,
    version: str | None = None,
) -> Uploaded:
    """Upload `pipeline_name` to the cluster: as a new pipeline if none has its name, else as a
    new version of it (named `version`, default `<package version> <date time>`)."""
    from cvat_kfp.components.common.component_image import PACKAGE_VERSION

    host = resolve_host(host)
    client = connect(host, namespace)
    pipeline = parameters.load(pipeline_name)
    display_name = pipeline.name  # "tfod-training", as the compiled YAML names it
    description = pipeline.description or ""
    with tempfile.TemporaryDirectory() as directory:
        package = str(_compiled(pipeline_name, directory))
        try:
            pipeline_id = client.get_pipeline_id(display_name)
            if pipeline_id is None:
                created = client.upload_pipeline(
                    package, pipeline_name=display_name, description=description,
                    namespace=namespace if namespace else None,
                )  # fmt: skip
                # KFP makes the package the new pipeline's first version
                pipeline_id, version_id, new_pipeline = created.pipeline_id, "", True
            else:
                version = version or f"{PACKAGE_VERSION} {time.strftime('%Y-%m-%d %H:%M:%S')}"
                created = client.upload_pipeline_version(
                    package, pipeline_version_name=version, pipeline_id=pipeline_id,
                    description=description,
                )  # fmt: skip
                version_id, new_pipeline = created.pipeline_version_id, False
        except Exception as error:
            raise ClusterError(_explain(host, error)) from None
    return Uploaded(
        pipeline_id, version_id, new_pipeline, f"{host}/#/pipelines/details/{pipeline_id}"
    )
