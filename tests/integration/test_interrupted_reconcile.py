"""An interrupted fresh batch never builds again an image that already existed (issue 22,
item 1).

A fresh batch lists the account's builds before its first import and finds some of its
rows' images already there (imported earlier by another tool, under other tokens). It is
stopped before its workers reach those rows, by every interruption a person or a machine
makes: one Ctrl-C, SIGTERM, kill -9, two Ctrl-Cs. What the listing found must already be in
the journal (those rows ``exists``, with the ARN), and the resume, which does not list
again, must send none of them: one build per image, the old ones untouched.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from integration_support import REGION, read_results
from resume_support import (
    Children,
    Emulator,
    journal_counts,
    kill9,
    run_args,
    task_row,
    wait_for,
    wait_for_done,
    write_manifest,
)

from ibimport.emulator import EmulatorConfig

ROWS = 120
#: The last rows of the manifest: imported before the batch, by another tool.
EXISTING = range(100, 120)
RATE = "40"  # 100 rows to send: ~2.5 s, so the stop lands long before row 100


@pytest.fixture(scope="module")
def account() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(latency_ms=5.0, task_mix="completed=1")) as emulator:
        yield emulator


def seed_other_tool(url: str) -> dict[str, str]:
    """Import the ``EXISTING`` rows' images as another tool would; their ARNs by name."""
    client = boto3.client(
        "imagebuilder",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="AKIDIBIMPORTTEST",
        aws_secret_access_key="ibimport-test-secret",
    )
    arns = {}
    for i in EXISTING:
        row = task_row(i)
        answer = client.import_vm_image(
            name=row["name"],
            semanticVersion=row["semanticVersion"],
            platform=row["platform"],
            vmImportTaskId=row["vmImportTaskId"],
            clientToken=f"another-tool-{i}",
        )
        arns[row["name"]] = answer["imageArn"]
    client.close()
    return arns


def interrupt(child_pid_kill: str, children: Children, args: list[str], journal: Path) -> int:
    """Start the batch, stop it once 10 rows are done; returns its exit code."""
    child = children.start(*args)
    wait_for_done(journal, child, at_least=10)
    if child_pid_kill == "SIGKILL":
        kill9(child)
        return int(child.popen.returncode)
    child.signal(signal.SIGINT if child_pid_kill.startswith("SIGINT") else signal.SIGTERM)
    if child_pid_kill == "SIGINTx2":
        wait_for(
            lambda: "interrupt: finishing" in child.stderr_text(),
            timeout=10,
            what="the first interrupt's notice",
        )
        child.signal(signal.SIGINT)
    finished = child.wait()
    finished.assert_clean()
    return finished.returncode


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL", "SIGINTx2"])
def test_an_interrupted_fresh_batch_never_builds_an_existing_image_again(
    how: str, account: Emulator, children: Children, tmp_path: Path
) -> None:
    account.reset()
    arns = seed_other_tool(account.url)
    manifest = write_manifest(tmp_path / "wave.csv", ROWS)
    journal = tmp_path / "wave.journal"
    args = run_args(manifest, account.url, "--concurrency", "4", "--rate", RATE)

    code = interrupt(how, children, args, journal)

    assert code in (130, -signal.SIGKILL), code
    counts = journal_counts(journal)
    assert counts.get("exists", 0) == len(EXISTING), counts  # journalled before any import
    assert account.imports() - len(EXISTING) < 100  # stopped before the last new row

    rerun = children.run(*args)

    assert rerun.returncode == 0, rerun.stderr
    rerun.assert_clean()
    results = {r["name"]: r for r in read_results(tmp_path / "wave.results.csv")}
    for i in EXISTING:
        row = results[task_row(i)["name"]]
        assert (row["status"], row["imageArn"]) == ("exists", arns[row["name"]])
    assert sum(r["status"] == "succeeded" for r in results.values()) == ROWS - len(EXISTING)
    stats = account.stats()
    # 20 images by the other tool, 100 by ibimport, none twice (a call cut off by a second
    # Ctrl-C is re-sent with its token: another request, not another build).
    assert stats["images"] == ROWS
    assert stats["duplicateBuilds"] == 0
    builds = account.builds_per_row([task_row(i)["name"] for i in range(ROWS)])
    assert set(builds.values()) == {1}, {n: b for n, b in builds.items() if b != 1}
    assert journal_counts(journal) == {"succeeded": 100, "exists": 20}
