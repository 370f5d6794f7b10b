"""A wave of EC2 import tasks: how full ibimport keeps the slots, against what a user would
do instead (issue 19's performance figures).

2,000 VMs over 4 partitions (Regions) of an emulator with 20 import task slots each and
task durations drawn log-normally around a mean (the emulator's ``--task-duration-s``:
45 minutes compressed to seconds). Three ways to run the wave, each against a fresh
emulator (a child pinned to core 0; the client on core 1), the same disks and so the
same durations:

- ``ibimport run`` (the whole pipeline: tasks, ImportVmImage as each task starts, each
  row settled when its task ends);
- *all at once*: every ImportImage of a Region fired at once; the quota refuses all but
  the free slots; the refused rows are fired again once every started task ended (a
  thread-per-VM script re-run for its failures);
- *fixed batches*: N = the slots at a time, the next batch once the whole batch ended.

Figures per Region, from each task's start (when its ImportImage was answered: the
journal's for ibimport, the baseline's own clock) and its duration, which the emulator
draws from its seed and the task's disks (its own rule, ``lifecycle.draw_fate``; the
emulator's ``--state`` would record it too, but makes each start wait for a save): the
slots' busy share while rows remain to be started (from
the first start to the last), the task makespan (first start to last end) against the
ideal, max(longest task, sum of durations / slots), and for ibimport the status calls
per task per round (its report's ``importTasks``). The baselines poll at ibimport's
shortest interval.

    .venv/bin/python benchmarks/wave.py                       # 2,000 VMs, ~5 min
    .venv/bin/python benchmarks/wave.py --vms 400 --mean 1.5  # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import heapq
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "manifests"))

from demo_wave import disk_urls, place, plan  # noqa: E402

from throughput import ENV, IBIMPORT  # noqa: E402

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
FORMATS = {"ova": "OVA", "vmdk": "VMDK", "vhdx": "VHDX", "vhd": "VHD"}
QUOTA_CODES = frozenset({"ResourceLimitExceeded", "ResourceCountLimitExceeded"})
SEED = 19


def pin(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------- the three ways


def run_ibimport(url: str, manifest: Path, *, poll_s: float) -> dict[str, Any]:
    command = [
        *pin("1"), IBIMPORT, "run", str(manifest), "--endpoint-url", url,
        "--region", REGIONS[0], "--progress", "off", "--poll-interval", f"{poll_s}s",
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, **ENV}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ibimport run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(manifest.with_suffix(".report.json").read_text())
    return {t["region"]: t for t in report["importTasks"]}


def import_params(row: dict[str, str], index: int) -> dict[str, Any]:
    disks = [{"Url": u, "Format": FORMATS[u.rsplit(".", 1)[-1]]} for u in disk_urls(row)]
    return {"DiskContainers": disks, "ClientToken": f"bench-{index:06d}"}


async def run_baseline(
    url: str, rows: Sequence[dict[str, str]], *, batch: int | None, poll_s: float
) -> dict[str, Any]:
    """``batch`` None: all at once, refused rows again once the started ones ended; else
    ``batch`` at a time, the next once the whole batch ended."""
    import aioboto3
    from botocore.config import Config

    session = aioboto3.Session()
    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=64)
    figures: dict[str, dict[str, int]] = {}
    figures_starts: dict[str, list[list[float]]] = {}

    async def region_wave(region: str, mine: list[tuple[int, dict[str, str]]]) -> None:
        counts = figures.setdefault(region, {"quotaErrors": 0, "starts": 0, "statusCalls": 0})
        starts: list[list[float]] = figures_starts.setdefault(region, [])
        async with session.client(
            "ec2", region_name=region, endpoint_url=url, config=config
        ) as ec2:

            async def start(index: int, row: dict[str, str]) -> str | None:
                try:
                    answer = await ec2.import_image(**import_params(row, index))
                except ec2.exceptions.ClientError as error:
                    if error.response["Error"]["Code"] in QUOTA_CODES:
                        counts["quotaErrors"] += 1
                        return None
                    raise
                counts["starts"] += 1
                starts.append([time.time(), index])
                return str(answer["ImportTaskId"])

            remaining = list(mine)
            while remaining:
                lot = remaining if batch is None else remaining[:batch]
                ids = await asyncio.gather(*(start(i, r) for i, r in lot))
                started = [task for task in ids if task is not None]
                refused = [item for item, task in zip(lot, ids, strict=True) if task is None]
                remaining = refused + ([] if batch is None else remaining[batch:])
                while started:
                    await asyncio.sleep(poll_s)
                    counts["statusCalls"] += 1
                    page = await ec2.describe_import_image_tasks(ImportTaskIds=started)
                    active = {
                        t["ImportTaskId"]
                        for t in page["ImportImageTasks"]
                        if t.get("Status") in ("active", "deleting")
                    }
                    started = [task for task in started if task in active]

    by_region: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for index, row in enumerate(rows):
        by_region.setdefault(row["region"], []).append((index, row))
    await asyncio.gather(*(region_wave(region, mine) for region, mine in by_region.items()))
    return {"figures": figures, "starts": figures_starts}


def baseline_child(
    url: str, rows_path: Path, *, batch: int | None, poll_s: float
) -> dict[str, Any]:
    """A baseline in a child pinned to core 1, as ibimport is."""
    command = [
        *pin("1"), sys.executable, __file__, "--baseline-of", str(rows_path),
        "--endpoint-url", url, "--poll", str(poll_s),
        *(["--batch", str(batch)] if batch is not None else []),
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, **ENV}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the baseline failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --------------------------------------------------------------------- the emulator's view


def duration_of(row: dict[str, str], *, mean_s: float) -> float:
    """The task's duration as the emulator draws it: from its seed and the row's disks."""
    from ibimport.emulator.ec2.lifecycle import draw_fate

    return draw_fate(str(SEED), tuple(disk_urls(row)), mean_s=mean_s, failures={}).duration_s


def timelines(
    rows: Sequence[dict[str, str]], starts: dict[int, float], *, mean_s: float
) -> dict[str, list[tuple[float, float]]]:
    """Each Region's tasks as (start, end), ``starts`` by row index."""
    found: dict[str, list[tuple[float, float]]] = {}
    for index, start in starts.items():
        row = rows[index]
        found.setdefault(row["region"], []).append((start, start + duration_of(row, mean_s=mean_s)))
    return found


