"""What a run did: statistics from runner events, and the results CSV file.

``RunStats`` listens to the runner and keeps only counters and a fixed-size latency
histogram, so its memory does not grow with the manifest; ``to_report`` makes the report's
model (``report.documents.RunReport``). ``ResultsWriter`` streams rows to disk as they
finish and puts them back in manifest order at the end with bounded memory.
Every file written here is created with mode 0600; nothing here ever sees credentials.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from ibimport._files import atomic_private_file, is_special, open_through, output_error
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.rowstate import reported_as
from ibimport.engine.events import BaseListener, CallEvent, CallOutcome
from ibimport.report.documents import (
    RESULTS_COLUMNS,
    PartialWave,
    RunReport,
    neutralise_cell,
    result_cells,
)

__all__ = [
    "RESULTS_COLUMNS",
    "LatencyHistogram",
    "ResultsWriter",
    "RunReport",
    "RunStats",
    "neutralise_cell",
    "write_report",
]

#: The statuses the report and the results CSV speak of, in the order they are shown.
FINAL_STATUSES: Final = (
    RowStatus.SUCCEEDED,
    RowStatus.EXISTS,
    RowStatus.FAILED,
    RowStatus.BLOCKED,  # run --preflight: the import task is not ready (ibimport.stages.taskgate)
    RowStatus.CANCELLED,  # its EC2 import task was cancelled (ibimport cancel)
    RowStatus.INVALID,
    RowStatus.SKIPPED,
)

#: A results file up to this size is put in row order in memory (tens of MB at most while
#: sorting); a bigger one through an on-disk SQLite index, so memory stays bounded.
_SORT_IN_MEMORY_BYTES: Final = 4 * 1024 * 1024


class LatencyHistogram:
    """Latencies in log-spaced buckets, 1% wide: constant memory, percentiles within ~0.5%.

    Bucket ``i`` holds values in ``[MIN_MS * GROWTH**i, MIN_MS * GROWTH**(i+1))``; smaller
    values fall in the first bucket, larger in the last. The maximum is kept exactly.
    """

    MIN_MS: Final = 0.01
    GROWTH: Final = 1.01
    MAX_MS: Final = 3_600_000.0

    def __init__(self) -> None:
        self._inv_log_growth = 1.0 / math.log(self.GROWTH)
        self._nbuckets = int(math.log(self.MAX_MS / self.MIN_MS) * self._inv_log_growth) + 1
        self._counts = [0] * self._nbuckets
        self.count = 0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        """Record one latency in milliseconds (negative values count as zero)."""
        ms = max(ms, 0.0)
        if ms <= self.MIN_MS:
            index = 0
        else:
            index = min(int(math.log(ms / self.MIN_MS) * self._inv_log_growth), self._nbuckets - 1)
        self._counts[index] += 1
        self.count += 1
        self.min_ms = min(self.min_ms, ms)
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile ``p`` (0-100): the least value with p% of samples at or below.

        Returns the bucket's geometric middle, clamped to the observed min and max; 0.0 if empty.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(p / 100.0 * self.count))
        seen = 0
        for index, bucket in enumerate(self._counts):
            seen += bucket
            if seen >= rank:
                middle: float = self.MIN_MS * self.GROWTH ** (index + 0.5)
                return min(max(middle, self.min_ms), self.max_ms)
        return self.max_ms  # unreachable: the counts sum to self.count


class RunStats(BaseListener):
    """Everything the report and the summary need, collected from runner events.

    Each hook only bumps counters (and a histogram bucket), so it is cheap on the event loop.
    ``retries`` is calls beyond each request's first (a row with disks makes two requests,
    ImportImage and ImportVmImage, each numbering its own attempts); ``errors_by_code``
    counts every call that did not end OK, by AWS error code (or by outcome when the call
    had no code).
    ``elapsed_s`` and ``interrupted`` are set by ``on_finish``.
    """

    def __init__(self) -> None:
        self.totals: Counter[RowStatus] = Counter()
        #: Imported rows by their image's final state, once a wait learnt it (issue 12).
        self.image_totals: Counter[str] = Counter()
        self.calls = 0
        self.rows_attempted = 0
        #: Calls that were a request's first attempt (the rest are retries).
        self.first_calls = 0
        self.throttled = 0
        self.errors_by_code: Counter[str] = Counter()
        self.elapsed_s = 0.0
        self.interrupted = False
        self.resumed = 0
        #: succeeded + exists this run, resumed rows excluded: what throughput is measured on.
        self.imported = 0
        self.total_rows: int | None = None
        self.latency = LatencyHistogram()
        #: Wall time (epoch seconds) the run started, set by whoever runs it.
        self.started_at: float | None = None
        #: Whether a run was watched (False for a report rebuilt from a journal alone).
        self.ran = False
        #: Why the run stopped early, if a fatal error stopped it (set by whoever runs it).
        self.fatal: str | None = None
        #: What the listing of existing builds cost (``ibimport.stages.existing``), if one was made.
        self.existing: dict[str, float] | None = None
        #: Each partition's EC2 import tasks (``TaskStartStage.figures``), where it had any.
        self.tasks: list[dict[str, Any]] = []
        #: Each partition's figures (``partition_figures``), for a batch of more than one.
        self.partitions: list[dict[str, Any]] = []
        #: The process's CPU time over the run's wall time: near 1, one core was the limit.
        self.client_cpu_share: float | None = None
        # Rows with a call seen but no outcome yet; bounded by the concurrency.
        self._open_rows: set[int] = set()

    @property
    def retries(self) -> int:
        """Calls beyond the first one of each request made this run."""
        return max(self.calls - self.first_calls, 0)

    def on_start(self, *, total_rows: int | None) -> None:
        self.total_rows = total_rows
        self.ran = True

    def on_call(self, event: CallEvent) -> None:
        self.calls += 1
        if event.attempt <= 1:
            self.first_calls += 1
        if event.row not in self._open_rows:
            self._open_rows.add(event.row)
            self.rows_attempted += 1
        if event.outcome is CallOutcome.THROTTLED:
            self.throttled += 1
        if event.outcome is not CallOutcome.OK:
            self.errors_by_code[event.error_code or event.outcome.value] += 1
        self.latency.add(event.latency_s * 1000.0)

    def on_row_done(self, result: RowResult) -> None:
        self._open_rows.discard(result.row)
        status = reported_as(result.status)
        self.totals[status] += 1
        if result.image_status:
            self.image_totals[result.image_status] += 1
        if result.resumed:
            self.resumed += 1
        elif status.is_done:
            self.imported += 1

    def on_finish(self, *, elapsed_s: float, interrupted: bool) -> None:
        self.elapsed_s = elapsed_s
        self.interrupted = interrupted

    @property
    def rows(self) -> int:
        """Rows with an outcome, whatever it is (resumed ones included)."""
        return sum(self.totals.values())

    @property
    def throughput_per_s(self) -> float:
        """Rows imported per second of this run (resumed rows cost nothing, so are left out)."""
        return self.imported / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_percentiles(self) -> dict[str, float]:
        """p50, p95, p99 and max call latency in milliseconds, over every call made."""
        return {
            "p50": self.latency.percentile(50),
            "p95": self.latency.percentile(95),
            "p99": self.latency.percentile(99),
            "max": self.latency.max_ms,
        }

    def adopt_batch_figures(self, report: RunReport) -> None:
        """Take a rebuilt report's call figures (summed over its runs) for the summary."""
        batch = report.batch
        self.calls = int(batch.get("calls", 0))
        self.first_calls = self.calls - int(batch.get("retries", 0))
        self.rows_attempted = int(batch.get("rows_sent", self.first_calls))
        self.throttled = int(batch.get("throttled", 0))
        self.elapsed_s = float(batch.get("elapsed_s", 0.0))
        self.errors_by_code = Counter(batch.get("errors_by_code", {}))
        self.interrupted = report.interrupted

    def run_figures(self) -> dict[str, Any]:
        """This run's own figures: one entry of the report's ``runs``, kept in the journal."""
        started = self.started_at
        return {
            "started_at": _local_time(started) if started is not None else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_sent": self.rows_attempted,
            "calls": self.calls,
            "retries": self.retries,
            "throttled": self.throttled,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_percentiles().items()},
            "errors_by_code": dict(self.errors_by_code.most_common()),
            "throughput_per_s": round(self.throughput_per_s, 3),
            "interrupted": self.interrupted,
            "fatal": self.fatal,
        }

    def partition_figures(self) -> dict[str, Any]:
        """One partition's rows, pace, throttling and failures (the stats of its runner)."""
        return {
            "rows": self.rows,
            **{status.value: self.totals[status] for status in FINAL_STATUSES},
            "calls": self.calls,
            "calls_per_s": round(self.calls / self.elapsed_s, 3) if self.elapsed_s else 0.0,
            "throttled": self.throttled,
            "errors_by_code": dict(self.errors_by_code.most_common()),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def to_report(
        self,
        *,
        earlier_runs: Sequence[Mapping[str, Any]] = (),
        partial: PartialWave | None = None,
    ) -> RunReport:
        """The JSON report's model (issue 3, "Output"), plus ``resumed`` and ``interrupted``.

        ``totals`` count the batch's rows as a whole; the top-level call figures are the
        latest run's; ``runs`` lists every run, ``earlier_runs`` (from the journal) then
        this one, and ``batch`` sums their calls over the whole batch.
        """
        runs = [*earlier_runs, *([self.run_figures()] if self.ran else [])]
        # Rebuilt from a journal (no run watched): the latest run's figures, as it kept them.
        latest: Mapping[str, Any] = runs[-1] if runs and not self.ran else {}
        totals: dict[str, int] = {"rows": self.rows}
        totals.update({status.value: self.totals[status] for status in FINAL_STATUSES})
        summed = ("calls", "retries", "throttled", "elapsed_s")
        batch: dict[str, Any] = {"runs": len(runs)}
        batch.update({key: sum(run.get(key, 0) for run in runs) for key in summed})
        batch["elapsed_s"] = round(batch["elapsed_s"], 3)
        errors: Counter[str] = Counter()
        for run in runs:
            errors.update(run.get("errors_by_code", {}))
        batch["errors_by_code"] = dict(errors.most_common())
        batch["interrupted_runs"] = sum(1 for run in runs if run.get("interrupted"))
        latency = {k: round(v, 2) for k, v in self.latency_percentiles().items()}
        cpu = self.client_cpu_share
        return RunReport(
            totals=totals,
            calls=latest.get("calls", self.calls),
            retries=latest.get("retries", self.retries),
            throttled=latest.get("throttled", self.throttled),
            elapsed_s=latest.get("elapsed_s", round(self.elapsed_s, 3)),
            throughput_per_s=latest.get("throughput_per_s", round(self.throughput_per_s, 3)),
            latency_ms=latest.get("latency_ms", latency),
            errors_by_code=latest.get("errors_by_code", dict(self.errors_by_code.most_common())),
            resumed=self.resumed,
            interrupted=latest.get("interrupted", self.interrupted),
            runs=tuple(runs),
            batch=batch,
            existing_images=self.existing,
            import_tasks=tuple(self.tasks),
            partitions=tuple(self.partitions),
            client_cpu_share=round(cpu, 3) if cpu is not None else None,
            image_status=dict(sorted(self.image_totals.items())),
            partial=partial,
        )


def _local_time(epoch_s: float) -> str:
    """An instant as people read it: local time, with its timezone."""
    return datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="seconds")


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """Write the JSON report atomically with mode 0600."""
    with atomic_private_file(path) as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


