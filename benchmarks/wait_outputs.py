"""What ``ibimport run --wait`` costs at scale, outputs included: wall time, CPU and peak
RSS of a 200,000-row run that follows every image, against an emulator child.

Written to check that writing the results once, after the wait, from the journal (issue 18)
costs no more than streaming them during the run and rewriting them from the journal after
it did. ``--src`` runs another checkout's ``src`` (say ``git archive`` of the previous
commit) in the same virtualenv, so the two can be interleaved on one machine:

    .venv/bin/python benchmarks/wait_outputs.py --rows 200000 --src /tmp/base/src --src src
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memory import _child  # noqa: E402
from throughput import ENV, IBIMPORT, write_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--src", type=Path, action="append", help="a checkout's src folder (repeatable)"
    )
    args = parser.parse_args()
    from ibimport.emulator import EmulatorConfig, EmulatorProcess

    sources = args.src or [HERE.parent / "src"]
    print("| src | rows | wall s | CPU s | peak RSS MB | results MB |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="ibimport-wait-") as tmp:
        work = Path(tmp)
        manifest = work / "wave.csv"
        write_manifest(manifest, args.rows)
        for _ in range(args.rounds):
            for src in sources:
                env = {**os.environ, **ENV, "PYTHONPATH": str(src.resolve())}
                config = EmulatorConfig(available_after_s=0.0, task_mix="completed=1")
                with EmulatorProcess(config, cpus="0") as emulator:
                    command = [IBIMPORT, "run", str(manifest), "--endpoint-url", emulator.url,
                               "--region", "us-east-1", "--concurrency", str(args.concurrency),
                               "--progress", "off", "--wait", "--poll-interval", "1s"]  # fmt: skip
                    wall, cpu, rss, code, text = _child(command, env)
                if code != 0:
                    raise SystemExit(f"run failed ({code}):\n{text}")
                results = work / "wave.results.csv"
                size = results.stat().st_size / 1e6
                print(
                    f"| {src} | {args.rows:,} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | {size:.1f} |",
                    flush=True,
                )
                for leftover in work.iterdir():  # the next run starts a fresh batch
                    if leftover != manifest:
                        leftover.unlink()


if __name__ == "__main__":
    main()