def journal_starts(journal: Path, rows: Sequence[dict[str, str]]) -> dict[int, float]:
    """When each row's task was started, by row index, from ibimport's journal."""
    from ibimport.journal import SqliteJournal

    index = {row["name"]: i for i, row in enumerate(rows)}
    store = SqliteJournal.open_readonly(journal)
    try:
        records = store.task_records()
    finally:
        store.close()
    return {index[name]: float(r.started_at or 0.0) for (name, _), r in records.items()}


def greedy_makespan(durations: Sequence[float], slots: int) -> float:
    """The makespan of starting the tasks in this order, each the instant a slot frees,
    with no overhead at all: the best a scheduler can do that does not know durations."""
    free = [0.0] * slots
    for duration in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
    return max(free)


def slot_figures(tasks: list[tuple[float, float]], slots: int) -> dict[str, float]:
    """Busy share while rows remain to start; makespan against the ideal (``greedyS``, a
    zero-overhead list schedule in manifest order, is filled in by ``measure``)."""
    first = min(s for s, _ in tasks)
    last_start = max(s for s, _ in tasks)
    window = last_start - first
    busy = sum(max(0.0, min(e, last_start) - s) for s, e in tasks)
    durations = [e - s for s, e in tasks]
    ideal = max(max(durations), sum(durations) / slots)
    makespan = max(e for _, e in tasks) - first
    return {
        "busyShare": busy / (slots * window) if window > 0 else 1.0,
        "makespanS": makespan,
        "idealS": ideal,
        "overIdeal": makespan / ideal - 1.0,
        "tasks": len(tasks),
    }


