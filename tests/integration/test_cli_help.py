"""``--help`` as a person reads it: options in panels, human defaults, no type names.

A child process with ``COLUMNS`` set, as a terminal of that width runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

#: The console script of the interpreter running the tests (the project's venv).
IBIMPORT = str(Path(sys.executable).with_name("ibimport"))


def _help(*command: str, columns: int = 100) -> str:
    shown = subprocess.run(
        [IBIMPORT, *command, "--help"],
        env={**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return shown.stdout


#: What typer would show of its own types, not the user's words.
TYPE_NAMES = ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list[", "int range", "{")


@pytest.mark.parametrize("command", ["run", "validate", "status", "report", "wait", "preflight"])
def test_help_fits_80_columns_with_no_type_names(command: str) -> None:
    text = _help(command, columns=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for unreadable in (*TYPE_NAMES, "--no-no-"):
        assert unreadable not in text, (unreadable, text)
    assert "--json" in text


def test_run_help_is_in_panels_with_human_defaults() -> None:
    text = _help("run", columns=80)
    titles = re.findall(r"╭─ ([^─]+?) ─", text)
    assert titles == [
        "Arguments",
        "Options",
        "Manifest",
        "AWS",
        "Pacing",
        "Journal and outputs",
        "Disk images (EC2 import tasks)",
        "Preflight and wait",
        "Emulator (--local)",
    ]
    flat = " ".join(text.replace("│", " ").split())
    for expected in (
        "Usage: ibimport run [OPTIONS] MANIFEST",
        "--token-ttl DURATION",
        "[default: 8h]",
        "--wait-timeout DURATION",
        "[default: 1h]",
        "[default: 5s]",
        "--read-timeout DURATION",
        "[default: 60s]",
        "--progress <auto|plain|off>",
        "--tag KEY=VALUE",
        "--emulator-rate NUMBER",
        "Exit codes: 0 every row done; 1 some rows failed",
        "130 interrupted",
    ):
        assert expected in flat, expected
    assert "28800" not in text
    assert "3600.0" not in text
    # Each option in its panel: --region among the AWS options, --wait among the waits.
    aws = text[text.index("╭─ AWS") : text.index("╭─ Pacing")]
    assert "--region" in aws
    assert "--endpoint-url" in aws
    assert "--wait" not in aws
    waits = text[text.index("╭─ Preflight and wait") : text.index("╭─ Emulator")]
    assert "--wait-for-tasks" in waits
    assert "--poll-interval" in waits


def test_command_summaries_are_not_cut_off() -> None:
    text = _help(columns=80)
    flat = " ".join(text.replace("│", " ").split())
    commands = text[text.index("╭─ Commands") :]
    assert "..." not in commands
    assert "…" not in commands
    assert "ready, pending, failed, unknown." in flat
    assert "where its run wrote them." in flat


def test_a_duration_that_is_not_one_is_a_usage_error() -> None:
    shown = subprocess.run(
        [IBIMPORT, "run", "m.csv", "--token-ttl", "eight hours"],
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 2
    assert "not a duration such as 90s, 30m, 8h or 1h30m" in shown.stderr
