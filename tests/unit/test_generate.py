"""``manifests/generate.py``: a real tool, and ``--help`` rewrites nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ibimport.domain.tokens import client_token
from ibimport.manifest import read_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "manifests" / "generate.py"


def _generate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_prints_the_options_and_writes_nothing() -> None:
    examples = sorted(SCRIPT.parent.iterdir())
    before = {path: path.stat().st_mtime_ns for path in examples}
    shown = _generate("--help")
    assert shown.returncode == 0
    for option in ("--rows N", "--format", "--out FILE", "--seed S", "--examples"):
        assert option in shown.stdout
    assert {path: path.stat().st_mtime_ns for path in sorted(SCRIPT.parent.iterdir())} == before


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_every_format_holds_the_same_valid_tasks(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"wave.{fmt}"
    done = _generate("--rows", 40, "--format", fmt, "--out", out, "--seed", 5)
    assert done.returncode == 0, done.stderr
    rows = list(read_manifest(out))
    assert len(rows) == 40
    assert all(row.task is not None for row in rows), [r.describe() for r in rows][:3]
    reference = tmp_path / "reference.jsonl"
    assert _generate("--rows", 40, "--out", reference, "--seed", 5).returncode == 0
    tokens = {client_token(r.task) for r in read_manifest(reference) if r.task}
    assert {client_token(r.task) for r in rows if r.task} == tokens


def test_without_rows_and_out_it_is_a_usage_error(tmp_path: Path) -> None:
    refused = _generate("--rows", 3)
    assert refused.returncode == 2
    assert "--rows and --out are required" in refused.stderr
    other_seed = _generate("--rows", 3, "--out", "-", "--format", "jsonl", "--seed", 6)
    same_seed = _generate("--rows", 3, "--out", "-", "--format", "jsonl", "--seed", 6)
    assert other_seed.stdout == same_seed.stdout != ""
