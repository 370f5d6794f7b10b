"""ReusingSigV4Auth signs byte for byte as botocore's SigV4Auth does, whatever it remembers.

Each case signs the same request twice, once with botocore's signer and once with ours,
at the same frozen instant, and compares the Authorization headers. Cases run in one
sequence so that what our signer remembers from one case (a Host, a signing key) is
exercised against the next case's different URL, date, region or secret.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ibimport.aws.signing import SIGNATURE_VERSION, ReusingSigV4Auth, _choose_reusing_signer

BODY = b'{"name":"vm-1","semanticVersion":"1.0.0","clientToken":"t"}'

CASES: list[dict[str, Any]] = [
    {},
    {"url": "https://imagebuilder.eu-west-1.amazonaws.com/ImportVmImage", "region": "eu-west-1"},
    {"url": "http://127.0.0.1:8787/ImportVmImage"},
    {"url": "http://[::1]:8787/ImportVmImage"},
    {"url": "https://imagebuilder.us-east-1.amazonaws.com:443/ImportVmImage"},
    {"url": "http://localhost:80/ImportVmImage"},
    {"url": "http://LOCALHOST:8080/ListImages?owner=Self&b=2&a=1", "method": "POST"},
    {"secret": "a-rotated-secret"},  # same day, same scope: a new key all the same
    {"secret": "a-rotated-secret", "token": "session-token-1"},
    {"when": dt.datetime(2026, 11, 28, 0, 0, 1)},  # the next day: a new key
    {"when": dt.datetime(2026, 11, 28, 23, 59, 59), "body": b""},
    {"body": "unicode body \u00e9".encode()},
    {"headers": {"Host": "explicit.example.com"}},
    {"service": "other-service"},
    {"payload_signing_enabled": False, "url": "https://imagebuilder.example.com/x"},
]


def _sign(signer_class: type, case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    when = case.get("when", dt.datetime(2026, 11, 27, 12, 30, 0))
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    request = AWSRequest(
        method=case.get("method", "PUT"),
        url=case.get("url", "https://imagebuilder.us-east-1.amazonaws.com/ImportVmImage"),
        data=case.get("body", BODY),
        headers={"Content-Type": "application/json", **case.get("headers", {})},
    )
    if "payload_signing_enabled" in case:
        request.context["payload_signing_enabled"] = case["payload_signing_enabled"]
    credentials = Credentials("AKIDSIGNINGTEST", case.get("secret", "secret"), case.get("token"))
    signer = signer_class(
        credentials, case.get("service", "imagebuilder"), case.get("region", "us-east-1")
    )
    signer.add_auth(request)
    return str(request.headers["Authorization"])


def test_every_case_signs_exactly_as_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in CASES * 2:  # the second round meets everything already remembered
        expected = _sign(botocore.auth.SigV4Auth, case, monkeypatch)
        assert _sign(ReusingSigV4Auth, case, monkeypatch) == expected, case


def test_a_changed_secret_is_never_signed_with_the_old_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _sign(ReusingSigV4Auth, {}, monkeypatch)
    rotated = _sign(ReusingSigV4Auth, {"secret": "another"}, monkeypatch)
    assert first != rotated
    assert rotated == _sign(botocore.auth.SigV4Auth, {"secret": "another"}, monkeypatch)


@pytest.mark.parametrize(
    ("signature_version", "context", "chosen"),
    [
        ("v4", {}, SIGNATURE_VERSION),
        ("v4", None, SIGNATURE_VERSION),
        ("v4", {"unsigned_payload": True}, None),
        ("v4-unsigned-body", {}, None),
        ("v4-query", {}, None),
        ("v4a", {}, None),
        ("bearer", {}, None),
        (botocore.UNSIGNED, {}, None),
    ],
)
def test_only_plain_sigv4_is_taken_over(signature_version: Any, context: Any, chosen: Any) -> None:
    assert _choose_reusing_signer(signature_version, context=context) == chosen
