"""A cvat-sdk client for CVAT servers: credentials from the environment, retries, clear refusals.

Shared by export-annotations (pulling exports) and preannotate (uploading predictions).
Credentials come only from the environment, which the pipelines fill from a Kubernetes Secret:
CVAT_ACCESS_TOKEN (a personal access token), or CVAT_USERNAME and CVAT_PASSWORD; optional
CVAT_ORGANIZATION is the slug of the organization that owns the resources.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial

import urllib3
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.client import AccessTokenCredentials, Client, Config, PasswordCredentials
from cvat_sdk.core.exceptions import BackgroundRequestException
from cvat_sdk.version import VERSION as SDK_VERSION

from .redaction import has_user_info, redact_text, redact_url

TOKEN_VAR = "CVAT_ACCESS_TOKEN"
USERNAME_VAR = "CVAT_USERNAME"
PASSWORD_VAR = "CVAT_PASSWORD"
ORGANIZATION_VAR = "CVAT_ORGANIZATION"

MAX_RETRY_DELAY = 60.0
# 409: CVAT refuses a second identical export while the first runs; it is worth waiting for.
TRANSIENT_STATUSES = (409, 429)


class CvatServerError(RuntimeError):
    """CVAT could not be reached, refused, failed or took too long; the message says what to do."""


def credentials_from_env():
    token = os.environ.get(TOKEN_VAR, "").strip()
    if token:
        return AccessTokenCredentials(token), TOKEN_VAR
    username = os.environ.get(USERNAME_VAR, "").strip()
    password = os.environ.get(PASSWORD_VAR, "")
    if username and password:
        return PasswordCredentials(username, password), f"{USERNAME_VAR}/{PASSWORD_VAR}"
    half_set = f" ({USERNAME_VAR} is set, {PASSWORD_VAR} is not)" if username else ""
    raise CvatServerError(
        f"no CVAT credentials in the environment{half_set}: set {TOKEN_VAR} (a personal access "
        f"token) or {USERNAME_VAR} and {PASSWORD_VAR}. The pipeline sets them from a Kubernetes "
        "Secret; credentials are never pipeline parameters."
    )


def check_cvat_url(cvat_url: str) -> str:
    """`cvat_url`, refused (ValueError) when it carries credentials: URLs end up in logs."""
    if has_user_info(cvat_url):
        raise ValueError(
            f"cvat_url {redact_url(cvat_url)} carries credentials (user:password@ before the "
            "host), and URLs are logged and shown in the KFP UI: remove them from the URL and put "
            f"them in the Kubernetes Secret the pipeline maps to {TOKEN_VAR} (a personal access "
            f"token), or to {USERNAME_VAR} and {PASSWORD_VAR}"
        )
    return cvat_url


class CvatCaller:
    """Calls the server: retries transient failures with backoff, turns refusals into advice."""

    def __init__(self, server_url, credentials_source, retries, retry_delay, log):
        self.server_url = redact_url(check_cvat_url(server_url))  # as messages show it
        self.credentials_source = credentials_source
        self.retries = retries
        self.retry_delay = retry_delay
        self.log = log

    def __call__(self, what: str, action: Callable, *, resource: str = "", login: bool = False):
        """`what` completes "could not ...", `resource` names what a 404 did not find."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                if not _is_transient(error):
                    raise self._refusal(what, error, resource, login) from None
                if attempt == self.retries:
                    raise CvatServerError(
                        f"could not {what} on {self.server_url} after {attempt + 1} attempts: "
                        f"{_describe(error)}"
                    ) from None
                delay = max(self._backoff(attempt), _retry_after(error))
                self.log(
                    f"could not {what} ({_describe(error)}); "
                    f"retry {attempt + 1} of {self.retries} in {delay:.3g} s"
                )
                time.sleep(delay)
            except BackgroundRequestException as error:
                raise CvatServerError(f"CVAT failed to {what}: {redact_text(error)}") from None

    def _backoff(self, attempt: int) -> float:
        return min(self.retry_delay * 2**attempt, MAX_RETRY_DELAY)

    def _refusal(self, what, error, resource, login) -> CvatServerError:
        status = getattr(error, "status", None)
        if status == 401 or (login and status in (400, 403)):
            return CvatServerError(
                f"CVAT at {self.server_url} rejected the credentials from "
                f"{self.credentials_source} (HTTP {status}) when trying to {what}: check them "
                "in the Kubernetes Secret the pipeline reads them from (a token may have expired)"
            )
        if status == 404 and resource:
            return CvatServerError(
                f"{resource} not found on {self.server_url} (or no access to it with the "
                f"credentials from {self.credentials_source}{self._organization_hint()})"
            )
        if status == 403:
            return CvatServerError(
                f"CVAT at {self.server_url} refused to let the user from "
                f"{self.credentials_source} {what} (HTTP 403: no permission"
                f"{self._organization_hint()}): {_describe(error)}"
            )
        return CvatServerError(f"could not {what} on {self.server_url}: {_describe(error)}")

    @staticmethod
    def _organization_hint() -> str:
        organization = os.environ.get(ORGANIZATION_VAR, "").strip()
        if organization:
            return f"; in the organization {organization!r} from {ORGANIZATION_VAR}"
        return f"; if an organization owns it, set {ORGANIZATION_VAR} to its slug"


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib3.exceptions.HTTPError):
        return True  # connection refused or reset, read timeout
    status = error.status or 0
    return status >= 500 or status in TRANSIENT_STATUSES


