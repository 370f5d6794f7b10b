"""A manifest changed while its batch runs stops the batch; no row preflight did not see is sent.

A batch reads its manifest twice (preflight, then the run's streaming read). Here the
file is rewritten in place or truncated mid-line while the run is well before that row;
the run must stop with one message when it reaches it, and the emulator must never see
the changed row (nor a row spliced from two lines), with or without a journal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from resume_support import Children, Emulator, run_args, task_row, wait_for, write_manifest

from ibimport.emulator import EmulatorConfig

ROWS = 3000
CHANGED = 2000  # 1-based row; the reader buffers far less than the rows before it


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[Emulator]:
    """20 ms a call at concurrency 8: about 400 rows/s, so row 2000 is seconds away."""
    with Emulator(EmulatorConfig(latency_ms=20.0, task_mix="completed=1")) as emulator:
        yield emulator


def _row_span(manifest: Path, row: int) -> tuple[int, int]:
    """Byte offsets of data row ``row``'s line (the header is line 0)."""
    data = manifest.read_bytes()
    start = 0
    for _ in range(row):
        start = data.index(b"\n", start) + 1
    return start, data.index(b"\n", start) + 1


def _rewrite(manifest: Path) -> None:
    start, _ = _row_span(manifest, CHANGED)
    old = task_row(CHANGED - 1)["vmImportTaskId"].encode()
    new = b"import-ami-" + b"f" * (len(old) - len("import-ami-"))
    with manifest.open("r+b") as f:
        f.seek(start)
        line = f.read(200)
        f.seek(start + line.index(old))
        f.write(new)  # same length, same inode: only the content changed


def _truncate(manifest: Path) -> None:
    start, end = _row_span(manifest, CHANGED)
    os.truncate(manifest, (start + end) // 2)  # mid-line: a row spliced from half a line


@pytest.mark.parametrize(
    ("change", "journal"),
    [(_rewrite, True), (_truncate, True), (_rewrite, False)],
    ids=["rewritten", "truncated mid-line", "rewritten, no journal"],
)
def test_a_manifest_changed_mid_run_stops_with_one_message(
    change: object, journal: bool, slow_emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    slow_emulator.reset()
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    extra = ["--concurrency", "8"] + ([] if journal else ["--no-journal"])
    child = children.start(*run_args(manifest, slow_emulator.url, *extra))
    wait_for(
        lambda: slow_emulator.imports() >= 50 or not child.running(),
        timeout=30,
        what="the run to send its first rows",
    )
    assert child.running(), child.stderr_text()
    assert slow_emulator.imports() < CHANGED - 500, "the run reached the row too soon"
    assert callable(change)
    change(manifest)
    done = child.wait(60)
    done.assert_clean()
    assert done.returncode not in (0, 2, 130), done.stderr
    assert done.stderr.count("the manifest changed under the run") == 1, done.stderr
    assert f"row {CHANGED}" in done.stderr, done.stderr
    name = task_row(CHANGED - 1)["name"]
    assert slow_emulator.builds_per_row([name]) == {name: 0}, "the changed row was sent"
    figures = slow_emulator.stats()
    assert figures["images"] < CHANGED, "nothing at or past the changed row was sent"
    assert figures["duplicateBuilds"] == 0
