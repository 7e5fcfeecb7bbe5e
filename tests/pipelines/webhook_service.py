"""`cvat-kfp webhook serve` in a subprocess for the tests, and deliveries as CVAT makes them.

CVAT (cvat/apps/webhooks/utils.py) posts `json=payload` with requests and signs
`json.dumps(payload).encode()` with the webhook's secret: `X-Signature-256: sha256=<hexdigest>`.
The payload of an update is `{"event", "webhook_id", "<resource>": <the resource as the REST API
returns it>, "sender"}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

SECRET = "webhook-secret-for-tests"
RUNS_TOKEN = "runs-token-for-tests"
KFP_TOKEN = "kfp-token-for-tests"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cvat_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def job_event(cvat, job_id: int, webhook_id: int = 1) -> dict:
    """An update:job payload as CVAT sends it: the job as GET /api/jobs/ID returns it."""
    return {
        "event": "update:job",
        "webhook_id": webhook_id,
        "job": cvat._job_json(job_id),
        "sender": {"url": f"{cvat.url}/api/users/1", "id": 1, "username": cvat.username,
                   "first_name": "Alice", "last_name": ""},
    }  # fmt: skip


def task_event(cvat, task_id: int, webhook_id: int = 1) -> dict:
    return {
        "event": "update:task",
        "webhook_id": webhook_id,
        "task": cvat._task_json(task_id),
        "sender": None,
    }


def wait_for(predicate, what: str, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class WebhookService:
    def __init__(
        self, tmp_path: Path, rules: str, cvat_url: str, kfp_url: str, *,
        database: Path | None = None, secret: str = SECRET,
    ):  # fmt: skip
        self.tmp_path = tmp_path
        self.rules_path = tmp_path / "rules.yaml"
        self.rules_path.write_text(rules)
        self.database = database or tmp_path / "state" / "webhook.sqlite"
        self.cvat_url = cvat_url
        self.kfp_url = kfp_url
        self.secret = secret
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "cvat_kfp.pipelines.cli", "webhook", "serve",
            "--rules", str(self.rules_path), "--database", str(self.database),
            "--cvat-url", self.cvat_url, "--host", self.kfp_url,
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--retry-delay", "0.5", "--max-retry-delay", "1",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CVAT_", "KF"))}
        env.update(
            CVAT_WEBHOOK_SECRET=self.secret,
            CVAT_KFP_RUNS_TOKEN=RUNS_TOKEN,
            CVAT_ACCESS_TOKEN="test-token",
            KFP_TOKEN=KFP_TOKEN,
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, wait: bool = True) -> WebhookService:
        self.port = free_port()
        self.starts += 1
        self.log_path = self.tmp_path / f"service-{self.starts}.log"
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(), cwd=REPO, env=self.environment(), stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait:
            wait_for(self._healthy, f"the service to answer /healthz; its log:\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited ({self.process.returncode}):\n{self.log()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log_file.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self._log_file.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def deliver(
        self, payload: dict | None = None, *, body: bytes | None = None,
        signature: str | None = None, secret: str | None = None, sign: bool = True,
    ) -> requests.Response:  # fmt: skip
        """POST as CVAT does: the body is json.dumps(payload), signed with the secret."""
        body = json.dumps(payload).encode("utf-8") if body is None else body
        headers = {"Content-Type": "application/json"}
        if sign:
            headers["X-Signature-256"] = signature or cvat_signature(secret or self.secret, body)
        return requests.post(f"{self.url}/webhook", data=body, headers=headers, timeout=10)

    def runs(self) -> list[dict]:
        response = requests.get(
            f"{self.url}/runs", headers={"Authorization": f"Bearer {RUNS_TOKEN}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()["runs"]

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        wait_for(lambda: self.log().count(text) >= count,
                 f"{text!r} ({count}x) in the log:\n{self.log()}", timeout)  # fmt: skip
