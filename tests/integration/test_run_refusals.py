"""A run refused before its first call leaves nothing behind and prints text, not markup."""

from __future__ import annotations

from pathlib import Path

from integration_support import import_requests, invoke, run_args

from ibimport.emulator import EmulatorServer


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".csv"))


def test_invalid_manifest_leaves_no_journal(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "wave.csv"
    manifest.write_text(
        "name,semanticVersion,platform,vmImportTaskId\nweb-01,1.0,Linux,import-ami-1\n",
        encoding="utf-8",
    )
    result = invoke(*run_args(manifest, emulator.url))
    assert result.exit_code == 2
    assert "row 1: semanticVersion" in result.output
    assert _leftovers(tmp_path) == [], "no journal, report or results for a refused run"
    assert import_requests(emulator.url) == 0


def test_unreadable_manifest_leaves_no_journal(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "wave.csv"
    manifest.write_bytes("name,semanticVersion\n".encode("utf-16"))
    result = invoke(*run_args(manifest, emulator.url))
    assert result.exit_code == 2
    assert "not UTF-8" in result.output
    assert "Traceback" not in result.output
    assert _leftovers(tmp_path) == []


def test_messages_are_printed_as_text_not_rich_markup(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = tmp_path / "[bold]wave[red].txt"
    manifest.write_text("x", encoding="utf-8")
    result = invoke(*run_args(manifest, emulator.url))
    assert result.exit_code == 2
    assert "[bold]wave[red].txt" in result.output
