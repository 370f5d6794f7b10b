"""``--help`` that reads well at 100 columns: plain flags, choices listed, readable types.

A child process with ``COLUMNS=100``, as a terminal of that width runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _help(command: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "ibimport", command, "--help"],
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return shown.stdout


@pytest.mark.parametrize("command", ["run", "validate", "status", "report"])
def test_help_fits_100_columns_with_readable_options(command: str) -> None:
    text = _help(command)
    assert max(len(line) for line in text.splitlines()) <= 100
    for unreadable in ("--no-no-", "<list[str]>", "<bool>", "<str>", "<int range>"):
        assert unreadable not in text, unreadable
    assert "--json" in text


def test_run_help_lists_plain_flags_choices_and_exit_codes() -> None:
    text = _help("run")
    for expected in (
        "--no-journal ",
        "--no-progress ",
        "--progress <auto|plain|off>",
        "--tag KEY=VALUE",
        "--dry-run",
        "--report FILE",
        "Exit codes: 0 every row done; 1 some rows failed",
        "3 could not start",
        "130 interrupted",
    ):
        assert expected in " ".join(text.split()) or expected in text, expected
    assert len(text.splitlines()) < 80  # one line an option, mostly
