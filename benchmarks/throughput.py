"""ImportVmImage throughput: ibimport against what a user would otherwise run, in one run.

The emulator runs as a child process pinned to core 0; every client runs as its own
child process pinned to core 1 (``taskset``), one after the other, against the same
generated manifest (each client takes its first N rows; the emulator is reset between
clients). Per client: calls/s over the process's whole wall time (interpreter start,
imports and, for ibimport, validation, journal and report included), client CPU ms per
call and peak RSS, both from ``wait4``'s rusage of the client process and its children.

Clients: the AWS CLI in a loop, boto3 sequential, boto3 with a ThreadPoolExecutor (16
and 64 threads), a bare aioboto3 semaphore loop (one client, botocore retries off, pool
as large as the concurrency: the plain-Python ceiling), and ``ibimport run`` (adaptive
pace as a user would run it; also with ``--rate`` far above what is reachable, which
starts every slot at once: it shows what the adaptive ramp and its evenly spread starts
cost).

Identical runs differ by up to a quarter on a shared machine, so the clients the targets
compare (the bare aioboto3 loop and ``ibimport run``) run ``--reps`` times (default 3),
interleaved, and the table and ratios use their medians; the others run once.

    .venv/bin/python benchmarks/throughput.py                 # full suite (~4 min)
    .venv/bin/python benchmarks/throughput.py --quick         # smaller N, for a smoke test
    .venv/bin/python benchmarks/throughput.py --only ibimport,aioboto3 --latencies 0

Writes ``benchmarks/throughput.json`` (raw figures) and, with --chart,
``benchmarks/throughput.png``; prints a markdown table for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
IBIMPORT = str(Path(PYTHON).with_name("ibimport"))
AWS_CLI = str(ROOT / ".venv-awscli" / "bin" / "aws")
CLIENT_CPU = "1"
SERVER_CPU = "0"

#: Throwaway credentials and a region for every client; no ~/.aws file is read.
ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIBIMPORTBENCH000",
    "AWS_SECRET_ACCESS_KEY": "ibimport-benchmark-throwaway-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/ibimport-bench-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/ibimport-bench-credentials",
    "AWS_PAGER": "",
}


# -- the manifest ---------------------------------------------------------------------------


def write_manifest(path: Path, rows: int) -> None:
    """A valid CSV manifest: unique names, two tag columns, varied OS versions."""
    platforms = [("Linux", "Ubuntu 22.04"), ("Windows", "Microsoft Windows Server 2022")]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["name", "semanticVersion", "platform", "osVersion", "vmImportTaskId",
             "tag:Wave", "tag:Env"]
        )  # fmt: skip
        for i in range(rows):
            plat, os_version = platforms[i % 2]
            writer.writerow(
                [f"bench-vm-{i:07d}", f"1.{i % 7}.{i % 13}", plat, os_version,
                 f"import-ami-{i:017x}", str(1 + i // 1000), "prod" if i % 3 else "dev"]
            )  # fmt: skip


def read_params(path: Path, limit: int) -> list[dict[str, Any]]:
    """What a user's own script would build from the manifest: one kwargs dict per row."""
    params: list[dict[str, Any]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if len(params) >= limit:
                break
            call: dict[str, Any] = {}
            tags: dict[str, str] = {}
            for key, value in record.items():
                if not value:
                    continue
                if key.startswith("tag:"):
                    tags[key[4:]] = value
                else:
                    call[key] = value
            if tags:
                call["tags"] = tags
            params.append(call)
    return params


# -- workers: each runs in its own process ---------------------------------------------------


def _boto3_client(pool: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=max(pool, 10))
    return boto3.client("imagebuilder", endpoint_url=os.environ["BENCH_URL"], config=config)


def worker_boto3(params: list[dict[str, Any]], threads: int) -> tuple[int, int]:
    client = _boto3_client(threads)

    def one(call: dict[str, Any]) -> bool:
        try:
            client.import_vm_image(**call)
        except Exception:
            return False
        return True

    if threads <= 1:
        results = [one(call) for call in params]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(one, params))
    ok = sum(results)
    return ok, len(results) - ok


