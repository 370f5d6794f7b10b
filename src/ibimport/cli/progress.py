"""The live progress display: a rich bar on a terminal, a plain line in logs, or nothing.

A runner listener whose hooks only bump counters; the display reads them on its own
schedule (rich's refresh thread for the bar, at most one line per interval otherwise), so
a fast run pays nothing per event for being watched.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from types import TracebackType
from typing import Final, Literal, Self

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ibimport import BaseListener, CallEvent, CallOutcome, RowResult, RowStatus, reported_as

__all__ = ["PROGRESS_MODES", "ProgressListener", "ProgressMode"]


class ProgressMode(StrEnum):
    """What ``--progress`` accepts; ``--no-progress`` means ``off``."""

    AUTO = "auto"  # a bar on an interactive terminal, plain lines elsewhere
    PLAIN = "plain"
    OFF = "off"


PROGRESS_MODES: Final = tuple(mode.value for mode in ProgressMode)

#: Failed or blocked rows kept to name in the summary.
SHOWN_TROUBLED: Final = 5

#: Rates (and so the ETA) are measured over roughly this many recent seconds.
RATE_WINDOW_S: Final = 30.0


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ProgressListener(BaseListener):
    """Shows rows done of total, calls/s, ETA, throttled calls and failed rows while a run goes.

    ``mode`` (a plain ``str`` so a CLI option passes straight in; anything else is a
    ``ValueError``): ``"auto"`` draws a bar on an interactive terminal and plain lines elsewhere;
    ``"plain"`` always prints lines (every ``interval_s`` of ``clock`` time, checked as events
    arrive); ``"off"`` shows nothing. ``on_start`` starts the display if the caller did not;
    call ``stop()`` (or leave the ``with`` block) before printing anything else.
    """

    def __init__(
        self,
        console: Console,
        *,
        mode: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 5.0,
        refresh_per_second: float = 4.0,
    ) -> None:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {', '.join(PROGRESS_MODES)}: {mode!r}")
        self._console = console
        self._clock = clock
        self._interval_s = interval_s
        self._refresh_per_second = refresh_per_second
        if mode == "auto":
            interactive = console.is_terminal and not console.is_dumb_terminal
            self.display: Literal["bar", "plain", "off"] = "bar" if interactive else "plain"
        else:
            self.display = "plain" if mode == "plain" else "off"
        self.total: int | None = None
        self.done = 0  # rows with an outcome, resumed ones included
        self.done_this_run = 0  # rows finished by calls of this run: what the ETA is based on
        self.calls = 0
        self.retries = 0  # calls beyond the first of each row
        self.throttled = 0
        self.failed = 0
        #: Rows the run reported not finished (never reached, or cut off by a stop): they
        #: are not done, so the bar stops where the run stopped instead of jumping to the end.
        self.skipped = 0
        self.stopped = False
        #: The first failed or blocked rows, for the summary's next steps.
        self.troubled_rows: list[RowResult] = []
        self._called: set[int] = set()  # rows with a call and no outcome yet: bounded
        self._running = False
        self._next_line_at = 0.0
        self._live: Live | None = None
        self._samples: deque[tuple[float, int, int]] = deque()

    # -- runner hooks: counters only (plus one clock read in plain mode) ---------------------

    def on_start(self, *, total_rows: int | None) -> None:
        self.total = total_rows
        self.start()

    def on_call(self, event: CallEvent) -> None:
        self.calls += 1
        if event.row in self._called:
            self.retries += 1
        else:
            self._called.add(event.row)
        if event.outcome is CallOutcome.THROTTLED:
            self.throttled += 1
        if self.display == "plain":
            self.tick()

    def on_row_done(self, result: RowResult) -> None:
        self._called.discard(result.row)
        if reported_as(result.status) is RowStatus.SKIPPED:  # not finished: not progress
            self.skipped += 1
            if self.display == "plain":
                self.tick()
            return
        self.done += 1
        if not result.resumed:
            self.done_this_run += 1
        if result.status is RowStatus.FAILED:
            self.failed += 1
        troubled = result.status in (RowStatus.FAILED, RowStatus.BLOCKED)
        if troubled and len(self.troubled_rows) < SHOWN_TROUBLED:
            self.troubled_rows.append(result)
        if self.display == "plain":
            self.tick()

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None:
        self.stopped = interrupted or self.skipped > 0
        self.stop()

    # -- display lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Begin showing progress. Idempotent; a no-op with mode ``"off"``."""
        if self._running or self.display == "off":
            return
        self._running = True
        now = self._clock()
        self._samples.clear()
        self._samples.append((now, self.done_this_run, self.calls))
        self._next_line_at = now + self._interval_s
        if self.display == "bar":
            self._live = Live(
                _Frame(self),
                console=self._console,
                refresh_per_second=self._refresh_per_second,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    def stop(self) -> None:
        """Stop the display, leaving the bar's final state on screen. Idempotent."""
        if not self._running:
            return
        self._running = False
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def tick(self) -> None:
        """Print the plain progress line if an interval has passed since the last one."""
        if not self._running or self.display != "plain":
            return
        now = self._clock()
        if now < self._next_line_at:
            return
        self._next_line_at = now + self._interval_s
        self._console.print(self.status_line(now), markup=False, highlight=False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- figures ------------------------------------------------------------------------------

    def _rates(self, now: float) -> tuple[float, float]:
        """Rows/s (this run) and calls/s over the last ``RATE_WINDOW_S``, from sampled counters."""
        self._samples.append((now, self.done_this_run, self.calls))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        then, rows_then, calls_then = self._samples[0]
        span = now - then
        if span <= 0:
            return 0.0, 0.0
        return (self.done_this_run - rows_then) / span, (self.calls - calls_then) / span

    def _eta_text(self, rows_per_s: float) -> str:
        return "stopped" if self.stopped else f"ETA {_eta(self._eta_s(rows_per_s))}"

    def _eta_s(self, rows_per_s: float) -> float | None:
        if self.total is None:
            return None
        remaining = max(self.total - self.done, 0)
        if remaining == 0:
            return 0.0
        return remaining / rows_per_s if rows_per_s > 0 else None

    def status_line(self, now: float | None = None) -> str:
        """The plain progress line, e.g. ``1234/5000 rows, 97.3 calls/s, 3 retries, ...``."""
        rows_per_s, calls_per_s = self._rates(self._clock() if now is None else now)
        done = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"{done} rows, {calls_per_s:.1f} calls/s, {self.retries} retries, "
            f"{self.throttled} throttled, {self.failed} failed{skipped}, "
            f"{self._eta_text(rows_per_s)}"
        )

    def _bar_row(self, width: int = 120) -> Table:
        """One line of ``width`` columns at most: the bar shrinks (to nothing) before the
        figures wrap, since a wrapped line is redrawn as two and leaves copies behind."""
        rows_per_s, calls_per_s = self._rates(self._clock())
        figures = [
            Text(f"{self.done}/{self.total}" if self.total is not None else str(self.done)),
            Text("rows"),
            Text(f"{calls_per_s:.1f} calls/s", style="cyan"),
            Text(f"{self.retries} retries", style="yellow" if self.retries else "dim"),
            Text(f"{self.throttled} throttled", style="yellow" if self.throttled else "dim"),
            Text(f"{self.failed} failed", style="red" if self.failed else "dim"),
            *([Text(f"{self.skipped} skipped", style="yellow")] if self.skipped else []),
            Text(self._eta_text(rows_per_s), style="yellow" if self.stopped else ""),
        ]
        used = sum(len(text) + 1 for text in figures)
        while figures and used > width:  # the least telling figures go first
            dropped = figures.pop(-2 if len(figures) > 1 else -1)
            used -= len(dropped) + 1
        bar_width = min(30, width - used - 1)
        grid = Table.grid(padding=(0, 1))
        if bar_width >= 8:
            grid.add_row(
                ProgressBar(total=self.total, completed=self.done, width=bar_width), *figures
            )
        else:
            grid.add_row(*figures)
        return grid


class _Frame:
    """What rich's refresh thread draws: rebuilt from the listener's counters at each refresh."""

    def __init__(self, listener: ProgressListener) -> None:
        self._listener = listener

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._listener._bar_row(options.max_width)
