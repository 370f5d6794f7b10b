"""The live progress display: a rich bar on a terminal, a plain line in logs, or nothing.

A runner listener whose hooks only bump counters; the display reads them on its own
schedule (rich's refresh thread for the bar, at most one line per interval otherwise), so
a fast run pays nothing per event for being watched. A wait (``run --wait``, ``ibimport
wait``, ``--wait-for-tasks``) is shown under the bar (``waitview``), or as a heartbeat
line per round at most every ``WAIT_LINE_INTERVAL_S``.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from types import TracebackType
from typing import Final, Literal, Self

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ibimport import (
    BaseListener,
    CallEvent,
    CallOutcome,
    RowResult,
    RowStatus,
    Waiting,
    WaitRound,
    reported_as,
)
from ibimport.cli.waitview import WaitView, clock_text

__all__ = ["PROGRESS_MODES", "ProgressListener", "ProgressMode", "slowest_eta"]


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

#: Off a terminal, a wait's heartbeat line comes with a round, at most this often.
WAIT_LINE_INTERVAL_S: Final = 30.0

#: A partition, as ``RowResult`` carries it: (account, Region).
PartitionKey = tuple[str, str]


def _eta(seconds: float | None) -> str:
    return "--:--:--" if seconds is None else clock_text(seconds)


def slowest_eta(partitions: Iterable[tuple[int, float]]) -> float | None:
    """Seconds until the last partition is done, from each one's (rows left, rows/s).

    Partitions go at their own quotas, so the batch ends with its slowest: a fast
    partition's rate says nothing of a slow one's rows. None while a partition with rows
    left has no rate yet (it has not started, or every row of it waits).
    """
    eta = 0.0
    for left, rate in partitions:
        if left <= 0:
            continue
        if rate <= 0:
            return None
        eta = max(eta, left / rate)
    return eta


class ProgressListener(BaseListener):
    """Shows rows done of total, calls/s, ETA, throttled calls and failed rows while a run goes.

    ``mode`` (a plain ``str`` so a CLI option passes straight in; anything else is a
    ``ValueError``): ``"auto"`` draws a bar on an interactive terminal and plain lines elsewhere;
    ``"plain"`` always prints lines (every ``interval_s`` of ``clock`` time, checked as events
    arrive); ``"off"`` shows nothing. ``on_start`` starts the display if the caller did not;
    call ``stop()`` (or leave the ``with`` block) before printing anything else.

    The ETA is the slowest partition's: each one's rows left at its own rate, counting only
    rows this run finished (rows carried over from the journal are done, not progress).
    ``wait_follows`` (``run --wait``): the display stays up after ``on_finish``, its bar
    line saying the import is over, to show the wait; ``imports=False`` (``ibimport wait``):
    there is no import to show, only the wait.
    """

    def __init__(
        self,
        console: Console,
        *,
        mode: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 5.0,
        refresh_per_second: float = 4.0,
        wait_follows: bool = False,
        imports: bool = True,
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
        self.retries = 0  # calls beyond the first of each request
        self.throttled = 0
        self.failed = 0
        #: Rows the run reported not finished (never reached, or cut off by a stop): they
        #: are not done, so the bar stops where the run stopped instead of jumping to the end.
        self.skipped = 0
        self.stopped = False
        #: The first failed or blocked rows, for the summary's next steps.
        self.troubled_rows: list[RowResult] = []
        self._running = False
        self._next_line_at = 0.0
        self._live: Live | None = None
        self._samples: deque[tuple[float, int, int, dict[PartitionKey, int]]] = deque()
        #: Rows of each partition (told by a batch of several), done, and done this run.
        self._partition_rows: dict[PartitionKey, int] | None = None
        self._done_in: Counter[PartitionKey] = Counter()
        self._done_this_run_in: Counter[PartitionKey] = Counter()
        self._wait_follows = wait_follows
        self._imports = imports
        #: The import's wall time once it is over: the bar stops claiming progress.
        self.imported_in: float | None = None
        self.wait = WaitView(clock)
        self._wait_line_at: dict[Waiting, float] = {}

    # -- runner hooks: counters only (plus one clock read in plain mode) ---------------------

    def on_start(self, *, total_rows: int | None) -> None:
        self.total = total_rows
        self.start()

    def on_call(self, event: CallEvent) -> None:
        self.calls += 1
        if event.attempt > 1:  # a row with disks makes two requests, each attempt 1 first
            self.retries += 1
        if event.outcome is CallOutcome.THROTTLED:
            self.throttled += 1
        if self.display == "plain":
            self.tick()

    def on_row_done(self, result: RowResult) -> None:
        if reported_as(result.status) is RowStatus.SKIPPED:  # not finished: not progress
            self.skipped += 1
            if self.display == "plain":
                self.tick()
            return
        self.done += 1
        where = (result.account, result.region)
        self._done_in[where] += 1
        if not result.resumed:
            self.done_this_run += 1
            self._done_this_run_in[where] += 1
        if result.status is RowStatus.FAILED:
            self.failed += 1
        troubled = result.status in (RowStatus.FAILED, RowStatus.BLOCKED)
        if troubled and len(self.troubled_rows) < SHOWN_TROUBLED:
            self.troubled_rows.append(result)
        if self.display == "plain":
            self.tick()

    def on_partitions(self, rows: Mapping[tuple[str, str], int]) -> None:
        if len(rows) > 1:  # with one, the batch's own figures are its
            self._partition_rows = dict(rows)

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None:
        self.stopped = interrupted or self.skipped > 0
        self.imported_in = elapsed_s
        if self.stopped or not self._wait_follows:
            self.stop()
        elif self._running and self.display == "plain":
            self._console.print(
                f"{self._done_text()} rows imported in {clock_text(elapsed_s)}, "
                f"{self.failed} failed; waiting for the images",
                markup=False,
                highlight=False,
            )

    def on_wait_round(self, figures: WaitRound) -> None:
        self.wait.add(figures)
        if not self._running or self.display != "plain":
            return
        kind = figures.waiting_for
        now = self._clock()
        summary = self.wait.summary(kind, now)
        last = self._wait_line_at.get(kind)
        if last is None or now - last >= WAIT_LINE_INTERVAL_S or summary.over:
            self._wait_line_at[kind] = now
            self._console.print(summary.line(), markup=False, highlight=False)

    # -- display lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Begin showing progress. Idempotent; a no-op with mode ``"off"``."""
        if self._running or self.display == "off":
            return
        self._running = True
        now = self._clock()
        self._samples.clear()
        self._samples.append((now, self.done_this_run, self.calls, dict(self._done_this_run_in)))
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
        if not self._running or self.display != "plain" or not self._importing:
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

    @property
    def _importing(self) -> bool:
        return self._imports and self.imported_in is None

    def _rates(self, now: float) -> tuple[float, float | None]:
        """Calls/s over the last ``RATE_WINDOW_S`` and the ETA, from sampled counters."""
        self._samples.append((now, self.done_this_run, self.calls, dict(self._done_this_run_in)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        then, rows_then, calls_then, each_then = self._samples[0]
        span = now - then
        if span <= 0:
            return 0.0, self._eta_s([])
        if self._partition_rows is None:
            rows_per_s = (self.done_this_run - rows_then) / span
            left = [(self.total - self.done, rows_per_s)] if self.total is not None else []
        else:
            left = [
                (rows - self._done_in[p], (self._done_this_run_in[p] - each_then.get(p, 0)) / span)
                for p, rows in self._partition_rows.items()
            ]
        return (self.calls - calls_then) / span, self._eta_s(left)

    def _eta_s(self, left: list[tuple[int, float]]) -> float | None:
        if self.total is None:
            return None
        if self.done >= self.total:
            return 0.0
        if self._tasks_outstanding():  # their rows go when EC2 is done, not at any rate
            return None
        return slowest_eta(left) if left else None

    def _tasks_outstanding(self) -> bool:
        if Waiting.TASKS not in self.wait.kinds():
            return False
        tasks = self.wait.summary(Waiting.TASKS)
        return not tasks.over and tasks.outstanding > 0

    def _eta_text(self, eta_s: float | None) -> str:
        if self.stopped:
            return "stopped"
        if self.imported_in is not None:
            waiting = ", waiting for the images" if self._wait_follows else ""
            return f"imported in {clock_text(self.imported_in)}{waiting}"
        return f"ETA {_eta(eta_s)}"

    def _done_text(self) -> str:
        return f"{self.done}/{self.total}" if self.total is not None else str(self.done)

    def status_line(self, now: float | None = None) -> str:
        """The plain progress line, e.g. ``1234/5000 rows, 97.3 calls/s, 3 retries, ...``."""
        calls_per_s, eta_s = self._rates(self._clock() if now is None else now)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"{self._done_text()} rows, {calls_per_s:.1f} calls/s, {self.retries} retries, "
            f"{self.throttled} throttled, {self.failed} failed{skipped}, "
            f"{self._eta_text(eta_s)}"
        )

    def _bar_row(self, width: int = 120) -> Table:
        """One line of ``width`` columns at most: the bar shrinks (to nothing) before the
        figures wrap, since a wrapped line is redrawn as two and leaves copies behind."""
        calls_per_s, eta_s = self._rates(self._clock())
        failed = Text(f"{self.failed} failed", style="red" if self.failed else "dim")
        skipped = [Text(f"{self.skipped} skipped", style="yellow")] if self.skipped else []
        calls = [
            Text(f"{self.retries} retries", style="yellow" if self.retries else "dim"),
            Text(f"{self.throttled} throttled", style="yellow" if self.throttled else "dim"),
        ]
        if self.imported_in is None or self.stopped:
            middle = [Text(f"{calls_per_s:.1f} calls/s", style="cyan"), *calls, failed, *skipped]
        else:  # the import is over: its totals, no rate (what drops first comes last)
            middle = [failed, *skipped, *calls]
        figures = [
            Text(self._done_text()),
            Text("rows"),
            *middle,
            Text(self._eta_text(eta_s), style="yellow" if self.stopped else ""),
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
        listener = self._listener
        if listener._imports:
            yield listener._bar_row(options.max_width)
        now = listener._clock()
        for kind in listener.wait.kinds():
            yield from listener.wait.summary(kind, now).rows()
