"""Hostile sizes and devices as manifests: refused in bounded time and memory, nothing left.

Each case drives the real ``ibimport`` CLI in a child process, with its own TMPDIR so the
test can check that no temporary copy of stdin or a FIFO is left behind, whatever the
way out (a refusal, SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from resume_support import IBIMPORT, Emulator, child_env, run_args, write_manifest

from ibimport.emulator import EmulatorConfig

#: Generous for a shared 2-core machine; the quadratic header took minutes.
BOUNDED_S = 20.0


def _env(tmp: Path) -> dict[str, str]:
    return {**child_env(), "TMPDIR": str(tmp)}


def _ibimport(
    tmp_path: Path, *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    spool = tmp_path / "tmp"
    spool.mkdir(exist_ok=True)
    return subprocess.run(
        [IBIMPORT, *args],
        cwd=tmp_path,
        env=_env(spool),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=BOUNDED_S,
        check=False,
    )


def _assert_refused(done: subprocess.CompletedProcess[str], *, says: str) -> None:
    assert done.returncode == 2, done.stderr
    assert says in done.stderr + done.stdout, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def _leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").iterdir())


def test_a_csv_with_50000_columns_is_checked_in_bounded_time(tmp_path: Path) -> None:
    header = ["name", "semanticVersion", "platform", "vmImportTaskId"]
    extra = [f"column{i}" for i in range(50_000)]
    manifest = tmp_path / "wide.csv"
    manifest.write_text(
        ",".join(header + extra)
        + "\n"
        + ",".join(["vm-001", "1.0.0", "Linux", "import-ami-0abc"] + ["x"] * len(extra))
        + "\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    done = _ibimport(tmp_path, "validate", str(manifest))
    assert time.monotonic() - started < BOUNDED_S
    _assert_refused(done, says="row 1: column49999: ")
    assert "1 row, 1 invalid" in done.stdout


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_device_is_refused_for_what_it_is(command: str, tmp_path: Path) -> None:
    done = _ibimport(tmp_path, command, "/dev/zero", "--format", "csv")
    _assert_refused(done, says="/dev/zero: is a character device, not a manifest file")
    assert not (tmp_path / "zero.journal").exists()


def test_dev_zero_on_stdin_is_refused_at_once(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        done = _ibimport(tmp_path, "validate", "-", "--format", "csv", stdin=zero.fileno())
    _assert_refused(done, says="not UTF-8: NUL byte at byte offset 0")


def test_dev_zero_piped_to_run_is_capped_and_its_copy_removed(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        done = _ibimport(
            tmp_path,
            "run",
            "-",
            "--format",
            "csv",
            "--local",
            "--max-stdin-mib",
            "8",
            stdin=zero.fileno(),
        )
    _assert_refused(done, says="stdin holds more than 8 MiB")
    assert _leftovers(tmp_path) == []


def test_an_endless_line_on_stdin_is_refused_past_the_skip_limit(tmp_path: Path) -> None:
    endless = subprocess.Popen(
        ["sh", "-c", "yes aaaaaaaaaaaaaaaa | tr -d '\\n'"], stdout=subprocess.PIPE
    )
    try:
        assert endless.stdout is not None
        started = time.monotonic()
        done = _ibimport(
            tmp_path, "validate", "-", "--format", "jsonl", stdin=endless.stdout.fileno()
        )
        assert time.monotonic() - started < BOUNDED_S
    finally:
        endless.kill()
        endless.wait()
        endless.stdout.close()
    _assert_refused(done, says="line 1 goes on past 16 MiB without a line break")


def test_endless_stdin_is_capped_and_its_copy_removed(tmp_path: Path) -> None:
    endless = subprocess.Popen(
        ["yes", "vm-001,1.0.0,Linux,import-ami-0abc"], stdout=subprocess.PIPE
    )
    try:
        assert endless.stdout is not None
        started = time.monotonic()
        done = _ibimport(
            tmp_path,
            "run",
            "-",
            "--format",
            "csv",
            "--local",
            "--max-stdin-mib",
            "8",
            stdin=endless.stdout.fileno(),
        )
        assert time.monotonic() - started < BOUNDED_S
    finally:
        endless.kill()
        endless.wait()
        endless.stdout.close()
    _assert_refused(done, says="stdin holds more than 8 MiB")
    assert _leftovers(tmp_path) == []


def test_sigterm_while_stdin_is_copied_removes_the_copy_and_exits_130(tmp_path: Path) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    slow = subprocess.Popen(
        ["sh", "-c", "echo name,semanticVersion,platform,vmImportTaskId; sleep 30"],
        stdout=subprocess.PIPE,
    )
    try:
        assert slow.stdout is not None
        child = subprocess.Popen(
            [IBIMPORT, "run", "-", "--format", "csv", "--local"],
            cwd=tmp_path,
            env=_env(spool),
            stdin=slow.stdout.fileno(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + BOUNDED_S
        while not list(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)  # the copy has started once its folder exists
        assert list(spool.iterdir()), "the copy never started"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=BOUNDED_S)
    finally:
        slow.kill()
        slow.wait()
        slow.stdout.close()
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert _leftovers(tmp_path) == []


def test_a_fifo_is_copied_once_and_run_like_a_file(tmp_path: Path) -> None:
    source = write_manifest(tmp_path / "source.csv", 20)
    fifo = tmp_path / "wave.csv"
    os.mkfifo(fifo)
    with Emulator(EmulatorConfig(task_mix="completed=1")) as emulator:
        writer = subprocess.Popen(["sh", "-c", f"cat {source} > {fifo}"])
        try:
            done = _ibimport(tmp_path, *run_args(fifo, emulator.url))
        finally:
            writer.kill()
            writer.wait()
        assert done.returncode == 0, done.stderr
        assert emulator.stats()["images"] == 20
    assert (tmp_path / "wave.results.csv").exists()
    assert _leftovers(tmp_path) == []
