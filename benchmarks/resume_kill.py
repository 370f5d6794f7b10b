"""Issue 4's Done-when: a batch killed at ~40% (SIGKILL, then Ctrl-C) finishes on re-run.

2,000 rows against an emulator child process with 20 ms latency and 2% faults (a tenth of
them answers lost after the call took effect). For each way of stopping, ``ibimport run``
runs as a child process; when the journal records ~40% of the rows as succeeded it is
stopped (SIGKILL, or SIGINT as Ctrl-C would send), then the same command runs again. The
script checks and prints:

- exactly one build per row, counted with ListImageBuildVersions for every row, and the
  emulator's ``images`` / ``duplicateBuilds``;
- ImportVmImage requests the re-run sent, against remaining rows x 1.25 + concurrency;
- for SIGINT: exit code 130 and seconds from the signal to the exit (limit 15 s).

    .venv/bin/python benchmarks/resume_kill.py [--rows 2000] [--at 0.4] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from ibimport.emulator import EmulatorConfig, EmulatorProcess

IBIMPORT = str(Path(sys.executable).with_name("ibimport"))
REGION, ACCOUNT = "us-east-1", "123456789012"
KEY, SECRET = "AKIDIBIMPORTBENCH", "ibimport-bench-secret"


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def write_manifest(path: Path, rows: int) -> list[str]:
    names = [f"vm-{i:05d}" for i in range(rows)]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "semanticVersion", "platform", "vmImportTaskId", "description"])
        for i, name in enumerate(names):
            writer.writerow([name, "1.0.0", "Linux", f"import-ami-{i:017x}", f"benchmark row {i}"])
    return names


def journal_counts(path: Path) -> dict[str, int]:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return dict(conn.execute("SELECT state, COUNT(*) FROM rows GROUP BY state").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def builds_per_row(url: str, names: list[str]) -> dict[str, int]:
    """Builds of every name/1.0.0, through ListImageBuildVersions (retried: faults hit it too)."""
    client = boto3.client(
        "imagebuilder",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 20}, max_pool_connections=16
        ),
    )

    def count(name: str) -> int:
        arn = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image/{name}/1.0.0"
        try:
            page = client.list_image_build_versions(imageVersionArn=arn, maxResults=25)
        except client.exceptions.ResourceNotFoundException:
            return 0
        return len(page.get("imageSummaryList", []))

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            return dict(zip(names, pool.map(count, names), strict=True))
    finally:
        client.close()


def imports(emulator: EmulatorProcess) -> int:
    return int(emulator.stats()["requests"].get("ImportVmImage", 0))


def scenario(
    how: str, *, emulator: EmulatorProcess, rows: int, at: float, concurrency: int
) -> dict[str, Any]:
    """Run, stop at ``at`` of the rows (SIGKILL or SIGINT), re-run; return the figures."""
    emulator.reset()
    with tempfile.TemporaryDirectory(prefix="ibimport-resume-") as tmp:
        workdir = Path(tmp)
        manifest = workdir / "wave.csv"
        journal = workdir / "wave.journal"
        names = write_manifest(manifest, rows)
        command = [
            IBIMPORT, "run", str(manifest), "--endpoint-url", emulator.url, "--region", REGION,
            "--concurrency", str(concurrency), "--progress", "off",
        ]  # fmt: skip
        env = child_env()
        log = (workdir / "first.log").open("wb")
        started = time.monotonic()
        first = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
        target = int(rows * at)
        deadline = time.monotonic() + 120
        while journal_counts(journal).get("succeeded", 0) < target:
            if first.poll() is not None or time.monotonic() > deadline:
                first.kill()
                raise SystemExit(f"{how}: the run ended before {target} rows were done")
            time.sleep(0.005)
        signalled = time.monotonic()
        first.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
        try:
            first_code = first.wait(60)
        except subprocess.TimeoutExpired:
            first.kill()
            first_code = first.wait()
        exited = time.monotonic()
        log.close()
        at_stop = journal_counts(journal)
        done = at_stop.get("succeeded", 0)
        remaining = rows - done
        sent_first = imports(emulator)

        rerun_started = time.monotonic()
        rerun = subprocess.run(command, cwd=workdir, env=env, capture_output=True, timeout=300)
        rerun_s = time.monotonic() - rerun_started
        sent_rerun = imports(emulator) - sent_first
        stats = emulator.stats()
        builds = builds_per_row(emulator.url, names)
        with (workdir / "wave.results.csv").open(newline="") as file:
            results = list(csv.DictReader(file))
        report = json.loads((workdir / "wave.report.json").read_text())
        bound = remaining * 1.25 + concurrency
        figures: dict[str, Any] = {
            "how": how,
            "rows": rows,
            "stopped_after_s": round(signalled - started, 2),
            "first_exit_code": first_code,
            "signal_to_exit_s": round(exited - signalled, 2),
            "journal_at_stop": at_stop,
            "done_at_stop": done,
            "remaining": remaining,
            "imports_first_run": sent_first,
            "rerun_exit_code": rerun.returncode,
            "rerun_s": round(rerun_s, 2),
            "rerun_imports": sent_rerun,
            "rerun_bound": bound,
            "rerun_resumed": report.get("resumed"),
            "rerun_first_calls": report["calls"] - report["retries"],
            "results_rows": len(results),
            "results_succeeded": sum(r["status"] == "succeeded" for r in results),
            "images": stats["images"],
            "duplicate_builds": stats["duplicateBuilds"],
            "idempotent_replays": stats["idempotentReplays"],
            "faults": stats["faults"],
            "rows_with_one_build": sum(n == 1 for n in builds.values()),
            "rows_with_other_builds": sum(n != 1 for n in builds.values()),
        }
        checks = {
            "exactly one build per row": figures["rows_with_one_build"] == rows
            and stats["images"] == rows
            and stats["duplicateBuilds"] == 0,
            "complete results, every row succeeded": figures["results_succeeded"] == rows,
            "re-run exit 0": rerun.returncode == 0,
            "re-run imports <= remaining x 1.25 + concurrency": sent_rerun <= bound,
        }
        if how == "SIGINT":
            checks["exit 130 within 15 s of Ctrl-C"] = (
                first_code == 130 and exited - signalled <= 15
            )
        figures["checks"] = checks
        if rerun.returncode != 0:
            figures["rerun_stderr"] = rerun.stderr.decode(errors="replace")[-2000:]
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--at", type=float, default=0.4, help="share of rows done when stopped")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    config = EmulatorConfig(latency_ms=args.latency_ms, fault_rate=args.fault_rate, seed=2000)
    with EmulatorProcess(config) as emulator:
        runs = [
            scenario(
                how, emulator=emulator, rows=args.rows, at=args.at, concurrency=args.concurrency
            )
            for how in ("SIGKILL", "SIGINT")
        ]
    if args.json:
        print(json.dumps(runs, indent=2))
    for run in runs:
        print(
            f"{run['how']}: stopped after {run['stopped_after_s']} s with {run['done_at_stop']}"
            f"/{run['rows']} rows done (journal {run['journal_at_stop']}); exit "
            f"{run['first_exit_code']} {run['signal_to_exit_s']} s after the signal"
        )
        print(
            f"  re-run: exit {run['rerun_exit_code']} in {run['rerun_s']} s, "
            f"{run['rerun_imports']} ImportVmImage requests for {run['remaining']} remaining rows "
            f"(bound {run['rerun_bound']:.0f}; {run['rerun_first_calls']} rows sent, "
            f"{run['rerun_resumed']} carried over)"
        )
        print(
            f"  service: {run['images']} images, {run['duplicate_builds']} duplicate builds, "
            f"{run['rows_with_one_build']} rows with exactly one build "
            f"(ListImageBuildVersions), {run['idempotent_replays']} idempotent replays, "
            f"{run['faults']} faults injected"
        )
        for check, ok in run["checks"].items():
            print(f"  [{'ok' if ok else 'FAILED'}] {check}")
    if not all(ok for run in runs for ok in run["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
