"""A service that stops answering mid-batch (SIGSTOP) is given up on, not retried for hours.

The emulator is a child process; stopped, the kernel still accepts connections, so every
call runs into ``--read-timeout``. The batch stops with one message once calls keep
getting no answer (``retry.OutageDetector``); every row stays resumable, and once the
service is continued a re-run finishes the batch with one build per row.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from resume_support import Children, Emulator, journal_counts, run_args, wait_for_done
from resume_support import write_manifest as write_rows

from ibimport.emulator import EmulatorConfig

ROWS = 200
#: Read timeouts (1 s) and the detector's 10 s of silence, with start-up slack.
GIVES_UP_WITHIN_S = 25.0


def test_a_hung_service_stops_the_batch_and_a_rerun_finishes(
    children: Children, tmp_path: Path
) -> None:
    manifest = write_rows(tmp_path / "m.csv", ROWS)
    journal = tmp_path / "m.journal"
    args = run_args(manifest, "", "--rate", "40", "--read-timeout", "1")
    with Emulator(EmulatorConfig(task_mix="completed=1")) as emulator:
        args[args.index("--endpoint-url") + 1] = emulator.url
        pid = emulator.process.pid
        assert pid is not None
        child = children.start(*args)
        wait_for_done(journal, child, at_least=20)
        os.kill(pid, signal.SIGSTOP)
        hung_at = time.monotonic()
        try:
            stopped = child.wait(GIVES_UP_WITHIN_S + 30)
            gave_up_after = time.monotonic() - hung_at
        finally:
            os.kill(pid, signal.SIGCONT)
        print(f"gave up {gave_up_after:.1f} s after the service hung")
        stopped.assert_clean()
        assert stopped.returncode not in (0, 130), stopped.stderr
        assert stopped.stderr.count("stopped answering") == 1, stopped.stderr
        counts = journal_counts(journal)
        assert counts.get("failed", 0) == 0, f"no row is failed for the outage: {counts}"
        assert sum(counts.values()) == ROWS
        assert counts.get("succeeded", 0) < ROWS

        rerun = children.run(*args)
        rerun.assert_clean()
        assert rerun.returncode == 0, rerun.stderr
        assert journal_counts(journal) == {"succeeded": ROWS}
        figures = emulator.stats()
        assert figures["images"] == ROWS
        assert figures["duplicateBuilds"] == 0
    assert gave_up_after < GIVES_UP_WITHIN_S, gave_up_after
