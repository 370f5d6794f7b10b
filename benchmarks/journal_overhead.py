"""What the journal costs: the same ``ibimport run`` with and without it (``--no-journal``).

The emulator runs as a child process (no faults), once with 0 ms latency, where the
importer is CPU-bound and the journal's cost shows most, and once with 20 ms. For each
latency the two variants alternate (with, without, with, ...) for ``--reps`` repetitions,
each a fresh ``ibimport run`` of the same manifest against a reset emulator, with a fresh
journal. Two figures per run:

- runner rows/s: the report's ``throughput_per_s`` (rows imported per second of the
  runner's own elapsed time);
- end-to-end rows/s: rows / wall-clock seconds of the whole command, so that the journal's
  setup (creating it, journalling every row as pending) counts too. Python's start-up is
  in both variants alike.

Overhead = 1 - median(with journal) / median(without). Target: at most 10%.

    .venv/bin/python benchmarks/journal_overhead.py [--rows 3000] [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ibimport.emulator import EmulatorConfig, EmulatorProcess

IBIMPORT = str(Path(sys.executable).with_name("ibimport"))


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="AKIDIBIMPORTBENCH",
        AWS_SECRET_ACCESS_KEY="ibimport-bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def write_manifest(path: Path, rows: int) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "description"])
        for i in range(rows):
            writer.writerow(
                [f"vm-{i:05d}", "1.0.0", "Linux", f"import-ami-{i:017x}", f"benchmark row {i}"]
            )


def one_run(
    emulator: EmulatorProcess, workdir: Path, *, rows: int, journal: bool, concurrency: int
) -> dict[str, float]:
    emulator.reset()
    for leftover in workdir.glob("wave.journal*"):
        leftover.unlink()
    command = [
        IBIMPORT, "run", str(workdir / "wave.csv"), "--endpoint-url", emulator.url,
        "--region", "us-east-1", "--concurrency", str(concurrency), "--progress", "off",
    ]  # fmt: skip
    if not journal:
        command.append("--no-journal")
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=workdir, env=child_env(), capture_output=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(
            f"ibimport run failed ({finished.returncode}):\n{finished.stderr.decode()}"
        )
    report = json.loads((workdir / "wave.report.json").read_text())
    assert report["totals"]["succeeded"] == rows, report["totals"]
    assert emulator.stats()["images"] == rows
    return {"runner": float(report["throughput_per_s"]), "end_to_end": rows / wall, "wall": wall}


def measure(
    latency_ms: float, *, rows: int, reps: int, concurrency: int, workdir: Path
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"journal": [], "no_journal": []}
    with EmulatorProcess(EmulatorConfig(latency_ms=latency_ms)) as emulator:
        one_run(emulator, workdir, rows=rows, journal=True, concurrency=concurrency)  # warm-up
        for rep in range(reps):
            # Alternate which goes first, so neither always follows the other.
            order = (True, False) if rep % 2 == 0 else (False, True)
            for journal in order:
                figures = one_run(
                    emulator, workdir, rows=rows, journal=journal, concurrency=concurrency
                )
                runs["journal" if journal else "no_journal"].append(figures)
    result: dict[str, Any] = {"latency_ms": latency_ms, "rows": rows, "reps": reps, "runs": runs}
    for figure in ("runner", "end_to_end"):
        with_journal = statistics.median(r[figure] for r in runs["journal"])
        without = statistics.median(r[figure] for r in runs["no_journal"])
        result[figure] = {
            "journal_rows_s": round(with_journal, 1),
            "no_journal_rows_s": round(without, 1),
            "overhead_pct": round(100.0 * (1.0 - with_journal / without), 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latencies", default="0,20", help="emulator latencies in ms")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ibimport-journal-bench-") as tmp:
        workdir = Path(tmp)
        write_manifest(workdir / "wave.csv", args.rows)
        for latency in (float(x) for x in args.latencies.split(",")):
            results.append(
                measure(
                    latency,
                    rows=args.rows,
                    reps=args.reps,
                    concurrency=args.concurrency,
                    workdir=workdir,
                )
            )
    if args.json:
        print(json.dumps(results, indent=2))
    worst = 0.0
    for result in results:
        print(
            f"latency {result['latency_ms']:g} ms, {result['rows']} rows, "
            f"median of {result['reps']} interleaved runs each:"
        )
        for figure, label in (("runner", "runner rows/s"), ("end_to_end", "end-to-end rows/s")):
            f = result[figure]
            print(
                f"  {label:<18} journal {f['journal_rows_s']:>8.1f}   "
                f"--no-journal {f['no_journal_rows_s']:>8.1f}   overhead {f['overhead_pct']:>5.1f}%"
            )
            worst = max(worst, f["overhead_pct"])
    print(f"worst overhead {worst:.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