def worker_aioboto3(params: list[dict[str, Any]], concurrency: int) -> tuple[int, int]:
    import asyncio

    import aioboto3
    from botocore.config import Config

    async def main() -> tuple[int, int]:
        config = Config(
            retries={"total_max_attempts": 1}, max_pool_connections=max(concurrency, 10)
        )
        session = aioboto3.Session()
        async with session.client(
            "imagebuilder", endpoint_url=os.environ["BENCH_URL"], config=config
        ) as client:
            semaphore = asyncio.Semaphore(concurrency)
            failures = 0

            async def one(call: dict[str, Any]) -> None:
                nonlocal failures
                async with semaphore:
                    try:
                        await client.import_vm_image(**call)
                    except Exception:
                        failures += 1

            await asyncio.gather(*(one(call) for call in params))
            return len(params) - failures, failures

    return asyncio.run(main())


def worker_awscli(params: list[dict[str, Any]]) -> tuple[int, int]:
    ok = 0
    for call in params:
        command = [
            AWS_CLI, "imagebuilder", "import-vm-image",
            "--endpoint-url", os.environ["BENCH_URL"],
            "--name", call["name"], "--semantic-version", call["semanticVersion"],
            "--platform", call["platform"], "--os-version", call["osVersion"],
            "--vm-import-task-id", call["vmImportTaskId"],
            "--tags", json.dumps(call.get("tags", {})), "--output", "json",
        ]  # fmt: skip
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok += done.returncode == 0
    return ok, len(params) - ok


def run_worker(args: argparse.Namespace) -> None:
    params = read_params(Path(args.manifest), args.rows)
    if args.worker == "awscli":
        ok, failed = worker_awscli(params)
    elif args.worker == "boto3":
        ok, failed = worker_boto3(params, args.concurrency)
    elif args.worker == "aioboto3":
        ok, failed = worker_aioboto3(params, args.concurrency)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    print(json.dumps({"ok": ok, "failed": failed}))


# -- the driver ------------------------------------------------------------------------------


@dataclass
class Measurement:
    latency_ms: float
    client: str
    concurrency: int
    calls: int
    failed: int
    wall_s: float
    calls_per_s: float
    cpu_ms_per_call: float
    peak_rss_mb: float
    note: str = ""


