"""Deterministic clientTokens: the same task always carries the same token.

Image Builder answers a repeated ImportVmImage call that carries the same clientToken
with the original image instead of a second one. Deriving the token from the request
itself, rather than at random, makes every retry and every re-run of a manifest safe:
the same task gets the same token from CSV, JSON or JSON Lines, in any row order, on
any machine and in any Python version.

The token is a UUIDv5 (RFC 4122: SHA-1 over ``NAMESPACE`` and a name) whose name is
the canonical request, see :func:`canonical_request`. A salt (``--token-salt``) is
prefixed to the name to start a new generation of tokens on purpose.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import uuid
from typing import TYPE_CHECKING, Any

from ibimport.domain.request import nfc

if TYPE_CHECKING:
    from ibimport.domain.request import ImageRequest

__all__ = ["NAMESPACE", "canonical_request", "client_token", "reimport_token", "task_client_token"]

#: ibimport's UUIDv5 namespace, uuid5(NAMESPACE_URL, "https://github.com/ibimport/ibimport#clientToken").
#: FROZEN FOREVER: changing it changes every token, so a re-run after an upgrade would
#: import every image a second time instead of being answered with the first import.
NAMESPACE = uuid.UUID("502b806a-4c93-5804-9da4-c0f0b20e41b0")

_NAMESPACE_BYTES = NAMESPACE.bytes

# Separates the salt from the canonical request (canonical JSON escapes NUL, so never holds one).
_SALT_SEPARATOR = b"\x00"


def canonical_request(task: ImageRequest, *, params: dict[str, Any] | None = None) -> bytes:
    """The request members that are sent, minus clientToken, in one canonical byte form.

    Absent fields are dropped, tags appear only when non-empty, logGroupName sits inside
    loggingConfiguration as sent; strings are NFC; keys sorted; compact UTF-8 JSON.
    Golden tests pin this form: changing it changes every token. ``params``: the task's
    ``api_params()`` when the caller already built them (they are not modified).
    """
    if params is None:
        params = task.api_params()
    if task.has_disks:
        # A row with disks has no task ID before its task starts: its token names the
        # disks and ImportImage's options instead (rows with vmImportTaskId are unchanged).
        params = {k: v for k, v in params.items() if k != "vmImportTaskId"}
        params["importImage"] = task.import_image_params()
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():  # ASCII text is already NFC: only other text is normalised
        text = json.dumps(nfc(params), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def reimport_token(token: str, failed_image_arn: str) -> str:
    """The clientToken of a row re-imported over its FAILED image (``--retry-failed-images``).

    The row's own token would return the failed image (the service remembers it), so the
    new import needs another one: derived from the token and the failed build's ARN, so a
    re-run after a crash sends the same one, and a second failure a third.
    """
    name = token.encode("utf-8") + _SALT_SEPARATOR + failed_image_arn.encode("utf-8")
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def client_token(
    task: ImageRequest, *, salt: str = "", params: dict[str, Any] | None = None
) -> str:
    """The task's own clientToken when the manifest gives one, else its UUIDv5 (36 chars).

    Equal to ``str(uuid.uuid5(NAMESPACE, name))`` with name the canonical request,
    prefixed by ``salt`` and a NUL when a salt is given; computed here from bytes so the
    result cannot depend on how a Python version's ``uuid5`` encodes its name.
    """
    if task.clientToken is not None:
        return task.clientToken
    return _uuid5(canonical_request(task, params=params), salt)


#: Prefixed to the name of an ImportImage ClientToken: never equal to an ImportVmImage one.
_TASK_PREFIX = b"ImportImage\x00"


def task_client_token(task: ImageRequest, *, salt: str = "", generation: int = 0) -> str:
    """The ClientToken of the EC2 import task (ImportImage) of a row with disks (36 chars).

    A UUIDv5 like ``client_token``'s, over another name: the row's image identity, the
    ImportImage request and the task's ``generation`` (0, then one more for each task of
    the row that ended ``deleted``: a failed or cancelled import is started again under a
    new token, since EC2 answers a known token with its original task). The same row on
    any machine gets the same token, so a retry or a second machine starts no second task.
    """
    params: dict[str, Any] = {"image": task.image_tag(), "importImage": task.import_image_params()}
    if generation:
        params["generation"] = generation
    text = json.dumps(nfc(params), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _uuid5(_TASK_PREFIX + text.encode("utf-8"), salt)


def _uuid5(name: bytes, salt: str) -> str:
    if salt:
        name = unicodedata.normalize("NFC", salt).encode("utf-8") + _SALT_SEPARATOR + name
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