def measure(
    label: str,
    rows: list[dict[str, str]],
    *,
    work: Path,
    slots: int,
    mean_s: float,
    poll_s: float,
) -> dict[str, Any]:
    from ibimport.emulator import EmulatorConfig, EmulatorProcess

    config = EmulatorConfig(task_slots=slots, task_duration_s=mean_s, seed=SEED, latency_ms=5.0)
    with EmulatorProcess(config, cpus="0") as emulator:
        place(emulator.url, rows, REGIONS)
        started = time.perf_counter()
        if label == "ibimport":
            manifest = work / "wave.csv"
            write_manifest(manifest, rows)
            client = run_ibimport(emulator.url, manifest, poll_s=poll_s)
            starts = journal_starts(work / "wave.journal", rows)
        else:
            rows_path = work / "rows.json"
            rows_path.write_text(json.dumps(rows))
            batch = None if label == "all at once" else slots
            answer = baseline_child(emulator.url, rows_path, batch=batch, poll_s=poll_s)
            client = answer["figures"]
            starts = {int(i): t for region in answer["starts"].values() for t, i in region}
        wall = time.perf_counter() - started
        stats = emulator.stats()
    regions = {
        region: {**slot_figures(tasks, slots), **client.get(region, {})}
        for region, tasks in sorted(timelines(rows, starts, mean_s=mean_s).items())
    }
    for region, figures in regions.items():
        order = [duration_of(row, mean_s=mean_s) for row in rows if row["region"] == region]
        figures["greedyS"] = greedy_makespan(order, slots)
    refusals = sum(r["importTasks"]["quotaRefusals"] for r in stats["regions"].values())
    return {"label": label, "wall_s": wall, "regions": regions, "quotaRefusals": refusals,
            "duplicates": stats["importTasks"]["duplicates"]}  # fmt: skip


def print_table(results: list[dict[str, Any]], *, poll_s: float) -> None:
    print(
        "| way | busy share while rows remain (worst Region) | makespan over the ideal "
        "(worst Region) | over a zero-overhead list schedule (worst Region) | quota errors "
        "| status calls per task per round | wall time |"
    )
    print("|---|---|---|---|---|---|---|")
    for result in results:
        regions = result["regions"].values()
        busy = min(r["busyShare"] for r in regions)
        over = max(r["overIdeal"] for r in regions)
        over_greedy = max(r["makespanS"] / r["greedyS"] - 1 for r in regions)
        per_task = [r["callsPerTaskPerRound"] for r in regions if r.get("callsPerTaskPerRound")]
        calls = f"{statistics.mean(per_task):.3f}" if per_task else "1 call per lot per round"
        print(
            f"| {result['label']} | {busy:.1%} | +{over:.1%} | +{over_greedy:.1%} "
            f"| {result['quotaRefusals']:,} | {calls} | {result['wall_s']:.0f} s |"
        )
    print()
    for result in results:
        print(f"{result['label']}:")
        for region, r in result["regions"].items():
            allowed = 1.05 * r["idealS"] + 2 * poll_s
            rounds = (
                f", {r['statusRounds']} rounds, {r['statusCalls']} status calls"
                if "statusRounds" in r
                else ""
            )
            print(
                f"  {region}: {r['tasks']} tasks, busy {r['busyShare']:.2%}, makespan "
                f"{r['makespanS']:.1f} s, ideal {r['idealS']:.1f} s (+{r['overIdeal']:.1%}; "
                f"5% + two rounds allows {allowed:.1f} s), zero-overhead list schedule "
                f"{r['greedyS']:.1f} s (+{r['makespanS'] / r['greedyS'] - 1:.1%}){rounds}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--mean", type=float, default=2.0, help="mean task seconds")
    parser.add_argument("--poll", type=float, default=0.05, help="shortest polling interval")
    parser.add_argument("--only", default="ibimport,all at once,fixed batches")
    parser.add_argument("--baseline-of", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint-url", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(ENV)  # throwaway credentials: placing the disks signs its calls too
    if args.baseline_of is not None:  # the child that runs a baseline
        rows = json.loads(args.baseline_of.read_text())
        figures = asyncio.run(
            run_baseline(args.endpoint_url, rows, batch=args.batch, poll_s=args.poll)
        )
        print(json.dumps(figures))
        return
    rows = plan(args.vms, REGIONS, SEED)
    print(f"{args.vms} VMs over {len(REGIONS)} Regions, {args.slots} slots each, tasks of "
          f"{args.mean:g} s on average (log-normal, sigma 0.5), polling from {args.poll:g} s; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}\n")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="ibimport-wave-") as tmp:
        for label in [w.strip() for w in args.only.split(",")]:
            work = Path(tmp) / label.replace(" ", "-")
            work.mkdir()
            results.append(
                measure(
                    label, rows, work=work, slots=args.slots, mean_s=args.mean, poll_s=args.poll
                )
            )
            print(f"{label}: {results[-1]['wall_s']:.0f} s", file=sys.stderr, flush=True)
    print_table(results, poll_s=args.poll)


if __name__ == "__main__":
    main()