def _pinned(command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", CLIENT_CPU, *command]
    return command


def _measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str, int]:
    """Run a child; return wall s, CPU s (child and its children), peak RSS MB, stdout, rc."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        child = subprocess.Popen(_pinned(command), stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024.0, text, child.returncode


def measure_worker(
    mode: str,
    *,
    label: str,
    manifest: Path,
    rows: int,
    concurrency: int,
    latency_ms: float,
    env: dict[str, str],
) -> Measurement:
    command = [PYTHON, __file__, "--worker", mode, "--manifest", str(manifest),
               "--rows", str(rows), "--concurrency", str(concurrency)]  # fmt: skip
    wall, cpu, rss, text, rc = _measure(command, env)
    try:
        found = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"{label} failed (exit {rc}):\n{text[-2000:]}") from None
    calls = found["ok"] + found["failed"]
    return Measurement(
        latency_ms=latency_ms, client=label, concurrency=concurrency, calls=calls,
        failed=found["failed"], wall_s=wall, calls_per_s=calls / wall,
        cpu_ms_per_call=1000.0 * cpu / calls, peak_rss_mb=rss,
    )  # fmt: skip


def measure_ibimport(
    *,
    label: str,
    manifest: Path,
    workdir: Path,
    rows: int,
    concurrency: int,
    latency_ms: float,
    env: dict[str, str],
    extra: list[str],
) -> Measurement:
    part = workdir / f"ibimport-{rows}.csv"
    with open(manifest, encoding="utf-8") as src, open(part, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i > rows:
                break
            dst.write(line)
    stem = workdir / f"run-{label.replace(' ', '_')}-{latency_ms:g}"
    for suffix in (".journal", ".journal-wal", ".journal-shm"):
        Path(str(stem) + suffix).unlink(missing_ok=True)
    report = Path(str(stem) + ".report.json")
    command = [IBIMPORT, "run", str(part), "--endpoint-url", env["BENCH_URL"],
               "--region", "us-east-1", "--concurrency", str(concurrency), "--progress", "off",
               "--journal", str(stem) + ".journal", "--report", str(report),
               "--results", str(stem) + ".results.csv", *extra]  # fmt: skip
    wall, cpu, rss, text, rc = _measure(command, env)
    if rc not in (0, 1):
        raise SystemExit(f"{label} failed (exit {rc}):\n{text[-2000:]}")
    figures = json.loads(report.read_text())
    calls = figures["calls"]
    failed = figures["totals"]["failed"] + figures["totals"]["skipped"]
    return Measurement(
        latency_ms=latency_ms, client=label, concurrency=concurrency, calls=calls,
        failed=failed, wall_s=wall, calls_per_s=calls / wall,
        cpu_ms_per_call=1000.0 * cpu / calls, peak_rss_mb=rss,
        note=f"in-run {figures['throughput_per_s']:.0f} rows/s, "
        f"{figures['throttled']} throttled, {figures['retries']} retries",
    )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    key: str
    label: str
    concurrency: int
    rows: int


def plans(latency_ms: float, quick: bool) -> list[Plan]:
    """Who runs at this latency, and on how many rows (sized for a few seconds to ~30 s)."""
    scale = 0.2 if quick else 1.0

    def n(rows: int) -> int:
        return max(10, int(rows * scale))

    if latency_ms == 0:
        return [
            Plan("awscli", "AWS CLI loop", 1, 10),
            Plan("boto3", "boto3 sequential", 1, n(6000)),
            Plan("boto3", "boto3 16 threads", 16, n(6000)),
            Plan("boto3", "boto3 64 threads", 64, n(6000)),
            Plan("aioboto3", "aioboto3 bare loop", 64, n(12000)),
            Plan("ibimport", "ibimport run", 64, n(12000)),
            Plan("ibimport-rate", "ibimport run --rate 5000", 64, n(12000)),
        ]
    return [
        Plan("awscli", "AWS CLI loop", 1, 10),
        Plan("boto3", "boto3 sequential", 1, n(150)),
        Plan("boto3", "boto3 16 threads", 16, n(2000)),
        Plan("boto3", "boto3 64 threads", 64, n(6000)),
        Plan("aioboto3", "aioboto3 bare loop", 256, n(12000)),
        Plan("ibimport", "ibimport run", 256, n(12000)),
        Plan("ibimport-rate", "ibimport run --rate 5000", 256, n(12000)),
    ]


#: The clients the targets' ratios compare: run ``--reps`` times, interleaved, medians kept.
RATIO_CLIENTS = ("aioboto3", "ibimport", "ibimport-rate")


def run_suite(args: argparse.Namespace) -> list[Measurement]:
    """Every client once, then the ratio clients ``--reps`` times each, interleaved.

    Identical runs on a shared 2-core machine differ by up to a quarter, so the clients the
    targets compare alternate (each repetition rotates their order, so none always follows
    another) and each keeps its median.
    """
    from ibimport.emulator import EmulatorConfig, EmulatorProcess

    only = set(args.only.split(",")) if args.only else None
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="ibimport-bench-") as tmp:
        workdir = Path(tmp)
        manifest = workdir / "manifest.csv"
        write_manifest(manifest, args.manifest_rows)
        for latency in args.latencies:
            emulator = EmulatorProcess(EmulatorConfig(latency_ms=latency), cpus=SERVER_CPU)
            emulator.start()
            try:
                env = {**os.environ, **ENV, "BENCH_URL": emulator.url}
                chosen = [
                    plan
                    for plan in plans(latency, args.quick)
                    if only is None or any(o in plan.key for o in only)
                ]
                once = [plan for plan in chosen if plan.key not in RATIO_CLIENTS]
                repeated = [plan for plan in chosen if plan.key in RATIO_CLIENTS]
                for plan in once:
                    found = _measure_plan(plan, emulator, manifest, workdir, latency, env)
                    results.append(found)
                    print(_row(found), flush=True)
                samples: dict[str, list[Measurement]] = {plan.label: [] for plan in repeated}
                for rep in range(args.reps):
                    shift = rep % max(1, len(repeated))
                    for plan in repeated[shift:] + repeated[:shift]:
                        found = _measure_plan(plan, emulator, manifest, workdir, latency, env)
                        samples[plan.label].append(found)
                        print(f"{_row(found)} (run {rep + 1} of {args.reps})", flush=True)
                for plan in repeated:
                    found = _median(samples[plan.label])
                    results.append(found)
                    print(f"{_row(found)} (median)", flush=True)
            finally:
                emulator.stop()
    return results


def _measure_plan(
    plan: Plan,
    emulator: Any,
    manifest: Path,
    workdir: Path,
    latency: float,
    env: dict[str, str],
) -> Measurement:
    emulator.reset()
    if plan.key in ("ibimport", "ibimport-rate"):
        extra = ["--rate", "5000"] if plan.key == "ibimport-rate" else []
        found = measure_ibimport(
            label=plan.label, manifest=manifest, workdir=workdir,
            rows=plan.rows, concurrency=plan.concurrency, latency_ms=latency,
            env=env, extra=extra,
        )  # fmt: skip
    else:
        found = measure_worker(
            plan.key, label=plan.label, manifest=manifest, rows=plan.rows,
            concurrency=plan.concurrency, latency_ms=latency, env=env,
        )  # fmt: skip
    served = emulator.stats()
    found.note = "; ".join(x for x in (found.note, f"emulator saw {_served(served)} imports") if x)
    return found


def _median(runs: list[Measurement]) -> Measurement:
    """One row for several runs: median calls/s and CPU per call, the worst peak RSS."""
    by_speed = sorted(runs, key=lambda m: m.calls_per_s)
    middle = by_speed[len(by_speed) // 2]
    speeds = ", ".join(f"{m.calls_per_s:,.0f}" for m in runs)
    return Measurement(
        latency_ms=middle.latency_ms, client=middle.client, concurrency=middle.concurrency,
        calls=middle.calls, failed=max(m.failed for m in runs),
        wall_s=statistics.median(m.wall_s for m in runs),
        calls_per_s=statistics.median(m.calls_per_s for m in runs),
        cpu_ms_per_call=statistics.median(m.cpu_ms_per_call for m in runs),
        peak_rss_mb=max(m.peak_rss_mb for m in runs),
        note=f"median of {len(runs)} interleaved runs ({speeds} calls/s); {middle.note}",
    )  # fmt: skip


def _served(stats: dict[str, Any]) -> int:
    requests = stats.get("requests", {})
    return int(requests.get("ImportVmImage", 0)) if isinstance(requests, dict) else 0


def _row(m: Measurement) -> str:
    return (
        f"| {m.latency_ms:g} ms | {m.client} | {m.concurrency} | {m.calls:,} | "
        f"{m.calls_per_s:,.1f} | {m.cpu_ms_per_call:.2f} | {m.peak_rss_mb:.0f} |"
    )


def ratios(results: list[Measurement]) -> Iterator[str]:
    """The issue's targets, as ratios of figures from this run."""
    by = {(m.latency_ms, m.client): m for m in results}

    def get(latency: float, client: str) -> Measurement | None:
        return by.get((latency, client))

    bare0 = get(0, "aioboto3 bare loop")
    for label in ("ibimport run", "ibimport run --rate 5000"):
        ib = get(0, label)
        if ib and bare0:
            yield (
                f"- 0 ms, concurrency 64: {label} / bare aioboto3 loop = "
                f"{ib.calls_per_s / bare0.calls_per_s:.2f}x (target >= 1.0x, goal 1.2x)"
            )
    latencies = sorted({m.latency_ms for m in results if m.latency_ms > 0})
    for latency in latencies:
        for label in ("ibimport run", "ibimport run --rate 5000"):
            ib = get(latency, label)
            if ib is None:
                continue
            # The CPU ceiling: one core divided by the same client's CPU per call at 0 ms.
            at0 = get(0, label)
            ceiling = 1000.0 / at0.cpu_ms_per_call if at0 else float("inf")
            ideal = min(ib.concurrency / (latency / 1000.0), ceiling)
            yield (
                f"- {latency:g} ms, concurrency {ib.concurrency}: {label} = "
                f"{ib.calls_per_s / ideal:.2f}x the ideal min({ib.concurrency}/"
                f"{latency / 1000:g} s, CPU ceiling {ceiling:,.0f}/s) = {ideal:,.0f}/s "
                "(target >= 0.9x)"
            )
            seq = get(latency, "boto3 sequential")
            if seq:
                yield (
                    f"- {latency:g} ms: {label} / boto3 sequential = "
                    f"{ib.calls_per_s / seq.calls_per_s:.0f}x (target >= 50x)"
                )


