"""Secrets in URLs (user info, signed queries) never reach a message: the helpers, and the https
errors of the storage module, whose HTTP library quotes the whole URL."""

import socket
import traceback

import pytest

from cvat_kfp.components.common import storage
from cvat_kfp.components.common.redaction import has_user_info, redact_text, redact_url
from cvat_kfp.components.common.storage import HttpBackend, ObjectNotFoundError, StorageError

SIGNATURE = "3f9a7c0d1e-signature-hex"


def signed(url: str) -> str:
    """`url` as a V4 signed URL (the query a GCS signed URL carries)."""
    return (
        f"{url}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam.gserviceaccount.com"
        f"%2F20260101%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Expires=900&X-Goog-Signature="
        f"{SIGNATURE}"
    )


def everything_shown(error: BaseException) -> str:
    """What a traceback of the error shows, chained exceptions included."""
    return "".join(traceback.format_exception(error))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


# --- the helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        (
            signed("https://storage.googleapis.com/b/x.zip"),
            "https://storage.googleapis.com/b/x.zip?...",
        ),
        ("https://user:pw@h:8443/x.zip?token=secret#part", "https://h:8443/x.zip?..."),
        ("http://alice:s3cret@[::1]:8080/api", "http://[::1]:8080/api"),
        ("https://u:pa#ss?x@cvat.example.com/", "https://cvat.example.com/"),  # unescaped # and ?
        ("https://CVAT.example.com", "https://CVAT.example.com"),
        ("https://h/x?", "https://h/x"),
        ("gs://bucket/run/ckpt-1", "gs://bucket/run/ckpt-1"),
        ("/data/my?file.zip", "/data/my?file.zip"),  # a local path: no URL, nothing to hide
    ],
)
def test_redact_url_drops_user_info_and_the_query(url, shown):
    assert redact_url(url) == shown


def test_has_user_info():
    assert has_user_info("https://alice:pw@cvat.example.com")
    assert has_user_info(" http://alice@cvat.example.com/ ")
    assert not has_user_info("https://cvat.example.com/path/a@b")
    assert not has_user_info("https://cvat.example.com")
    assert not has_user_info("cvat.example.com")


def test_redact_text_finds_urls_and_the_bare_queries_http_libraries_quote():
    text = (
        f"Failed to parse: {signed('http://u:pw@h:99999/x.zip')}\n"
        f"HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: "
        f"/x.zip?X-Goog-Signature={SIGNATURE} (Caused by NewConnectionError('refused'))"
    )
    assert redact_text(text) == (
        "Failed to parse: http://h:99999/x.zip?...\nHTTPConnectionPool(host='h', port=1): "
        "Max retries exceeded with url: /x.zip?... (Caused by NewConnectionError('refused'))"
    )
    assert redact_text("what? see https://h/docs") == "what? see https://h/docs"


# --- storage's https errors ---------------------------------------------------------------------


@pytest.mark.parametrize("status, error", [(404, ObjectNotFoundError), (403, StorageError)])
def test_a_refused_signed_url_keeps_its_signature_out_of_the_error(
    http_files, tmp_path, status, error
):
    http_files.fail_next(5, status=status)
    url = signed(http_files.url("export.zip"))

    with pytest.raises(error) as raised:
        storage.download_file(url, tmp_path / "export.zip")

    assert "/export.zip?...: " in str(raised.value) and f"HTTP {status}" in str(raised.value)
    assert SIGNATURE not in everything_shown(raised.value)


def test_an_unreachable_signed_url_keeps_its_signature_out_of_the_error(tmp_path):
    url = signed(f"http://127.0.0.1:{closed_port()}/export.zip")

    with pytest.raises(StorageError) as raised:
        HttpBackend(attempts=2, backoff_s=0.01).download_file(url, tmp_path / "export.zip")

    message = str(raised.value)
    assert "Connection refused" in message and "gave up after 2 attempts" in message
    assert "/export.zip?..." in message
    assert SIGNATURE not in everything_shown(raised.value)


def test_an_unparsable_signed_url_is_a_storage_error_without_its_signature(tmp_path):
    url = signed("http://127.0.0.1:99999/export.zip")  # no such port

    with pytest.raises(StorageError, match="Failed to parse") as raised:
        storage.download_file(url, tmp_path / "export.zip")

    assert SIGNATURE not in everything_shown(raised.value)
