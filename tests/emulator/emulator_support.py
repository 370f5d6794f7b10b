"""Shared pieces of the emulator contract tests (constants, fake clock, request factory)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from botocore.config import Config

#: A SigV4-shaped header for raw HTTP requests; the emulator reads it, never verifies it.
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDIBIMPORTTEST/20250101/us-east-1/imagebuilder/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)
NO_RETRIES = Config(retries={"total_max_attempts": 1})
# botocore checks required members and minimum lengths itself; switch that off so the
# requests reach the emulator and its own checks are what the test sees.
RAW = Config(retries={"total_max_attempts": 1}, parameter_validation=False)


class FakeClock:
    """Wall-clock stand-in that moves only when a test says so."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def import_params(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid ImportVmImage request, unique per ``n``."""
    params: dict[str, Any] = {
        "name": f"web-server-{n}",
        "semanticVersion": "1.0.0",
        "description": "an imported VM",
        "platform": "Linux",
        "osVersion": "Ubuntu 22.04",
        "vmImportTaskId": f"import-ami-{n:08d}",
        "clientToken": f"token-{n}",
        "tags": {"wave": "1"},
    }
    params.update(overrides)
    return params


def raw_request(
    url: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """Send one request as plain HTTP; return status, headers and the decoded JSON body."""
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")


def raw_answers(client: Any) -> list[dict[str, Any]]:
    """The JSON bodies a boto3 client receives, as sent: members of the current model
    (``state.failureContext``, ``latestVersionReferences``) that the pinned botocore's
    parser drops are read here."""
    answers: list[dict[str, Any]] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        answers.append(json.loads(response_dict["body"] or b"{}"))

    client.meta.events.register("before-parse.imagebuilder.*", keep)
    return answers
