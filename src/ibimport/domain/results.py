"""Per-row outcomes: what the runner reports, the journal keeps and the results CSV shows.

``RowStatus`` and its rules live in ``ibimport.domain.rowstate``; it is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibimport.domain.rowstate import RowStatus

__all__ = ["RowResult", "RowStatus"]


@dataclass(slots=True)
class RowResult:
    """The outcome of one manifest row, as the results CSV and the journal record it."""

    row: int
    name: str
    semantic_version: str
    status: RowStatus
    client_token: str = ""
    image_arn: str = ""
    request_id: str = ""
    attempts: int = 0
    error_code: str = ""
    error_message: str = ""
    latency_ms: float | None = None
    #: True when an earlier run already finished this row and this run did not send it.
    resumed: bool = False
    #: The image's final state as a wait learnt it (``rowstate.ImageStatus``), or "".
    image_status: str = ""
    image_status_reason: str = ""
    #: Where the row was imported (its partition): the account and the Region.
    account: str = ""
    region: str = ""
