"""What every service's backend shares, as moto's ``core`` is: where a call acts and the clock.

Image Builder, EC2 and STS (and the services after them) keep their state per
``Scope``, read time from one injected ``Clock`` so tests move time instead of sleeping,
and persist through ``Companion``'s four members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

__all__ = ["Clock", "Companion", "Scope"]

#: Reads the current wall-clock time in seconds; tests pass a fake one.
Clock = Callable[[], float]


class Scope(NamedTuple):
    """Where a call acts: AWS keeps resources (and quotas) per account and region."""

    account: str
    region: str


class Companion(Protocol):
    """State kept beside the images and saved with them (import tasks, STS sessions)."""

    dirty: bool

    def reset(self) -> None: ...

    def to_state(self) -> Any: ...

    def load_state(self, data: Any) -> None: ...
