"""What the runner tells the outside world while it works.

The runner prints nothing: journal, statistics and the progress bar subscribe to these
events (as s3transfer's subscribers do). Every hook is synchronous and must be cheap;
it runs on the event loop between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from ibimport.domain.results import RowResult
from ibimport.stages.polling import WaitRound


class CallOutcome(StrEnum):
    """How one HTTP attempt ended."""

    OK = "ok"
    THROTTLED = "throttled"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One ImportVmImage attempt: its latency and how it ended (``error_code`` if it failed)."""

    row: int
    attempt: int
    latency_s: float
    outcome: CallOutcome
    error_code: str = ""


class RunListener(Protocol):
    """Subscriber to a run. Implement the hooks you need by subclassing ``BaseListener``."""

    def on_start(self, *, total_rows: int | None) -> None: ...

    def on_call(self, event: CallEvent) -> None: ...

    def on_row_done(self, result: RowResult) -> None: ...

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None: ...

    def on_partitions(self, rows: Mapping[tuple[str, str], int]) -> None:
        """How many rows each partition imports, keyed (account, Region) as ``RowResult``
        carries them: told once after ``on_start`` by a batch, so that what is left can be
        judged partition by partition (each goes at its own quota)."""

    def on_wait_round(self, figures: WaitRound) -> None:
        """A wait's polling round (images after the import, or ``--wait-for-tasks``)."""


class BaseListener:
    """A listener that ignores everything; subclasses override what they need."""

    def on_start(self, *, total_rows: int | None) -> None:
        return None

    def on_call(self, event: CallEvent) -> None:
        return None

    def on_row_done(self, result: RowResult) -> None:
        return None

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None:
        return None

    def on_partitions(self, rows: Mapping[tuple[str, str], int]) -> None:
        return None

    def on_wait_round(self, figures: WaitRound) -> None:
        return None


def round_teller(
    listeners: Sequence[RunListener], *, partition: str
) -> Callable[[WaitRound], None] | None:
    """A wait's rounds told to ``listeners``, named for their partition (None: nobody)."""
    if not listeners:
        return None

    def tell(figures: WaitRound) -> None:
        named = replace(figures, partition=partition)
        for listener in listeners:
            listener.on_wait_round(named)

    return tell
