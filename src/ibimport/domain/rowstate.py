"""The row state machine and the resume rules: the one place that says what a state means.

```
pending ──▶ in_flight ──▶ succeeded
   │            │  ▲──┐──▶ exists    (a build of the image was found: never a second one)
   │            │  retry└─▶ failed   (permanent 4xx, or attempts exhausted)
   ├──▶ invalid (the manifest row broke a rule; never sent)
   ├──▶ blocked (``run --preflight``: its EC2 import task is not ready; checked again
   │             on a re-run, so not done)
   └──▶ cancelled (its EC2 import task, started by ibimport, was cancelled: started
                   again by a re-run)
```

An imported row (``succeeded`` or ``exists``) has a second dimension, its image's final
state (``ImageStatus``), which ``run --wait`` / ``ibimport wait`` learn and the journal
keeps beside the row (``followups``). A ``succeeded`` row whose image FAILED stays
``succeeded`` and done: a re-run does not send it again (its clientToken would only answer
the same failed image); ``wait`` reports it FAILED with the reason and exits 1. To
recover, fix the row (a new vmImportTaskId is a new token) and run with ``--force``: the
forced run reconciles, and a FAILED build does not stand in the way (``reconcile``).

``skipped`` is not a journal state: it is how a report names a row this run did not
finish (never reached, or cut off by a stop). The journal keeps such a row ``pending`` or
``in_flight`` and a re-run sends it with its recorded token. The journal's SQL enforces
``replaces`` (tested against it); the runner, the report and ``status`` ask this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ImageStatus",
    "RerunPlan",
    "RowStatus",
    "ended_done",
    "image_status",
    "in_doubt",
    "needs_lookup",
    "replaces",
    "reported_as",
    "reported_counts",
    "settled",
]


class RowStatus(StrEnum):
    """Where one manifest row stands (see the module's diagram)."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    EXISTS = "exists"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    BLOCKED = "blocked"
    #: Its EC2 import task was cancelled (``ibimport cancel``): a re-run starts it again.
    CANCELLED = "cancelled"

    @property
    def is_done(self) -> bool:
        """A done row is never sent again on resume."""
        return self in _DONE


_DONE = frozenset({RowStatus.SUCCEEDED, RowStatus.EXISTS})
#: A blocked row is neither done nor failed: a re-run checks its task again, then sends it.
_UNFINISHED = frozenset({RowStatus.PENDING, RowStatus.IN_FLIGHT})
#: Sent again by a re-run whatever ``--no-retry-failed`` says: nothing failed.
_RESTARTED = frozenset({RowStatus.CANCELLED})
#: States an outcome report carries no news in, for a row the journal already knows.
_NO_NEWS = frozenset({RowStatus.SKIPPED, RowStatus.PENDING})


def replaces(new: RowStatus, *, old: RowStatus, same_token: bool) -> bool:
    """Whether a reported outcome overwrites the state the journal holds for a row.

    A done row sent with the same token is never downgraded (a late or duplicate report
    must not make a resume send it again); ``skipped`` and ``pending`` say nothing new
    about a row the journal knows.
    """
    if new in _NO_NEWS:
        return False
    return not (old in _DONE and new not in _DONE and same_token)


def settled(state: RowStatus, *, retry_failed: bool) -> bool:
    """Whether a row an earlier run recorded in ``state`` is reported, not sent, on resume."""
    return state in _DONE or (state is RowStatus.FAILED and not retry_failed)


def needs_lookup(
    *,
    first_sent_at: float | None,
    recorded_token: str,
    token: str,
    now: float,
    token_ttl_s: float,
) -> bool:
    """Was this row sent under a token the service may no longer remember?

    Image Builder does not publish how long it remembers a clientToken; past our
    conservative TTL, or when the row's token changed (a forced manifest change), a re-send
    could create a second build, so look for an existing one first. A row never sent
    needs no lookup: its token is new. ``now`` and ``first_sent_at`` are wall time.
    """
    if first_sent_at is None:
        return False
    if recorded_token != token:
        return True
    return now - first_sent_at > token_ttl_s


def in_doubt(*, first_sent_at: float | None, state: RowStatus) -> bool:
    """Was this row sent before without a known outcome (killed mid-call, no answer)?

    Such a row is checked against a complete listing of the partition's builds before it
    is sent again, whatever its token's age: the service does not publish how long it
    remembers a clientToken, so a guess (``--token-ttl``) must not decide. A row found
    landed (``succeeded``, not sent again); one not listed is re-sent with its token
    (within the token's life the service answers with the original image even if its
    build is not listed yet). A cancelled row's outcome is known: its task was cancelled,
    so a build of its earlier call will fail; it is started again under a new task.
    """
    return first_sent_at is not None and not state.is_done and state not in _RESTARTED


def reported_as(state: RowStatus) -> RowStatus:
    """A row the journal still holds unfinished is reported as ``skipped`` by this run.

    ``skipped`` is the one word the results, the report, the summary and ``status`` use
    for a row not finished (never reached, or cut off by a stop); the journal's own states
    (``pending``, ``in_flight``) say which, and ``status --json`` shows them too.
    """
    return RowStatus.SKIPPED if state in _UNFINISHED else state


def reported_counts(counts: Mapping[RowStatus, int]) -> dict[RowStatus, int]:
    """Journal state counts in the report's words (unfinished rows are ``skipped``)."""
    reported: dict[RowStatus, int] = {}
    for state, n in counts.items():
        if n:
            key = reported_as(state)
            reported[key] = reported.get(key, 0) + n
    return reported


@dataclass(frozen=True, slots=True)
class RerunPlan:
    """What running the same command again would do with a journal's rows."""

    skip: int  # done: not sent
    resend: int  # pending or in flight: sent with their recorded tokens
    retry: int  # failed: retried unless --no-retry-failed
    recheck: int = 0  # blocked: their import task checked again (``--preflight``), then sent

    @classmethod
    def from_counts(cls, counts: Mapping[RowStatus, int]) -> RerunPlan:
        return cls(
            skip=sum(counts.get(s, 0) for s in _DONE),
            resend=sum(counts.get(s, 0) for s in _UNFINISHED | _RESTARTED),
            retry=counts.get(RowStatus.FAILED, 0),
            recheck=counts.get(RowStatus.BLOCKED, 0),
        )


class ImageStatus(StrEnum):
    """An imported row's image at the end of a wait: the dimension beside ``RowStatus``.

    The service's own words for its final states (GetImage ``state.status``), and
    ``TIMED_OUT`` for an image still being built when ``--wait-timeout`` ran out (a later
    ``wait`` follows it again). Only AVAILABLE is done for a migration.
    """

    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DELETED = "DELETED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_final(self) -> bool:
        """Whether a later wait leaves this image alone (only a timeout is followed again)."""
        return self is not ImageStatus.TIMED_OUT

    @property
    def reimportable(self) -> bool:
        """Whether ``--retry-failed-images`` imports the row again: its image ended without
        becoming an image (FAILED, CANCELLED) or is gone (DELETED). A TIMED_OUT image may
        still become AVAILABLE: a re-import then would be a second build, so it is
        followed again (``ibimport wait``) instead."""
        return self in (ImageStatus.FAILED, ImageStatus.CANCELLED, ImageStatus.DELETED)


#: The service's ImageStatus values (current model, botocore 1.44.8) that end a wait.
#: DEPRECATED and DISABLED come only after AVAILABLE (lifecycle actions): the import
#: produced an image, so they read as AVAILABLE.
_SERVICE_FINAL = {
    "AVAILABLE": ImageStatus.AVAILABLE,
    "DEPRECATED": ImageStatus.AVAILABLE,
    "DISABLED": ImageStatus.AVAILABLE,
    "FAILED": ImageStatus.FAILED,
    "CANCELLED": ImageStatus.CANCELLED,
    "DELETED": ImageStatus.DELETED,
}


def image_status(service_status: str) -> ImageStatus | None:
    """The final state a service status means, or None while the image is being built."""
    return _SERVICE_FINAL.get(service_status.upper())


def ended_done(status: RowStatus, image_status: str) -> bool:
    """Whether a row ended as a migration wants: imported, and its image not known to be
    anything but AVAILABLE (an image no wait followed counts as done).

    What the wave report counts as not done and ``--failed-manifest`` writes out.
    """
    return status.is_done and image_status in ("", ImageStatus.AVAILABLE)
