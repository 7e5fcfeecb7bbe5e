"""Run the service (`serve`) and register its webhook in CVAT (`register`)."""

from __future__ import annotations

import logging
from pathlib import Path

from cvat_kfp.pipelines.webhook.app import (
    SECRET_ENV,
    create_app,
    runs_token_from_env,
    secret_from_env,
)
from cvat_kfp.pipelines.webhook.cvat_state import CvatAccess
from cvat_kfp.pipelines.webhook.rules import load_rules
from cvat_kfp.pipelines.webhook.store import Store
from cvat_kfp.pipelines.webhook.worker import KfpTarget, Worker

log = logging.getLogger("cvat_kfp.webhook")


class WebhookSetupError(RuntimeError):
    """The service cannot start, or the webhook cannot be registered; the message says why."""


def build_app(
    *,
    rules_path: str | Path,
    database: str | Path,
    cvat_url: str,
    kfp_host: str | None = None,
    kfp_namespace: str | None = None,
    retry_base_s: float = 5.0,
    retry_max_s: float = 300.0,
):
    """The app with its store and worker, everything checked: rules, secret, credentials."""
    from cvat_kfp.components.common.cvat_client import CvatServerError

    rules = load_rules(rules_path)
    secret = secret_from_env()
    if not secret:
        raise WebhookSetupError(
            f"no webhook secret: set {SECRET_ENV} to the secret CVAT signs "
            "its deliveries with (the one given to `register`)"
        )
    if not cvat_url:
        raise WebhookSetupError("no CVAT server: pass --cvat-url or set CVAT_URL")
    try:
        cvat = CvatAccess(cvat_url)
    except CvatServerError as error:
        raise WebhookSetupError(str(error)) from None
    store = Store(database)
    worker = Worker(
        rules,
        store,
        cvat,
        KfpTarget(kfp_host, kfp_namespace),
        retry_base_s=retry_base_s,
        retry_max_s=retry_max_s,
    )
    return create_app(rules, store, worker, secret=secret, runs_token=runs_token_from_env())


def serve(*, host: str, port: int, log_level: str = "info", **settings) -> None:
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    app = build_app(**settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        access_log=False,
    )


def register(*, cvat_url: str, project_id: int, url: str, enable_ssl: bool = True) -> str:
    """Create (or bring up to date) project `project_id`'s webhook to `url`; a line to print."""
    from cvat_kfp.components.common.cvat_client import CvatServerError

    secret = secret_from_env()
    if not secret:
        raise WebhookSetupError(
            f"no webhook secret: set {SECRET_ENV}; the service must be given the same one"
        )
    if not cvat_url:
        raise WebhookSetupError("no CVAT server: pass --cvat-url or set CVAT_URL")
    if not url.startswith(("http://", "https://")):
        raise WebhookSetupError(
            f"--url {url!r}: give the service's address as CVAT reaches it, "
            "e.g. http://cvat-kfp-webhook.kubeflow.svc:8080/webhook"
        )
    try:
        cvat = CvatAccess(cvat_url, log_line=print)
        with cvat.session() as session:
            outcome, webhook = session.ensure_webhook(
                project_id=project_id, target_url=url, secret=secret, enable_ssl=enable_ssl
            )
    except CvatServerError as error:
        raise WebhookSetupError(str(error)) from None
    events = ", ".join(str(e) for e in webhook.events)
    return f"webhook {webhook.id} {outcome} for project {project_id}: {url} ({events})"
