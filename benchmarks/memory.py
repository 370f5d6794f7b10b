"""Memory at scale: peak RSS of a 100,000-row ``ibimport run``, and the speed and peak RSS
of ``ibimport validate`` over a 1,000,000-row JSON Lines manifest.

Targets (issue 5): the run at most 150 MB; validate at least 50,000 rows/s in at most
200 MB. Both run as child processes (peak RSS from ``wait4``); the run goes against an
emulator child pinned to core 0, the client pinned to core 1, journal and report included.

    .venv/bin/python benchmarks/memory.py [--run-rows 100000] [--validate-rows 1000000]
"""

from __future__ import annotations

import argparse
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

from throughput import ENV, IBIMPORT, write_manifest  # noqa: E402


def _child(command: list[str], env: dict[str, str]) -> tuple[float, float, float, int, str]:
    """Run a child pinned to core 1: wall s, CPU s, peak RSS MB, exit code, output tail."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "1", *command]
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, code, text[-1500:]


def write_jsonl(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            task = {
                "name": f"bench-vm-{i:07d}",
                "semanticVersion": f"1.{i % 7}.{i % 13}",
                "platform": "Linux" if i % 2 else "Windows",
                "osVersion": "Ubuntu 22.04" if i % 2 else "Microsoft Windows Server 2022",
                "vmImportTaskId": f"import-ami-{i:017x}",
                "tags": {"Wave": str(1 + i // 1000), "Env": "prod" if i % 3 else "dev"},
            }
            handle.write(json.dumps(task) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-rows", type=int, default=100_000)
    parser.add_argument("--validate-rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    from ibimport.emulator import EmulatorConfig, EmulatorProcess

    env = {**os.environ, **ENV}
    with tempfile.TemporaryDirectory(prefix="ibimport-mem-") as tmp:
        work = Path(tmp)
        jsonl = work / "big.jsonl"
        write_jsonl(jsonl, args.validate_rows)
        wall, cpu, rss, code, text = _child([IBIMPORT, "validate", str(jsonl)], env)
        if code != 0:
            raise SystemExit(f"validate failed ({code}):\n{text}")
        print(
            f"| validate | {args.validate_rows:,}-row JSONL | {wall:.1f} s | "
            f"{args.validate_rows / wall:,.0f} rows/s | {rss:.0f} MB | {cpu:.1f} s CPU |",
            flush=True,
        )
        jsonl.unlink()

        manifest = work / "big.csv"
        write_manifest(manifest, args.run_rows)
        with EmulatorProcess(EmulatorConfig(), cpus="0") as emulator:
            command = [IBIMPORT, "run", str(manifest), "--endpoint-url", emulator.url,
                       "--region", "us-east-1", "--concurrency", str(args.concurrency),
                       "--progress", "off"]  # fmt: skip
            wall, cpu, rss, code, text = _child(command, env)
        if code != 0:
            raise SystemExit(f"run failed ({code}):\n{text}")
        report = json.loads((work / "big.report.json").read_text())
        print(
            f"| run | {args.run_rows:,}-row CSV, concurrency {args.concurrency} | {wall:.1f} s | "
            f"{report['totals']['succeeded']:,} succeeded, {report['calls'] / wall:,.0f} calls/s "
            f"| {rss:.0f} MB | {1000 * cpu / max(report['calls'], 1):.2f} ms CPU/call |",
            flush=True,
        )


if __name__ == "__main__":
    main()
