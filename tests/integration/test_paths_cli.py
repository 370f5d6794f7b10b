"""Paths and corners every command meets (issue 22 items 6, 7, 8, 10, 11), through the real
CLI against the emulator: no output over an input, nothing that hangs, one line for every
failure (never a traceback).

Whatever could hang runs as a child process with a bounded wait (``children``), so a
regression fails the test instead of stopping the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from integration_support import (
    REGION,
    invoke,
    make_tasks,
    read_results,
    run_args,
    stats,
    write_csv,
)
from resume_support import Children, wait_for
from resume_support import run_args as child_run_args

from ibimport.emulator import EmulatorConfig, EmulatorServer


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


# --------------------------------------------------------------------- item 6, 7


@pytest.mark.parametrize("command", ["run", "report"])
def test_an_output_path_naming_a_missing_folder_is_refused(
    tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))
    if command == "report":
        assert invoke(*run_args(manifest, emulator.url)).exit_code == 0
        args: list[Any] = ["report", tmp_path / "wave.journal"]
    else:
        args = run_args(manifest, emulator.url)
    sent = stats(emulator.url)["requests"].get("ImportVmImage", 0)

    refused = invoke(*args, "--results", "out/")

    assert refused.exit_code == 2, refused.output
    assert "out/ names a folder" in _one_error_line(refused.output)
    assert not (tmp_path / "out").exists()
    assert stats(emulator.url)["requests"].get("ImportVmImage", 0) == sent


def test_validate_flags_two_rows_with_one_explicit_client_token(tmp_path: Path) -> None:
    tasks = make_tasks(4)
    tasks[0]["clientToken"] = tasks[2]["clientToken"] = "wave-3-token-0001"
    manifest = write_csv(tmp_path / "wave.csv", tasks)

    checked = invoke("validate", manifest, "--json")

    assert checked.exit_code == 2, checked.output
    document = json.loads(checked.stdout)
    assert document["invalid"] == 1
    assert [(e["row"], e["field"]) for e in document["errors"]] == [(3, "clientToken")]
    assert "the same as row 1's" in document["errors"][0]["rule"]


# --------------------------------------------------------------------- item 8


def _ran(tmp_path: Path, url: str, *extra: str | Path) -> Path:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(6))
    done = invoke(*run_args(manifest, url, *extra))
    assert done.exit_code == 0, done.output
    return manifest


@pytest.mark.parametrize("alias", ["the manifest", "a hard link to it"])
def test_report_refuses_results_over_the_manifest(
    tmp_path: Path, emulator: EmulatorServer, alias: str
) -> None:
    manifest = _ran(tmp_path, emulator.url)
    before = manifest.read_bytes()
    target = manifest
    if alias != "the manifest":
        target = tmp_path / "linked.csv"
        os.link(manifest, target)

    refused = invoke("report", tmp_path / "wave.journal", "--results", target)

    assert refused.exit_code == 2, refused.output
    assert "same file as the manifest" in _one_error_line(refused.output)
    assert manifest.read_bytes() == before


def test_merging_shards_refuses_results_over_the_manifest(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(8))
    for k in range(2):
        assert invoke(*run_args(manifest, emulator.url, "--shard", f"{k}/2")).exit_code == 0
    before = manifest.read_bytes()
    journals = [tmp_path / f"wave.shard-{k}-of-2.journal" for k in range(2)]

    refused = invoke("report", *journals, "--results", manifest)

    assert refused.exit_code == 2, refused.output
    assert "same file as the manifest" in _one_error_line(refused.output)
    assert manifest.read_bytes() == before


def _set_recorded(journal: Path, **paths: str) -> None:
    """Rewrite the paths a journal's header records (a journal is data: anyone can)."""
    with sqlite3.connect(journal) as conn:
        (settings,) = conn.execute("SELECT settings FROM run WHERE id = 1").fetchone()
        conn.execute(
            "UPDATE run SET settings = ? WHERE id = 1",
            (json.dumps({**json.loads(settings), **paths}),),
        )


