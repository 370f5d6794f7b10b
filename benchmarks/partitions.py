"""Many partitions in one process: each Region held at its own quota, the sum of them kept.

Issue 13's figures: a 3-Region manifest against an emulator with a different quota per
Region (done when: at least 90% of the sum of the quotas, at most 5% of each Region's calls
throttled), and 20 partitions of 50 calls/s each (at least 90% of the summed 1,000/s while
the client CPU allows, the start-up of 20 clients and credentials without a visible
pause). Rows are spread over the Regions in proportion to their quotas and interleaved,
so every partition has work until the end. The emulator is a child pinned to core 0, the
client another child pinned to core 1; adaptive pace (no --rate) unless --told.

    .venv/bin/python benchmarks/partitions.py [--seconds 20] [--told]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import ENV, IBIMPORT  # noqa: E402

TWENTY = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-south-1",
    "sa-east-1",
    "ca-central-1",
    "me-south-1",
    "af-south-1",
)


def write_manifest(path: Path, quotas: dict[str, float], seconds: float) -> int:
    """Rows per Region in proportion to its quota (``seconds`` of work), interleaved."""
    per_region = {region: int(rate * seconds) for region, rate in quotas.items()}
    order = sorted(
        ((i / n, region) for region, n in per_region.items() for i in range(n)),
    )
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "region"])
        for i, (_, region) in enumerate(order):
            writer.writerow([f"vm-{i:06d}", "1.0.0", "Linux", f"import-ami-{i:017x}", region])
    return len(order)


def run(quotas: dict[str, float], *, seconds: float, told: bool, label: str) -> None:
    from ibimport.emulator import EmulatorConfig, EmulatorProcess

    with tempfile.TemporaryDirectory(prefix="ibimport-partitions-") as tmp:
        work = Path(tmp)
        manifest = work / "wave.csv"
        rows = write_manifest(manifest, quotas, seconds)
        config = EmulatorConfig(
            rate_per_region=tuple(f"{r}={q:g}" for r, q in quotas.items()), burst=5
        )
        with EmulatorProcess(config, cpus="0") as emulator:
            command = [IBIMPORT, "run", str(manifest), "--endpoint-url", emulator.url,
                       "--region", "us-east-1", "--progress", "off"]  # fmt: skip
            if told:
                for region, rate in quotas.items():
                    command += ["--rate", f"{region}={rate:g}"]
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
                command = ["taskset", "-c", "1", *command]
            started = time.perf_counter()
            child = subprocess.Popen(command, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)  # fmt: skip
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - started
            output = child.stdout.read().decode() if child.stdout else ""
            stats = emulator.stats()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the run failed:\n{output[-2000:]}")
        report = json.loads((work / "wave.report.json").read_text())
    total_quota = sum(quotas.values())
    run_s = report["elapsed_s"]
    calls_per_s = report["calls"] / run_s
    throttled = {
        region: counts["throttled"] / max(counts["requests"].get("ImportVmImage", 1), 1)
        for region, counts in stats["regions"].items()
    }
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"| {label} | {len(quotas)} | {total_quota:,.0f}/s | {rows:,} | {run_s:.1f} s "
        f"| {calls_per_s:,.0f}/s = {calls_per_s / total_quota:.1%} of the sum "
        f"| {max(throttled.values()):.2%} | {wall - run_s:.2f} s "
        f"| {1000 * cpu / report['calls']:.2f} ms |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of work per run")
    parser.add_argument("--told", action="store_true", help="pass each Region's --rate")
    args = parser.parse_args()
    print("| run | partitions | summed quota | rows | run time | calls/s | worst Region "
          "throttled | start-up and outputs | client CPU per call |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    pace = "told" if args.told else "adaptive"
    three = {"us-east-1": 40.0, "eu-west-1": 20.0, "ap-southeast-2": 10.0}
    run(three, seconds=args.seconds, told=args.told, label=f"3 Regions, {pace}")
    twenty = dict.fromkeys(TWENTY, 50.0)
    run(twenty, seconds=args.seconds, told=args.told, label=f"20 partitions, {pace}")


if __name__ == "__main__":
    main()
