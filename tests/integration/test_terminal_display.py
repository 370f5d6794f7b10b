"""What a person sees on an 80-column terminal (issue 23 item 10): the bar of a run never
wraps, and after a second Ctrl-C the cursor the bar hid is shown again.

``ibimport run --local`` in a real pseudo-terminal (``pty``) of 80 x 24, read as the
terminal receives it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

from resume_support import child_env, write_manifest

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