def versions() -> str:
    import aioboto3
    import aiobotocore
    import aiohttp
    import boto3
    import botocore

    aws = subprocess.run([AWS_CLI, "--version"], capture_output=True, text=True)
    return (
        f"Python {platform.python_version()}, botocore {botocore.__version__}, "
        f"boto3 {boto3.__version__}, aiobotocore {aiobotocore.__version__}, "
        f"aioboto3 {aioboto3.__version__}, aiohttp {aiohttp.__version__}, "
        f"{(aws.stdout or aws.stderr).split()[0] if (aws.stdout or aws.stderr) else 'aws-cli ?'}"
    )


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def chart(results: list[Measurement], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = sorted({m.latency_ms for m in results})
    fig, axes = plt.subplots(1, len(latencies), figsize=(6.5 * len(latencies), 4.8), squeeze=False)
    for ax, latency in zip(axes[0], latencies, strict=True):
        rows = [m for m in results if m.latency_ms == latency]
        labels = [f"{m.client}\n(c={m.concurrency})" for m in rows]
        values = [m.calls_per_s for m in rows]
        colors = ["#d95f02" if m.client.startswith("ibimport") else "#7570b3" for m in rows]
        bars = ax.barh(labels, values, color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ImportVmImage calls/s (log scale)")
        ax.set_title(f"emulator latency {latency:g} ms")
        for bar, value in zip(bars, values, strict=True):
            ax.text(value * 1.05, bar.get_y() + bar.get_height() / 2, f"{value:,.1f}",
                    va="center", fontsize=8)  # fmt: skip
        ax.set_xlim(right=max(values) * 4)
    fig.suptitle("ibimport vs. the alternatives: one client core, emulator on its own core")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the rows")
    parser.add_argument("--only", help="comma-separated clients: awscli,boto3,aioboto3,ibimport")
    parser.add_argument(
        "--reps", type=int, default=3, help="runs of each client the targets compare (median)"
    )
    parser.add_argument("--manifest-rows", type=int, default=12000)
    parser.add_argument("--json", type=Path, default=HERE / "throughput.json")
    parser.add_argument("--chart", type=Path, nargs="?", const=HERE / "throughput.png")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    print(f"machine: {machine()}\nversions: {versions()}\ndate: {dt.date.today()}")
    print("| latency | client | concurrency | calls | calls/s | client CPU ms/call | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    results = run_suite(args)
    for line in ratios(results):
        print(line)
    args.json.write_text(json.dumps([asdict(m) for m in results], indent=1) + "\n")
    if args.chart:
        chart(results, args.chart)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
