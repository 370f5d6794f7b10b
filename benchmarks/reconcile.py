"""Reconcile at scale: what listing an account's existing builds costs before a fresh run.

An account already holds ``--images`` builds (seeded by a first ``ibimport run`` whose
journal is then deleted: the lost-journal case, after the emulator forgot the tokens).
A second run of the same ``--images``-row manifest with a new journal must list them all
(ListImageBuildVersions without an ARN, 100 a page), record every row ``exists`` and send
no ImportVmImage. Reported: list calls, listing time, run time, imports sent, duplicate
builds; once unthrottled and once against a List quota (``--list-rate``).

    .venv/bin/python benchmarks/reconcile.py [--images 10000] [--list-rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import ENV, IBIMPORT, write_manifest  # noqa: E402


def _ibimport(*args: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [IBIMPORT, *args], capture_output=True, text=True, env={**os.environ, **ENV}, check=False
    )
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-1500:]


def _run_args(manifest: Path, url: str, journal: Path) -> list[str]:
    return ["run", str(manifest), "--endpoint-url", url, "--region", "us-east-1",
            "--concurrency", "64", "--progress", "off", "--journal", str(journal)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--list-rate", type=float, default=20.0)
    args = parser.parse_args()
    from ibimport.emulator import EmulatorConfig, EmulatorProcess

    with tempfile.TemporaryDirectory(prefix="ibimport-reconcile-") as tmp:
        work = Path(tmp)
        manifest, state = work / "wave.csv", work / "account.json"
        write_manifest(manifest, args.images)
        # The account: --images builds, kept in a state file; a token TTL of 0 means the
        # service has forgotten every clientToken by the time the second run comes.
        seed = EmulatorConfig(token_ttl_s=0.0, state_file=state)
        with EmulatorProcess(seed, cpus="0") as emulator:
            _, code, text = _ibimport(*_run_args(manifest, emulator.url, work / "seed.journal"))
        if code != 0:
            raise SystemExit(f"seeding failed ({code}):\n{text}")
        print(
            "| List quota | images | list calls | listing | whole run | imports sent | duplicates |"
        )
        print("|---|---|---|---|---|---|---|")
        for label, rate in (("none", None), (f"{args.list_rate:g}/s, burst 5", args.list_rate)):
            config = EmulatorConfig(
                token_ttl_s=0.0, state_file=state, rate=rate, burst=5 if rate else None
            )
            journal = work / f"fresh-{rate}.journal"  # a new journal: the lost-journal case
            with EmulatorProcess(config, cpus="0") as emulator:
                wall, code, text = _ibimport(*_run_args(manifest, emulator.url, journal))
                stats = emulator.stats()
            report = json.loads((work / "wave.report.json").read_text())
            if code != 0 or report["totals"]["exists"] != args.images:
                raise SystemExit(f"the fresh run did not find every image ({code}):\n{text}")
            listing = report["existingImages"]
            requests = stats["requests"]
            print(
                f"| {label} | {listing['images']:,} | {listing['calls']} "
                f"({requests.get('ListImageBuildVersions', 0)} at the service) "
                f"| {listing['elapsed_s']:.2f} s | {wall:.2f} s "
                f"| {requests.get('ImportVmImage', 0)} | {stats['duplicateBuilds']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
