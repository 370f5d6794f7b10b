"""The wave report of a 100,000-row batch: its size, its time to write, its time to open.

Issue 20's goal: under 5 MB and under 2 s to render in Chromium. The journal is made
through the journal's own API on a virtual clock (``FakeClock``), as a long wave would
leave it: two partitions, about 5 rows/s for hours, two runs (the first stopped), and
per-row outcomes: most imported and AVAILABLE, some failed with several error codes,
blocked on import tasks EC2 deleted (messages with task IDs), never reached, or whose
image FAILED. ``--all-failed`` makes every row fail with its own message (Locust's
60,000-failures case: the classes must stay grouped and the page small).

Figures: the time ``ibimport report --html`` spends on the page (journal read, render,
write; in-process, median of ``--reps``), the file's size, and Chromium's time to load
and paint it (``--screenshot``), minus the same for an empty page (Chromium's start-up),
median of ``--reps`` interleaved pairs.

    .venv/bin/python benchmarks/html_report.py [--rows 100000] [--reps 3] [--all-failed]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from ibimport import RowResult, RowStatus, SqliteJournal, merge_outputs, write_html_report
from ibimport.testing import FakeClock

ACCOUNT = "123456789012"
REGIONS = ("us-east-1", "eu-west-1")
CHUNK = 100  # rows sent together, then the clock moves on (about 5 rows/s)
_FAILURES = (
    ("IdempotentParameterMismatchException", "The client token {token} was used before"),
    ("AccessDeniedException", "User arn:aws:iam::123456789012:user/w{n} is not authorized"),
    ("ServiceQuotaExceededException", "Quota exceeded for images in {region}"),
    ("ServiceException", "Internal error, request {token}"),
)


async def build_journal(path: Path, rows: int, all_failed: bool) -> None:
    """A long wave's journal, row by row through the journal's API, on virtual time."""
    rng = random.Random(20)
    clock = FakeClock(wall_start=1_800_000_000.0)
    journal = SqliteJournal.open(
        path,
        manifest_path=str(path.with_name("wave.csv")),
        manifest_fingerprint="benchmark",
        settings={},
        clock=clock,
    )
    names = [(i + 1, f"vm-{i:06d}", "1.0.0", f"token-{i:06d}") for i in range(rows)]
    journal.record_pending(names)
    stop_at = int(rows * 0.4)
    run_started = clock.wall()
    images: list[tuple[str, str, str, str]] = []
    async with journal.running():
        for start in range(0, rows, CHUNK):
            if start and start == stop_at // CHUNK * CHUNK:  # the first run stops here
                journal.record_run(started_at=run_started, figures=_run(run_started, clock, True))
                clock.advance(1800.0)  # half an hour until someone resumes
                run_started = clock.wall()
            chunk = names[start : start + CHUNK]
            async with anyio.create_task_group() as group:
                for row, name, version, token in chunk:
                    group.start_soon(_mark, journal, row, name, version, token)
            clock.advance(rng.uniform(15.0, 25.0))
            for row, name, version, token in chunk:
                result = _outcome(rng, row, name, version, token, all_failed=all_failed)
                journal.record(result)
                if result.status is RowStatus.SUCCEEDED:
                    failed = rng.random() < 0.02
                    status, why = (
                        ("FAILED", "Image build failed at step 3") if failed else ("AVAILABLE", "")
                    )
                    images.append((name, version, status, why))
            await journal.flush()
    journal.record_run(started_at=run_started, figures=_run(run_started, clock, False))
    journal.record_image_statuses(images)
    journal.close()


async def _mark(journal: SqliteJournal, row: int, name: str, version: str, token: str) -> None:
    await journal.mark_in_flight(
        row=row, name=name, semantic_version=version, client_token=token, attempt=1
    )


def _run(started: float, clock: FakeClock, interrupted: bool) -> dict[str, object]:
    from datetime import datetime

    elapsed = clock.wall() - started
    return {  # the run's figures as RunStats.run_figures words them (calls are not simulated)
        "started_at": datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "calls": 0,
        "retries": 0,
        "throttled": 0,
        "interrupted": interrupted,
        "fatal": None,
    }


def _outcome(
    rng: random.Random, row: int, name: str, version: str, token: str, *, all_failed: bool
) -> RowResult:
    region = REGIONS[0] if row % 5 < 3 else REGIONS[1]
    place = {"account": ACCOUNT, "region": region}
    draw = 0.0 if all_failed else rng.random()
    attempts = 1 + (rng.random() < 0.1)
    if all_failed or draw < 0.03:
        code, message = _FAILURES[row % len(_FAILURES)]
        text = message.format(token=token, n=row, region=region)
        if all_failed:
            text += f" (row {row}: details differ {rng.getrandbits(32):x})"
        return RowResult(row, name, version, RowStatus.FAILED, token, attempts=attempts,
                         error_code=code, error_message=text, **place)  # fmt: skip
    if draw < 0.06:
        task = f"import-ami-{rng.getrandbits(64):016x}"
        message = f"import task {task} failed: ClientError: Unsupported kernel version"
        return RowResult(row, name, version, RowStatus.BLOCKED, token, error_code="TaskFailed",
                         error_message=message, **place)  # fmt: skip
    if draw < 0.08:
        return RowResult(row, name, version, RowStatus.IN_FLIGHT, token, attempts=attempts)
    arn = f"arn:aws:imagebuilder:{region}:{ACCOUNT}:image/{name}/{version}/1"
    return RowResult(row, name, version, RowStatus.SUCCEEDED, token, image_arn=arn,
                     attempts=attempts, **place)  # fmt: skip


def _chromium_s(page: Path, png: Path) -> float:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "chromium is not installed"
    started = time.perf_counter()
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,4000", f"--screenshot={png}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--all-failed", action="store_true")
    parser.add_argument("--keep", type=Path, help="write the page here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        journal = work / "wave.journal"
        started = time.perf_counter()
        anyio.run(build_journal, journal, args.rows, args.all_failed)
        print(f"journal of {args.rows:,} rows built in {time.perf_counter() - started:.1f} s")
        rebuilt = merge_outputs([journal], report_file=False)
        page = work / "wave.html"
        writes = []
        for _ in range(args.reps):
            started = time.perf_counter()
            write_html_report(page, [journal], report=rebuilt.report.to_json())
            writes.append(time.perf_counter() - started)
        size = page.stat().st_size
        blank = work / "blank.html"
        blank.write_text("<!DOCTYPE html><title>blank</title>", encoding="utf-8")
        loads, empties = [], []
        for _ in range(args.reps):
            loads.append(_chromium_s(page, work / "page.png"))
            empties.append(_chromium_s(blank, work / "blank.png"))
        if args.keep:
            shutil.copy(page, args.keep)
        figures = {
            "rows": args.rows,
            "all_failed": args.all_failed,
            "totals": dict(rebuilt.report.totals),
            "html_bytes": size,
            "write_s": round(statistics.median(writes), 3),
            "chromium_page_s": round(statistics.median(loads), 3),
            "chromium_blank_s": round(statistics.median(empties), 3),
            "render_s": round(statistics.median(loads) - statistics.median(empties), 3),
        }
        json.dump(figures, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
