"""What a stage that waits tells of each of its polling rounds, for people watching.

Two stages wait for something the service finishes in its own time: ``image_wait``
(``run --wait``, ``ibimport wait``: images to a final state) and ``task_check`` under
``--wait-for-tasks`` (EC2 import tasks to complete). Either can last an hour with nothing
else to show, so each tells its listeners, after every round, where it stands: its items
by state, how many are outstanding, when it asks next and how long it has left. Times are
relative to the moment the round is told, so a display counts down on its own clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["WaitRound", "Waiting"]


class Waiting(StrEnum):
    """What a wait follows."""

    IMAGES = "images"
    TASKS = "tasks"
    #: The EC2 import tasks a wave started for its rows with disks (``taskfollow``).
    WAVE = "wave"


@dataclass(frozen=True, kw_only=True, slots=True)
class WaitRound:
    """One polling round of a wait, as told to ``RunListener.on_wait_round``.

    ``states``: every followed item by its state: an image's final ``ImageStatus``, or the
    service's word for one still being built (``PENDING``, ``CREATING``, ...); a task's
    ``TaskState``. ``next_poll_s``: seconds until the next round, None when there is none
    (nothing outstanding, or out of time). ``time_left_s``: seconds until the timeout,
    None without one. ``rounds``: rounds made so far (0: told as the wait begins).
    ``partition``: which partition's wait (``account/Region``; "" with one).

    A wave's tasks (``Waiting.WAVE``) say more: ``quota`` (the partition's task slots),
    ``in_use`` (tasks running in them), ``slowest`` (the task running longest: its row,
    progress, and ``slowest_age_s`` how long it has run) and ``eta_s`` (seconds until the
    partition's last task should end, from the slots and the durations seen; None before a
    task completed).
    """

    waiting_for: Waiting
    states: Mapping[str, int] = field(default_factory=dict)
    outstanding: int = 0
    next_poll_s: float | None = None
    time_left_s: float | None = None
    rounds: int = 0
    partition: str = ""
    quota: int | None = None
    in_use: int | None = None
    slowest: str = ""
    slowest_age_s: float | None = None
    eta_s: float | None = None

    @property
    def over(self) -> bool:
        """No further round: everything settled, or the wait ran out of time."""
        return self.next_poll_s is None