def test_report_and_wait_refuse_a_recorded_output_that_is_the_manifest(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = _ran(tmp_path, emulator.url)
    before = manifest.read_bytes()
    journal = tmp_path / "wave.journal"
    _set_recorded(journal, results=str(manifest))
    reads = stats(emulator.url)["requests"]

    for args in (["report", journal], ["wait", journal, "--endpoint-url", emulator.url]):
        refused = invoke(*args)
        assert refused.exit_code == 2, refused.output
        assert "same file as the manifest" in _one_error_line(refused.output)
    assert manifest.read_bytes() == before
    assert stats(emulator.url)["requests"] == reads, "wait asked nothing before refusing"


def test_a_recorded_output_outside_the_journals_folder_is_written_only_when_named(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    _ran(tmp_path, emulator.url)
    journal = tmp_path / "wave.journal"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _set_recorded(journal, results=str(elsewhere / "results.csv"))

    refused = invoke("report", journal)
    assert refused.exit_code == 2, refused.output
    line = _one_error_line(refused.output)
    assert "outside the journal's folder" in line
    assert "--results" in line
    assert not (elsewhere / "results.csv").exists()

    named = invoke("report", journal, "--results", elsewhere / "results.csv")
    assert named.exit_code == 0, named.output
    assert len(read_results(elsewhere / "results.csv")) == 6


# --------------------------------------------------------------------- item 10


def test_a_fifo_nobody_reads_never_hangs_a_command(
    tmp_path: Path, children: Children, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(4))
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)

    as_report = children.run(*child_run_args(manifest, emulator.url, "--report", str(fifo)))
    as_report.assert_clean()
    assert as_report.returncode == 3, as_report.stderr
    assert "FIFO nobody reads" in _one_error_line(as_report.stderr)
    assert len(read_results(tmp_path / "wave.results.csv")) == 4  # the rest was written

    rebuilt = children.run("report", str(tmp_path / "wave.journal"), "--report", str(fifo))
    rebuilt.assert_clean()
    assert rebuilt.returncode == 3
    assert "FIFO nobody reads" in _one_error_line(rebuilt.stderr)

    for args in (["status", str(fifo)], ["report", str(fifo)]):
        refused = children.run(*args)
        refused.assert_clean()
        assert refused.returncode == 2, refused.stderr
        assert "not a regular file" in _one_error_line(refused.stderr)

    as_journal = children.run(*child_run_args(manifest, emulator.url, "--journal", str(fifo)))
    as_journal.assert_clean()
    assert as_journal.returncode == 2
    assert "is a FIFO; a journal is a file" in _one_error_line(as_journal.stderr)


# --------------------------------------------------------------------- item 11


def test_a_full_disk_for_the_report_is_one_line(tmp_path: Path, emulator: EmulatorServer) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))
    full = invoke(*run_args(manifest, emulator.url, "--report", "/dev/full"))
    assert full.exit_code == 3, full.output
    assert "cannot write /dev/full: No space left on device" in _one_error_line(full.output)


def test_a_shard_index_that_is_no_ascii_number_is_one_line(
    tmp_path: Path, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "²")
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))
    refused = invoke(*run_args(manifest, emulator.url, "--shard-count", "2"))
    assert refused.exit_code == 2, refused.output
    assert "is not a shard index" in _one_error_line(refused.output)


