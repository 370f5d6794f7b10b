"""What a person sees on an 80-column terminal (issue 23 items 6, 7 and 10): the bar of a
run never wraps, and after a second Ctrl-C the cursor the bar hid is shown again; a wait
shows its images or tasks by state with the next poll and the time left counting down
(and, piped, a heartbeat line); the ETA is the slowest partition's.

``ibimport`` in a real pseudo-terminal (``pty``) of 80 x 24, read as the terminal
receives it.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from resume_support import child_env, task_row, write_manifest

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]

IBIMPORT = str(Path(sys.executable).with_name("ibimport"))
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _spawn(args: list[str], cwd: Path) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of 80 columns
        os.chdir(cwd)
        env = {**child_env(), "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        env.pop("NO_COLOR", None)
        os.execve(IBIMPORT, [IBIMPORT, *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return pid, fd


def _read(fd: int, seconds: float, *, until: str | None = None) -> str:
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if until is not None and until in b"".join(chunks).decode(errors="replace"):
            break
    return b"".join(chunks).decode(errors="replace")


def test_the_bar_fits_80_columns_and_a_second_ctrl_c_gives_the_cursor_back(
    tmp_path: Path,
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", 3000)
    pid, fd = _spawn(
        ["run", str(manifest), "--local", "--emulator-rate", "40", "--concurrency", "4"], tmp_path
    )
    try:
        shown = _read(fd, 60, until="calls/s")
        shown += _read(fd, 2.5)
        assert "\x1b[?25l" in shown  # the bar hid the cursor
        lines = [_ANSI.sub("", part) for part in re.split(r"[\r\n]", shown)]
        bars = [line for line in lines if "calls/s" in line]
        assert bars, shown
        assert max(len(line.rstrip()) for line in bars) <= 80, bars[-1]
        assert all("rows" in line and "ETA" in line for line in bars), bars[-3:]

        os.kill(pid, signal.SIGINT)
        shown = _read(fd, 10, until="again to quit now")
        os.kill(pid, signal.SIGINT)
        shown += _read(fd, 20)
        assert "second interrupt" in shown, shown
        after = shown[shown.index("second interrupt") - 20 :]
        assert "\x1b[?25h" in shown[: shown.index("second interrupt")] or "\x1b[?25h" in after
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 130
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def _lines(shown: str) -> list[str]:
    """What the terminal showed, line by line (each redraw of the live display too)."""
    return [_ANSI.sub("", part).rstrip() for part in re.split(r"[\r\n]", shown) if part.strip()]


def _finish(pid: int, fd: int, *, seconds: float = 90) -> tuple[str, int]:
    """Everything the child shows until it exits, and its exit code."""
    shown = _read(fd, seconds)
    _, status = os.waitpid(pid, 0)
    return shown, os.waitstatus_to_exitcode(status)


def _stop(pid: int, fd: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(fd)


def test_run_wait_shows_the_images_by_state_and_a_countdown(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", 40)
    pid, fd = _spawn(
        [
            "run", str(manifest), "--local", "--emulator-available-after-s", "6",
            "--emulator-task-mix", "completed=1",
            "--wait", "--poll-interval", "1s", "--wait-timeout", "10m",
        ],
        tmp_path,
    )  # fmt: skip
    try:
        shown = _read(fd, 60, until="images: ")
        shown += _read(fd, 4)  # a few refreshes of the wait
        more, code = _finish(pid, fd)
    finally:
        _stop(pid, fd)
    lines = _lines(shown + more)
    assert code == 0, lines[-20:]
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    # The bar's last word on the import: over, and the wait begun; no frozen ETA.
    bars = [line for line in lines if "40/40 rows" in line]
    assert "imported in 0:00:" in bars[-1], bars[-1]
    assert "waiting for the images" in bars[-1]
    assert "ETA" not in bars[-1]
    # The images by state while they build, then the next poll and the time left,
    # counting down between rounds.
    states = [line for line in lines if line.startswith("images: ")]
    assert any("PENDING" in line or "CREATING" in line for line in states), states
    timing = [line for line in lines if "outstanding, " in line and " left" in line]
    assert any("next poll in" in line for line in timing), timing
    left = {re.search(r"(\d+:\d\d:\d\d) left", line).group(1) for line in timing}  # type: ignore[union-attr]
    assert len(left) >= 2, timing  # the time left moved
    assert all(t.startswith("0:09:") or t.startswith("0:10:") for t in left), left
    # Once every image settled: the states, and the summary's.
    assert "images: 40 AVAILABLE" in lines
    assert lines.count("images: 40 AVAILABLE") >= 2  # the display's last frame and the summary


def test_waits_piped_print_a_heartbeat_line(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(available_after_s=4.0)
    manifest = write_manifest(tmp_path / "m.csv", 20)
    env = child_env()

    def ibimport(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [IBIMPORT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    ran = ibimport(
        "run", str(manifest), "--endpoint-url", server.url, "--wait", "--wait-timeout", "1s",
        "--poll-interval", "0.3s",
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr  # the images outlived the timeout
    said = ran.stderr.splitlines()
    assert said[0].startswith("20/20 rows imported in 0:00:"), said
    assert said[0].endswith(", 0 failed; waiting for the images")
    assert said[1] == "waiting for images: 20 outstanding, polling now, 0:00:01 left"
    assert said[2] == "waiting for images: 20 TIMED_OUT; out of time"
    assert "ETA" not in ran.stderr

    waited = ibimport("wait", "m.journal", "--poll-interval", "0.3s", "--wait-timeout", "5m")
    assert waited.returncode == 0, waited.stderr
    beats = [line for line in waited.stderr.splitlines() if line.startswith("waiting for")]
    assert beats[0] == "waiting for images: 20 outstanding, polling now, 0:05:00 left"
    assert beats[-1] == "waiting for images: 20 AVAILABLE; done"
    # A round every 0.3-1 s for about 4 s: a line with the first and the last round only
    # (at most one every 30 s), each with the figures.
    assert len(beats) <= 3, beats
    assert "images: 20 AVAILABLE" in waited.stdout


def test_wait_for_tasks_shows_the_tasks_by_state_and_a_countdown(
    start_emulator: Start, tmp_path: Path
) -> None:
    rows = [task_row(i) for i in range(12)]
    tasks = [{"ImportTaskId": r["vmImportTaskId"], "Status": "completed"} for r in rows]
    for i in (3, 7):
        tasks[i] = {**tasks[i], "Status": "active", "Progress": "40", "CompletesAfterS": 5}
    (tmp_path / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    server = start_emulator(import_tasks=tmp_path / "tasks.json")
    manifest = write_manifest(tmp_path / "m.csv", rows)
    pid, fd = _spawn(
        [
            "run", str(manifest), "--endpoint-url", server.url, "--preflight",
            "--wait-for-tasks", "--poll-interval", "1s", "--task-timeout", "10m",
        ],
        tmp_path,
    )  # fmt: skip
    try:
        shown, code = _finish(pid, fd)
    finally:
        _stop(pid, fd)
    lines = _lines(shown)
    assert code == 0, lines[-20:]
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "import tasks: 10 ready, 2 pending" in lines
    timing = [line for line in lines if line.startswith("  2 outstanding, ")]
    assert any("next poll in" in line and " left" in line for line in timing), lines
    # While rows wait for their tasks the ETA is not made up from the rate of the others.
    waiting = [line for line in lines if "10/12 rows" in line]
    assert waiting, lines
    assert all("ETA --:--:--" in line for line in waiting if "ETA" in line), waiting
    assert "import tasks: 12 ready" in lines


def _regional_manifest(path: Path, counts: dict[str, int]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*task_row(0), "region"])
        writer.writeheader()
        i = 0
        for region, n in counts.items():
            for _ in range(n):
                writer.writerow({**task_row(i), "region": region})
                i += 1
    return path


def test_the_eta_follows_the_slowest_region(start_emulator: Start, tmp_path: Path) -> None:
    """Issue 23 item 7: two Regions at 100 calls/s and one at 10: once the fast ones are
    done, the ETA is the slow one's rows at its own rate, not at the batch's."""
    server = start_emulator()
    counts = {"us-east-1": 250, "eu-west-1": 250, "ap-southeast-2": 80}
    manifest = _regional_manifest(tmp_path / "m.csv", counts)
    rates = ["--rate", "us-east-1=100", "--rate", "eu-west-1=100", "--rate", "ap-southeast-2=10"]
    pid, fd = _spawn(
        ["run", str(manifest), "--endpoint-url", server.url, "--no-reconcile", *rates], tmp_path
    )
    try:
        shown, code = _finish(pid, fd)
    finally:
        _stop(pid, fd)
    lines = _lines(shown)
    assert code == 0, lines[-20:]
    seen = []
    for line in lines:
        found = re.search(r"(\d+)/580 rows .*ETA (\d+):(\d\d):(\d\d)", line)
        if found is None:
            continue
        done = int(found.group(1))
        h, m, sec = (int(found.group(i)) for i in (2, 3, 4))
        if 520 <= done < 575:  # the fast Regions are done: every row left is the slow one's
            seen.append((done, h * 3600 + m * 60 + sec))
    assert seen, lines[-10:]
    # At 10 rows/s the rows left take (580 - done) / 10 s; the batch's rate (hundreds of
    # rows/s over the window) would promise a second or two.
    for done, eta in seen:
        assert eta >= (580 - done) / 30, (done, eta)