class ResultsWriter(BaseListener):
    """The per-row results CSV, streamed: rows are appended as they finish, sorted at close.

    Rows go to a private file beside ``path`` (mode 0600, created when the writer is, so an
    unwritable folder fails before any import is sent), renamed into place by ``close()``:
    a results file already there stays whole until the new one replaces it (a kill never
    truncates it; what a killed run left beside it is removed by the next run), and
    ``discard()`` leaves it untouched (a run that could not start). ``close()`` puts the
    rows in manifest row order through an on-disk SQLite index, so memory stays bounded
    however many rows there are; if rows arrived in order it rewrites nothing. A row
    written twice keeps its last result.
    """

    RESULTS_COLUMNS: Final = RESULTS_COLUMNS

    def __init__(self, path: Path) -> None:
        #: Where the results go; a device or FIFO (``/dev/stdout``) gets them once sorted,
        #: from a private spool file (``path``), since it can be neither reread nor replaced.
        self.target = path
        self._spooled = is_special(path)
        # A link is followed once: re-pointed during the run, it does not change the file
        # the rows end in (the link stays, its target is replaced).
        self._final = path.resolve() if path.is_symlink() else path
        if self._spooled:
            fd, spool = tempfile.mkstemp(prefix="ibimport-results-", suffix=".csv")
        else:
            final = self._final
            fd, spool = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        self.path = Path(spool)
        try:
            os.fchmod(fd, 0o600)  # exactly: a umask could have narrowed mkstemp's 0600
            self._file: IO[str] | None = open(  # noqa: SIM115 - closed in close()
                fd, "w", encoding="utf-8", errors="replace", newline=""
            )
        except BaseException:
            os.close(fd)
            os.unlink(spool)
            raise
        self._writer = csv.writer(self._file)
        self._writer.writerow(RESULTS_COLUMNS)
        self._last_row = 0
        self._in_order = True
        self.rows_written = 0

    def on_row_done(self, result: RowResult) -> None:
        self.write(result)

    def write(self, result: RowResult) -> None:
        """Append one finished row (any order)."""
        if self._file is None:
            raise ValueError(f"results file {self.path} is already closed")
        if result.row <= self._last_row:
            self._in_order = False
        self._last_row = max(self._last_row, result.row)
        self._writer.writerow(result_cells(result))
        self.rows_written += 1

    def close(self) -> None:
        """Finish the file in manifest row order and put it in place. Idempotent;
        ``OutputError`` if it cannot."""
        try:
            self._close()
        except OSError as error:
            raise output_error(self.target, error) from None

    def _close(self) -> None:
        if self._file is None:
            return
        handle, self._file = self._file, None
        try:
            handle.flush()
            if self._in_order:
                os.fsync(handle.fileno())
        finally:
            handle.close()
        try:
            if not self._in_order:
                self._rewrite_sorted()
            if self._spooled:
                with open(self.path, "rb") as spool, open_through(self.target) as through:
                    shutil.copyfileobj(spool, through)
            else:
                os.replace(self.path, self._final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def discard(self) -> None:
        """Drop what was written: the results file in place (if any) is left as it was."""
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _rewrite_sorted(self) -> None:
        if os.path.getsize(self.path) <= _SORT_IN_MEMORY_BYTES:
            self._rewrite_sorted_in_memory()
            return
        fd, scratch = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".sort.sqlite"
        )
        os.close(fd)
        try:
            db = sqlite3.connect(scratch)
            try:
                db.execute("PRAGMA journal_mode=OFF")
                db.execute("PRAGMA synchronous=OFF")
                placeholders = ", ".join("?" * len(RESULTS_COLUMNS))
                columns = ", ".join(f"c{i} TEXT" for i in range(1, len(RESULTS_COLUMNS)))
                db.execute(f"CREATE TABLE r (row INTEGER PRIMARY KEY, {columns})")
                with open(self.path, encoding="utf-8", newline="") as spilled:
                    reader = csv.reader(spilled)
                    next(reader)  # header
                    with db:
                        db.executemany(
                            f"INSERT OR REPLACE INTO r VALUES ({placeholders})",
                            ((int(cells[0]), *cells[1:]) for cells in reader),
                        )
                with atomic_private_file(self.path) as out:
                    writer = csv.writer(out)
                    writer.writerow(RESULTS_COLUMNS)
                    for record in db.execute("SELECT * FROM r ORDER BY row"):
                        writer.writerow(record)
            finally:
                db.close()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(scratch)

    def _rewrite_sorted_in_memory(self) -> None:
        """A small file is sorted in memory: half the time of the on-disk index."""
        with open(self.path, encoding="utf-8", newline="") as spilled:
            reader = csv.reader(spilled)
            next(reader)  # header
            by_row = {int(cells[0]): cells for cells in reader}  # a row written twice: last wins
        with atomic_private_file(self.path) as out:
            writer = csv.writer(out)
            writer.writerow(RESULTS_COLUMNS)
            writer.writerows(by_row[row] for row in sorted(by_row))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Close (and sort) even on error: the rows of a crashed run are still worth having.
        self.close()