def test_an_unknown_state_in_a_journal_is_one_line_for_every_command(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = _ran(tmp_path, emulator.url)
    journal = tmp_path / "wave.journal"
    with sqlite3.connect(journal) as conn:
        conn.execute("UPDATE rows SET state = 'teleported' WHERE row = 2")
    for args in (["status", journal], ["report", journal], run_args(manifest, emulator.url)):
        refused = invoke(*args)
        assert refused.exit_code == 2, refused.output
        assert "'teleported'" in _one_error_line(refused.output)


def test_json_with_results_on_stdout_is_refused(
    tmp_path: Path, children: Children, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(3))
    refused = children.run(
        *child_run_args(manifest, emulator.url, "--json", "--results", "/dev/stdout")
    )
    refused.assert_clean()
    assert refused.returncode == 2
    assert "standard output" in _one_error_line(refused.stderr)
    assert json.loads(refused.stdout)["exit_code"] == 2  # still one document
    assert stats(emulator.url)["requests"].get("ImportVmImage", 0) == 0


def test_the_output_folder_removed_mid_run_is_one_line(
    tmp_path: Path, children: Children, start_emulator: Any
) -> None:
    server: EmulatorServer = start_emulator(latency_ms=100)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(40))
    out = tmp_path / "out"
    out.mkdir()
    child = children.start(
        *child_run_args(manifest, server.url, "--concurrency", "2"),
        "--report", str(out / "report.json"), "--results", str(out / "results.csv"),
    )  # fmt: skip
    # The results are written beside their path and renamed into place at the end.
    wait_for(lambda: any(out.iterdir()), timeout=30, what="the results being written")
    shutil.rmtree(out)

    done = child.wait()

    done.assert_clean()
    assert done.returncode == 3, done.stderr
    assert "no longer exists" in _one_error_line(done.stderr)


def test_an_output_link_re_pointed_mid_run_keeps_the_rows_where_they_went(
    tmp_path: Path, children: Children, start_emulator: Any
) -> None:
    server: EmulatorServer = start_emulator(latency_ms=100)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(40))
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    link = tmp_path / "results.csv"
    link.symlink_to(first)
    child = children.start(
        *child_run_args(manifest, server.url, "--concurrency", "2", "--results", str(link))
    )
    wait_for(lambda: first.exists(), timeout=30, what="the results file")
    link.unlink()
    link.symlink_to(second)

    done = child.wait()

    done.assert_clean()
    assert done.returncode == 0, done.stderr
    assert [int(r["row"]) for r in read_results(first)] == list(range(1, 41))


KEY, SECRET = "AKIDVERIFIED0001", "verified-secret"


def test_an_expired_token_in_preflight_and_wait_gets_the_credential_guidance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_credentials: None
) -> None:
    now = [time.time()]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(
        json.dumps([{"ImportTaskId": f"import-ami-{i:017d}", "Status": "completed"}
                    for i in range(4)]),
        encoding="utf-8",
    )  # fmt: skip
    roles = tmp_path / "roles.json"  # the role the emulator's AssumeRole grants
    roles.write_text('{"arn:aws:iam::123456789012:role/migrate": {}}', encoding="utf-8")
    config = EmulatorConfig(
        verify_signatures=True, access_key_id=KEY, secret_access_key=SECRET,
        import_tasks=tasks_file, accounts=roles,
    )  # fmt: skip
    with EmulatorServer(config, clock=lambda: now[0]) as server:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        manifest = write_csv(
            tmp_path / "wave.csv",
            [{**t, "vmImportTaskId": f"import-ami-{i:017d}"} for i, t in enumerate(make_tasks(4))],
        )
        assert invoke(*run_args(manifest, server.url)).exit_code == 0
        sts = boto3.client(
            "sts", endpoint_url=server.url, region_name=REGION,
            aws_access_key_id=KEY, aws_secret_access_key=SECRET,
        )  # fmt: skip
        issued = sts.assume_role(
            RoleArn="arn:aws:iam::123456789012:role/migrate", RoleSessionName="wave"
        )["Credentials"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", issued["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", issued["SecretAccessKey"])
        monkeypatch.setenv("AWS_SESSION_TOKEN", issued["SessionToken"])
        now[0] += 7200  # past the credentials' hour

        for args in (
            ["preflight", manifest, "--endpoint-url", server.url, "--region", REGION],
            ["wait", tmp_path / "wave.journal", "--endpoint-url", server.url, "--region", REGION],
        ):
            expired = invoke(*args)
            assert expired.exit_code == 3, expired.output
            line = _one_error_line(expired.output)
            assert "the AWS credentials were refused" in line  # EC2 says AuthFailure
            assert "whether they expired" in line