def _describe(error: Exception) -> str:
    """The error in one line, URLs redacted: HTTP libraries quote the request's URL."""
    if not isinstance(error, ApiException):
        return redact_text(getattr(error, "reason", None) or error)
    body = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else error.body
    body = " ".join((body or "").split())[:300]
    described = f"HTTP {error.status} {error.reason or ''}".rstrip() + (f": {body}" if body else "")
    return redact_text(described)


def _retry_after(error: Exception) -> float:
    headers = getattr(error, "headers", None) or {}
    try:
        return min(float(headers.get("Retry-After", 0)), MAX_RETRY_DELAY)
    except ValueError:
        return 0.0  # an HTTP date: the backoff will do


class CvatClient(Client):
    """cvat-sdk's Client whose waits for server-side requests log, retry polls and time out."""

    def __init__(self, server_url: str, call: CvatCaller, poll_interval: float, timeout: float):
        super().__init__(
            server_url, config=Config(status_check_period=poll_interval), check_server_version=False
        )
        # One retry layer, ours, which logs: urllib3's default in the SDK would silently retry
        # each request 3 more times under each of ours.
        self.api_client.rest_client.pool_manager.connection_pool_kw["retries"] = False
        self.call = call
        self.export_timeout = timeout

    def wait_for_completion(self, rq_id: str, *, status_check_period=None, log_prefix=None):
        period = status_check_period or self.config.status_check_period
        deadline = time.monotonic() + self.export_timeout
        shown = None
        while True:
            request, response = self.call(
                "check the export status", partial(self.api_client.requests_api.retrieve, rq_id)
            )
            status = request.status.value
            progress = getattr(request, "progress", None)
            what = _operation_name(request.operation)
            if (status, progress) != shown:
                self.call.log(f"{what}: export {status}" + _percent(progress))
                shown = (status, progress)
            if status == "finished":
                return request, response
            if status == "failed":
                raise BackgroundRequestException(getattr(request, "message", "") or "no reason")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CvatServerError(
                    f"CVAT did not finish exporting {what} within {self.export_timeout:g} s "
                    f"(last status: {status}{_percent(progress)}); it may still finish on the "
                    "server: raise the timeout, or check the server's export workers"
                )
            time.sleep(min(period, remaining))


def _operation_name(operation) -> str:
    target = operation.target
    return f"{target} {getattr(operation, f'{target}_id', None) or '?'}"


def _percent(progress) -> str:
    return f" ({progress:.0%})" if progress else ""


def connect(client: CvatClient, call: CvatCaller, credentials) -> None:
    version = call("reach CVAT", client.get_server_version)
    call.log(f"CVAT {version} at {redact_url(client.api_map.host)} (cvat-sdk {SDK_VERSION})")
    call(f"log in with {call.credentials_source}", partial(client.login, credentials), login=True)
    organization = os.environ.get(ORGANIZATION_VAR, "").strip()
    if organization:
        client.organization_slug = organization
    user = call("check the credentials", client.users.retrieve_current_user, login=True)
    where = f" in the organization {organization!r}" if organization else ""
    call.log(f"signed in as {user.username!r} ({call.credentials_source}){where}")
