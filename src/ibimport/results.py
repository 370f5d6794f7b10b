"""Row states and per-row outcomes: the vocabulary shared by runner, journal and report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RowStatus(StrEnum):
    """Where one manifest row stands.

    pending -> in_flight -> succeeded | exists | failed; invalid rows never leave the
    manifest; skipped rows were done by an earlier run (resume) or not reached.
    """

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    EXISTS = "exists"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"

    @property
    def is_done(self) -> bool:
        """A done row is never sent again on resume."""
        return self in (RowStatus.SUCCEEDED, RowStatus.EXISTS)


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
