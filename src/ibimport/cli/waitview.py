"""What a person sees of a wait: items by state, the next poll and the time left.

The engine tells each polling round (``WaitRound``) of each partition's wait; this keeps
the latest round of each, stamped with the display's own clock when it came, so the next
poll and the time left count down between rounds (which may be a minute apart) and the
partitions' waits read as one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from rich.text import Text

from ibimport import ImageStatus, TaskState, TaskStatus, Waiting, WaitRound

__all__ = ["WaitSummary", "WaitView", "clock_text"]

#: How states are listed: the good end first, then the ones under way (in the order of the
#: current Image Builder model's ImageStatus enum, botocore 1.44.8), then the bad ends.
_ORDER: Final = (
    ImageStatus.AVAILABLE.value,
    TaskState.READY.value,
    TaskStatus.COMPLETED.value,
    TaskStatus.ACTIVE.value,
    TaskStatus.DELETING.value,
    "PENDING",
    "CREATING",
    "BUILDING",
    "TESTING",
    "DISTRIBUTING",
    "INTEGRATING",
    TaskState.PENDING.value,
    ImageStatus.FAILED.value,
    ImageStatus.CANCELLED.value,
    ImageStatus.DELETED.value,
    ImageStatus.TIMED_OUT.value,
    TaskState.FAILED.value,
    TaskState.UNKNOWN.value,
    TaskStatus.DELETED.value,
    TaskStatus.CANCELLED.value,
)
_GOOD: Final = frozenset(
    {ImageStatus.AVAILABLE.value, TaskState.READY.value, TaskStatus.COMPLETED.value}
)
_BAD: Final = frozenset(
    {
        ImageStatus.FAILED.value,
        ImageStatus.CANCELLED.value,
        ImageStatus.DELETED.value,
        ImageStatus.TIMED_OUT.value,
        TaskState.FAILED.value,
        TaskState.UNKNOWN.value,
        TaskStatus.DELETED.value,
        TaskStatus.CANCELLED.value,
    }
)
_NAMES: Final = {
    Waiting.IMAGES: "images",
    Waiting.TASKS: "import tasks",
    Waiting.WAVE: "the wave's import tasks",
}


def clock_text(seconds: float) -> str:
    """``1:02:03``: a duration as a clock shows it."""
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _order(state: str) -> tuple[int, str]:
    return (_ORDER.index(state), "") if state in _ORDER else (len(_ORDER), state)


@dataclass(frozen=True, slots=True)
class WaitSummary:
    """Every partition's wait for one kind of item, as of now."""

    waiting_for: Waiting
    states: list[tuple[str, int]]  # in ``_ORDER``
    outstanding: int
    #: Seconds to the soonest next poll (0: a round is under way); None: no more rounds.
    next_poll_s: float | None
    #: Seconds until the last wait still going times out; None: no timeout.
    time_left_s: float | None
    over: bool
    #: A partition's wait ended at its timeout with items outstanding.
    timed_out: bool = False
    #: A wave's tasks: one line per partition (slots in use, the slowest task, the ETA).
    details: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return _NAMES[self.waiting_for]

    def states_text(self) -> str:
        return ", ".join(f"{n} {state}" for state, n in self.states)

    def timing_text(self) -> str:
        """``38 outstanding, next poll in 7s, 0:58:41 left`` (or why there is no more)."""
        if self.over:
            return "out of time" if self.timed_out else "done"
        parts = [f"{self.outstanding} outstanding"]
        if self.next_poll_s is not None:
            parts.append(
                "polling now"
                if self.next_poll_s <= 0
                else f"next poll in {math.ceil(self.next_poll_s)}s"
            )
        if self.time_left_s is not None:
            parts.append(f"{clock_text(self.time_left_s)} left")
        return ", ".join(parts)

    def line(self) -> str:
        """The plain heartbeat: ``waiting for images: 12 AVAILABLE, 38 CREATING; ...``,
        then a wave's line per partition."""
        states = f"{self.states_text()}; " if self.states else ""
        head = f"waiting for {self.name}: {states}{self.timing_text()}"
        return "\n".join([head, *(f"  {detail}" for detail in self.details)])

    def rows(self) -> list[Text]:
        """Two lines for the terminal: the states, in colour, then the timing."""
        states = Text(f"{self.name}: ", style="bold")
        for i, (state, n) in enumerate(self.states):
            style = "green" if state in _GOOD else "red" if state in _BAD else "cyan"
            states.append(("" if i == 0 else ", ") + f"{n} ")
            states.append(state, style=style)
        if not self.states:
            states.append("not asked yet", style="dim")
        timing = Text("  " + self.timing_text(), style="dim" if self.over else "")
        details = [Text("  " + detail) for detail in self.details]
        for text in (states, timing, *details):
            text.no_wrap = True
            text.overflow = "ellipsis"
        return [states, timing, *details]


@dataclass(slots=True)
class _Heard:
    figures: WaitRound
    at: float  # the display's clock when the round was told


class WaitView:
    """The latest round of each wait (by what it follows and its partition)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heard: dict[tuple[Waiting, str], _Heard] = {}

    def add(self, figures: WaitRound) -> None:
        self._heard[figures.waiting_for, figures.partition] = _Heard(figures, self._clock())

    def kinds(self) -> list[Waiting]:
        """What is waited for, in the order first told (tasks before images in a run)."""
        return list(dict.fromkeys(kind for kind, _ in self._heard))

    def summary(self, kind: Waiting, now: float | None = None) -> WaitSummary:
        """Every partition's wait for ``kind`` as one, counted down to ``now``."""
        now = self._clock() if now is None else now
        heard = [h for (k, _), h in self._heard.items() if k is kind]
        states: Counter[str] = Counter()
        for h in heard:
            states.update(h.figures.states)
        going = [h for h in heard if not h.figures.over]
        polls = [
            max(h.figures.next_poll_s - (now - h.at), 0.0)
            for h in going
            if h.figures.next_poll_s is not None
        ]
        lefts = [
            max(h.figures.time_left_s - (now - h.at), 0.0)
            for h in going
            if h.figures.time_left_s is not None
        ]
        return WaitSummary(
            waiting_for=kind,
            states=sorted(((s, n) for s, n in states.items() if n), key=lambda sn: _order(sn[0])),
            outstanding=sum(h.figures.outstanding for h in heard),
            next_poll_s=min(polls) if polls else None,
            time_left_s=max(lefts) if lefts else None,
            over=not going,
            timed_out=any(
                h.figures.over and h.figures.time_left_s is not None and h.figures.time_left_s <= 0
                for h in heard
            ),
            details=tuple(_slots_line(h, now) for h in heard) if kind is Waiting.WAVE else (),
        )


def _slots_line(heard: _Heard, now: float) -> str:
    """``111111111111/eu-west-1: 18/20 slots, slowest vm-0042 1.0.0 at 57% for 0:41:10,
    ETA 1:20:00``: a wave's partition, counted on between rounds."""
    figures, since = heard.figures, now - heard.at
    parts = [f"{figures.in_use or 0}/{figures.quota or '?'} slots"]
    if figures.slowest and figures.slowest_age_s is not None:
        parts.append(f"slowest {figures.slowest} for {clock_text(figures.slowest_age_s + since)}")
    if figures.eta_s is not None:
        parts.append(f"ETA {clock_text(max(figures.eta_s - since, 0.0))}")
    return f"{figures.partition or 'tasks'}: " + ", ".join(parts)
