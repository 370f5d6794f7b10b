"""Batched status reads (issue 12): what following 10,000 imported images, and checking
10,000 rows' EC2 import tasks, cost in calls.

An emulator child process makes each image AVAILABLE ``--available-after-s`` after its
import, so the images stay outstanding for several polling rounds. ``run --wait`` (the
library's ``run_batch`` with ``wait``) follows them; each round's outstanding count and
status calls are printed, against botocore's ImageAvailable waiter, which needs one
GetImage per outstanding image per round. Then ``preflight_tasks`` classifies the same
rows' tasks against an emulator with a ``--task-mix``.

    .venv/bin/python benchmarks/wait_batching.py [--images 10000] [--available-after-s 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import ENV, write_manifest  # noqa: E402


async def _main(args: argparse.Namespace) -> None:
    from ibimport import BatchConfig, ClientSettings, RunSettings, WaitSettings, run_batch
    from ibimport.emulator import EmulatorConfig, EmulatorProcess
    from ibimport.engine.followup import preflight_tasks

    os.environ.update(ENV)
    with tempfile.TemporaryDirectory(prefix="ibimport-wait-") as tmp:
        work = Path(tmp)
        manifest = work / "wave.csv"
        write_manifest(manifest, args.images)
        emulator = EmulatorConfig(available_after_s=args.available_after_s)
        with EmulatorProcess(emulator, cpus="0") as server:
            config = BatchConfig(
                manifest=manifest,
                run=RunSettings(concurrency=64),
                client=ClientSettings(region="us-east-1", endpoint_url=server.url),
                journal_path=work / "wave.journal",
                wait=WaitSettings(interval_s=1.0, timeout_s=600.0),
            )
            started = time.perf_counter()
            result = await run_batch(config)
            total = time.perf_counter() - started
            figures = result.wait
            assert figures is not None
            totals = {k.value: n for k, n in result.stats.totals.items()}
            print(f"imported {totals} in {result.outcome.elapsed_s:.1f} s")
            print(f"images: {dict((k.value, n) for k, n in result.images.items())}")
            print("round  outstanding  calls  calls/50-outstanding  waiter (GetImage each)")
            for i, (outstanding, calls) in enumerate(figures.rounds, start=1):
                ratio = calls / max(1, outstanding / 50)
                print(f"{i:5d}  {outstanding:11d}  {calls:5d}  {ratio:20.2f}  {outstanding:8d}")
            waiter_calls = sum(outstanding for outstanding, _ in figures.rounds)
            print(
                f"wait: {len(figures.rounds)} rounds, {figures.calls} status calls "
                f"({figures.list_calls} ListImageBuildVersions, {figures.get_calls} GetImage) "
                f"in {figures.elapsed_s:.1f} s; a per-image waiter polling at the same rounds: "
                f"{waiter_calls} GetImage; whole run {total:.1f} s"
            )
        mix = "completed=0.9,active=0.05,deleted=0.03,missing=0.02"
        with EmulatorProcess(EmulatorConfig(task_mix=mix, seed=7), cpus="0") as server:
            config = BatchConfig(
                manifest=manifest,
                client=ClientSettings(region="us-east-1", endpoint_url=server.url),
            )
            found = await preflight_tasks(config)
            counts = {k.value: n for k, n in found.counts.items()}
            print(
                f"task check of {len(found.rows)} rows ({mix}): {counts}; "
                f"{found.calls} DescribeImportImageTasks calls, {found.throttled} throttled, "
                f"{found.elapsed_s:.2f} s (one call per row: {len(found.rows)})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--available-after-s", type=float, default=8.0)
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
