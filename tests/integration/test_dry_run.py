"""``run --dry-run``: every row with its token and new-or-exists; nothing sent, nothing left."""

from __future__ import annotations

import json
from pathlib import Path

from integration_support import (
    expected_tokens,
    import_requests,
    invoke,
    make_tasks,
    run_args,
    write_csv,
)

from ibimport.emulator import EmulatorServer


def _planned(stdout: str) -> list[dict[str, str]]:
    lines = stdout.splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def test_a_dry_run_sends_nothing_and_leaves_no_journal(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(7))
    result = invoke(*run_args(manifest, emulator.url, "--dry-run"))

    assert result.exit_code == 0, result.output
    rows = _planned(result.stdout)
    tokens = expected_tokens(manifest)
    assert [r["action"] for r in rows] == ["new"] * 7
    assert {(r["name"], r["semanticVersion"]): r["clientToken"] for r in rows} == tokens
    assert "nothing was sent" in result.stderr
    assert import_requests(emulator.url) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.csv"]


def test_a_dry_run_after_a_partial_run_says_which_rows_exist(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    tasks = make_tasks(6)
    first_half = write_csv(tmp_path / "half.csv", tasks[:3])
    assert invoke(*run_args(first_half, emulator.url)).exit_code == 0
    sent_before = import_requests(emulator.url)
    manifest = write_csv(tmp_path / "wave.csv", tasks)

    result = invoke(*run_args(manifest, emulator.url, "--dry-run", "--json"))

    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [r["action"] for r in plan["rows"]] == ["exists"] * 3 + ["new"] * 3
    assert all(r["imageArn"].startswith("arn:aws:imagebuilder:") for r in plan["rows"][:3])
    assert plan["totals"] == {"rows": 6, "new": 3, "exists": 3, "invalid": 0}
    assert plan["looked_up_existing"] is True
    assert import_requests(emulator.url) == sent_before
    assert not (tmp_path / "wave.journal").exists()


def test_a_dry_run_of_an_invalid_manifest_exits_2_unless_skipping(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    tasks = make_tasks(4)
    tasks[1]["semanticVersion"] = "1.0"
    manifest = write_csv(tmp_path / "wave.csv", tasks)

    refused = invoke(*run_args(manifest, emulator.url, "--dry-run"))
    assert refused.exit_code == 2
    assert "row 2: semanticVersion" in refused.stderr

    skipping = invoke(*run_args(manifest, emulator.url, "--dry-run", "--skip-invalid"))
    assert skipping.exit_code == 0, skipping.output
    assert [r["action"] for r in _planned(skipping.stdout)] == ["new", "invalid", "new", "new"]
    assert import_requests(emulator.url) == 0
