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

from ibimport import ImageStatus, TaskState, Waiting, WaitRound

__all__ = ["WaitSummary", "WaitView", "clock_text"]

#: How states are listed: the good end first, then the ones under way (in the order of the
#: current Image Builder model's ImageStatus enum, botocore 1.44.8), then the bad ends.
_ORDER: Final = (
    ImageStatus.AVAILABLE.value,
    TaskState.READY.value,
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
)
_GOOD: Final = frozenset({ImageStatus.AVAILABLE.value, TaskState.READY.value})
_BAD: Final = frozenset(
    {
        ImageStatus.FAILED.value,
        ImageStatus.CANCELLED.value,
        ImageStatus.DELETED.value,
        ImageStatus.TIMED_OUT.value,
        TaskState.FAILED.value,
        TaskState.UNKNOWN.value,
    }
)
_NAMES: Final = {Waiting.IMAGES: "images", Waiting.TASKS: "import tasks"}


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
        """The plain heartbeat: ``waiting for images: 12 AVAILABLE, 38 CREATING; ...``."""
        states = f"{self.states_text()}; " if self.states else ""
        return f"waiting for {self.name}: {states}{self.timing_text()}"

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
        for text in (states, timing):
            text.no_wrap = True
            text.overflow = "ellipsis"
        return [states, timing]


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
        )
