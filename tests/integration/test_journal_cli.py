"""The journal from the command line: damaged and foreign journals, changed manifests,
``--no-retry-failed``, ``ibimport status`` and ``ibimport report``.

Every refusal must be one clear message with a way forward, exit 2, send nothing and
leave the file as it was; never a traceback.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration_support import read_report, read_results
from resume_support import (
    Children,
    Emulator,
    Finished,
    journal_counts,
    run_args,
    task_row,
    write_manifest,
)

from ibimport.emulator import EmulatorConfig

ROWS = 60


@pytest.fixture(scope="module")
def fast_emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_mix="completed=1")) as emulator:
        yield emulator


@pytest.fixture
def emulator(fast_emulator: Emulator) -> Emulator:
    fast_emulator.reset()
    return fast_emulator


@pytest.fixture(scope="module")
def good_journal(tmp_path_factory: pytest.TempPathFactory, fast_emulator: Emulator) -> Path:
    """The journal of a finished run, to be damaged in copies."""
    workdir = tmp_path_factory.mktemp("good")
    manifest = write_manifest(workdir / "m.csv", ROWS)
    with Children(workdir) as children:
        finished = children.run(*run_args(manifest, fast_emulator.url))
    assert finished.returncode == 0, finished.stderr
    return workdir / "m.journal"


def _truncate(fraction: float) -> Callable[[Path, Path], None]:
    def damage(good: Path, path: Path) -> None:
        data = good.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return damage


def _scramble(good: Path, path: Path) -> None:
    data = bytearray(good.read_bytes())
    data[8192 : 8192 + 2000] = b"\xff" * 2000  # the middle of the rows table
    path.write_bytes(bytes(data))


def _garbage(good: Path, path: Path) -> None:
    path.write_bytes(b"row,name,semanticVersion\n" * 200)


def _empty(good: Path, path: Path) -> None:
    path.write_bytes(b"")


def _first_page(good: Path, path: Path) -> None:
    path.write_bytes(good.read_bytes()[:4096])


def _foreign(good: Path, path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE rows (name TEXT)")
    conn.commit()
    conn.close()


def _newer(good: Path, path: Path) -> None:
    shutil.copyfile(good, path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()


DAMAGES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "truncated-half": (_truncate(0.5), "damaged"),
    "truncated-to-first-page": (_first_page, "damaged"),
    "truncated-empty": (_empty, "is empty (truncated?)"),
    "pages-overwritten": (_scramble, "damaged"),
    "not-sqlite": (_garbage, "not an ibimport journal"),
    "foreign-sqlite": (_foreign, "not an ibimport journal"),
    "newer-schema": (_newer, "written by a newer ibimport"),
}


def _refusal(finished: Finished, says: str) -> None:
    finished.assert_clean()
    assert finished.returncode == 2, (finished.stdout, finished.stderr)
    message = " ".join(finished.stderr.split())
    assert says in message, message
    assert "--journal" in message, message  # the way forward


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_run_refuses_an_unusable_journal_with_a_way_forward(
    kind: str, good_journal: Path, emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    damage, says = DAMAGES[kind]
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    journal = tmp_path / "m.journal"
    damage(good_journal, journal)
    before = journal.read_bytes()

    _refusal(children.run(*run_args(manifest, emulator.url)), says)
    assert emulator.imports() == 0
    assert journal.read_bytes() == before  # not "repaired", not restarted from zero
    assert not (tmp_path / "m.results.csv").exists()


def test_status_and_report_refuse_an_unusable_journal(
    good_journal: Path, children: Children, tmp_path: Path
) -> None:
    started = []
    for kind in ("truncated-half", "truncated-empty", "not-sqlite", "newer-schema"):
        damage, says = DAMAGES[kind]
        journal = tmp_path / f"{kind}.journal"
        damage(good_journal, journal)
        for command in ("status", "report"):
            started.append((children.start(command, str(journal)), says))
    for child, says in started:  # all at once: each on its own file
        _refusal(child.wait(), says)
    assert not list(tmp_path.glob("*.csv"))


def test_missing_journal_for_status_and_report(children: Children, tmp_path: Path) -> None:
    for command in ("status", "report"):
        finished = children.run(command, str(tmp_path / "nowhere.journal"))
        finished.assert_clean()
        assert finished.returncode == 2
        assert "no journal at" in finished.stderr


def _diff_message(stderr: str) -> str:
    return " ".join(stderr.split())


def test_journal_of_another_manifest_is_refused_unless_forced(
    emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    journal = tmp_path / "shared.journal"
    first = write_manifest(tmp_path / "first.csv", ROWS)
    other = write_manifest(tmp_path / "other.csv", [task_row(i) for i in range(1000, 1010)])
    done = children.run(*run_args(first, emulator.url, "--journal", str(journal)))
    assert done.returncode == 0, done.stderr
    sent = emulator.imports()

    refused = children.run(*run_args(other, emulator.url, "--journal", str(journal)))
    refused.assert_clean()
    assert refused.returncode == 2
    message = _diff_message(refused.stderr)
    assert "the manifest changed since the journal" in message
    assert "10 rows added" in message
    assert f"{ROWS} rows removed" in message
    assert "nothing was sent; pass --force to proceed, or use another --journal" in message
    assert emulator.imports() == sent


def _changed_manifest(path: Path) -> dict[str, list[str]]:
    """Rows 4 and 8 changed, row 11 removed, three rows added; what changed, by kind."""
    rows = [task_row(i) for i in range(ROWS)]
    rows[3] = task_row(3, variant=" (re-exported)")
    rows[7] = task_row(7, variant=" (re-exported)")
    removed = rows.pop(10)
    added = [task_row(i) for i in range(ROWS, ROWS + 3)]
    write_manifest(path, rows + added)
    return {
        "changed": [rows[3]["name"], rows[7]["name"]],
        "removed": [removed["name"]],
        "added": [r["name"] for r in added],
    }


def test_changed_manifest_is_explained_and_refused_unless_forced(
    emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    args = run_args(manifest, emulator.url)
    assert children.run(*args).returncode == 0
    sent = emulator.imports()

    what = _changed_manifest(manifest)
    refused = children.run(*args)
    refused.assert_clean()
    assert refused.returncode == 2
    message = _diff_message(refused.stderr)
    assert "2 rows changed (different content, so a different clientToken)" in message
    assert "3 rows added" in message
    assert "1 row removed" in message
    for name in (*what["changed"], *what["added"], *what["removed"]):
        assert name in message
    assert "nothing was sent" in message
    assert emulator.imports() == sent

    forced = children.run(*args, "--force")
    forced.assert_clean()
    assert forced.returncode == 0, forced.stderr
    # The added rows are imported; the changed ones already have a build of their
    # name and version, and a second one would be a duplicate: they are not sent.
    assert emulator.imports() == sent + 3
    results = {r["name"]: r for r in read_results(tmp_path / "m.results.csv")}
    assert len(results) == ROWS + 2
    assert all(results[name]["status"] == "succeeded" for name in what["added"])
    assert all(results[name]["status"] in ("succeeded", "exists") for name in what["changed"])
    stats = emulator.stats()
    assert stats["images"] == ROWS + 3
    assert stats["duplicateBuilds"] == 0
    names = [task_row(i)["name"] for i in range(ROWS + 3)]
    assert set(emulator.builds_per_row(names).values()) == {1}

    # Forced once is accepted for good: the same manifest again resumes without --force.
    again = children.run(*args)
    again.assert_clean()
    assert again.returncode == 0, again.stderr
    assert emulator.imports() == sent + 3


@pytest.fixture
def flaky_emulator() -> Iterator[Emulator]:
    """A third of the calls fail with 500/503 before they take effect."""
    with Emulator(
        EmulatorConfig(fault_rate=0.3, drop_share=0.0, seed=7, task_mix="completed=1")
    ) as emulator:
        yield emulator


def test_failed_rows_are_kept_with_no_retry_failed_and_retried_without(
    flaky_emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    journal = tmp_path / "m.journal"
    url = flaky_emulator.url

    first = children.run(*run_args(manifest, url, "--max-attempts", "1"))
    first.assert_clean()
    assert first.returncode == 1
    counts = journal_counts(journal)
    failed = counts.get("failed", 0)
    assert failed > 0
    assert counts == {"succeeded": ROWS - failed, "failed": failed}

    status = children.run("status", str(journal))
    status.assert_clean()
    assert status.returncode == 0
    text = " ".join(status.stdout.split())
    assert f"failed {failed}" in text
    assert f"succeeded {ROWS - failed}" in text
    assert "failures by error code:" in text
    assert "ServiceException" in text or "ServiceUnavailableException" in text
    assert f"a re-run would: skip {ROWS - failed} done rows" in text
    assert f"retry {failed} failed rows" in text

    sent = flaky_emulator.imports()
    kept = children.run(*run_args(manifest, url, "--no-retry-failed"))
    kept.assert_clean()
    assert kept.returncode == 1
    assert flaky_emulator.imports() == sent  # nothing sent: done rows skipped, failed kept
    results = read_results(tmp_path / "m.results.csv")
    assert sum(r["status"] == "failed" for r in results) == failed
    assert all(r["errorCode"] for r in results if r["status"] == "failed")
    assert read_report(tmp_path / "m.report.json")["resumed"] == ROWS

    retried = children.run(*run_args(manifest, url))
    retried.assert_clean()
    assert retried.returncode == 0, retried.stderr
    report = read_report(tmp_path / "m.report.json")
    assert report["calls"] - report["retries"] == failed  # only the failed rows were sent
    assert report["resumed"] == ROWS - failed
    assert [r["status"] for r in read_results(tmp_path / "m.results.csv")] == ["succeeded"] * ROWS
    stats = flaky_emulator.stats()
    assert stats["images"] == ROWS
    assert stats["duplicateBuilds"] == 0


def test_report_rewrites_the_report_and_results_from_the_journal(
    emulator: Emulator, children: Children, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", ROWS)
    assert children.run(*run_args(manifest, emulator.url)).returncode == 0
    results_path, report_path = tmp_path / "m.results.csv", tmp_path / "m.report.json"
    original_results = results_path.read_text()
    original_totals = read_report(report_path)["totals"]
    results_path.unlink()
    report_path.unlink()
    sent = emulator.imports()

    # From another folder: the files go beside the manifest, as the run wrote them.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Children(elsewhere) as others:
        rewritten = others.run("report", str(tmp_path / "m.journal"))
    rewritten.assert_clean()
    assert rewritten.returncode == 0, rewritten.stderr
    assert results_path.read_text() == original_results
    assert read_report(report_path)["totals"] == original_totals
    assert not list(elsewhere.glob("m.*"))

    custom = children.run(
        "report",
        str(tmp_path / "m.journal"),
        "--report",
        str(tmp_path / "again.json"),
        "--results",
        str(tmp_path / "again.csv"),
    )
    assert custom.returncode == 0, custom.stderr
    assert (tmp_path / "again.csv").read_text() == original_results
    assert emulator.imports() == sent  # the journal alone: nothing asked of the service
