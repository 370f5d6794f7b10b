"""The emulator's ``--state`` survives a SIGKILL: every image a client was told of is kept.

``ibimport run`` imports a manifest into an emulator child process started with
``--state``; the emulator is SIGKILLed the moment the run ends (no save on stop), started
again on the same file, and must hold every image the results name, with the same ARN, so
a re-run of the batch sends nothing and creates no second build.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from integration_support import read_results
from resume_support import Children, run_args, write_manifest

from ibimport.emulator import EmulatorConfig, EmulatorProcess

ROWS = 120


def test_state_survives_a_sigkill_right_after_the_answers(
    children: Children, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    state = tmp_path / "emulator-state.json"
    config = EmulatorConfig(state_file=state, task_mix="completed=1")
    emulator = EmulatorProcess(config).start()
    try:
        done = children.run(*run_args(manifest, emulator.url, "--concurrency", "32"))
        pid = emulator.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # at once: no save on stop
    finally:
        emulator.stop()
    done.assert_clean()
    assert done.returncode == 0, done.stderr
    told = {r["name"]: r["imageArn"] for r in read_results(tmp_path / "m.results.csv")}
    assert len(told) == ROWS

    with EmulatorProcess(config) as restarted:
        assert restarted.stats()["images"] == ROWS
        rerun = children.run(
            *run_args(manifest, restarted.url, "--journal", str(tmp_path / "fresh.journal"))
        )
        rerun.assert_clean()
        assert rerun.returncode == 0, rerun.stderr
        again = {r["name"]: r["imageArn"] for r in read_results(tmp_path / "m.results.csv")}
        assert again == told, "a fresh journal re-sends every token: each replays its image"
        figures = restarted.stats()
        assert figures["images"] == ROWS
        assert figures["duplicateBuilds"] == 0
