"""Per-row permanent failures are recorded with AWS's code; the batch goes on and exits 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integration_support import (
    boto_client,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    stats,
    write_csv,
)

from ibimport.emulator import EmulatorServer

StartEmulator = Callable[..., EmulatorServer]


def test_a_reused_client_token_fails_its_row_only(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator(latency_ms=2)
    # Someone already imported with these tokens: one request the same as a manifest row
    # (a replay, answered with that image), one different (IdempotentParameterMismatch).
    tasks = make_tasks(40, seed=5)
    tasks[6]["clientToken"] = "operator-token-same"
    tasks[21]["clientToken"] = "operator-token-other"
    client = boto_client(server.url)
    same = {k: v for k, v in tasks[6].items() if k not in ("logGroupName",)}
    if "logGroupName" in tasks[6]:
        same["loggingConfiguration"] = {"logGroupName": tasks[6]["logGroupName"]}
    earlier_arn = client.import_vm_image(**same)["imageArn"]
    client.import_vm_image(
        name="someone-else",
        semanticVersion="9.9.9",
        platform="Linux",
        vmImportTaskId="import-ami-0fffffffffffffff0",
        clientToken="operator-token-other",
    )
    client.close()
    manifest = write_csv(tmp_path / "m.csv", tasks)

    # --no-reconcile: the rows must reach the service (reconcile would record row 7, whose
    # image exists, as exists without sending it; tests/integration/test_identity_reconcile.py).
    result = invoke(*run_args(manifest, server.url, "--no-reconcile"))

    assert result.exit_code == 1, result.output
    results = read_results(tmp_path / "m.results.csv")
    failed = [r for r in results if r["status"] == "failed"]
    assert [int(r["row"]) for r in failed] == [22]
    assert failed[0]["errorCode"] == "IdempotentParameterMismatchException"
    assert "operator-token-other" in failed[0]["errorMessage"]
    assert failed[0]["attempts"] == "1"  # a permanent 4xx is not retried
    assert failed[0]["requestId"]
    assert failed[0]["clientToken"] == "operator-token-other"
    assert results[6]["status"] == "succeeded"
    assert results[6]["imageArn"] == earlier_arn  # the manifest's token wins, and replays
    report = read_report(tmp_path / "m.report.json")
    assert report["totals"]["failed"] == 1
    assert report["totals"]["succeeded"] == 39
    assert report["errors_by_code"] == {"IdempotentParameterMismatchException": 1}
    assert "IdempotentParameterMismatchException" in result.output
    counters = stats(server.url)
    assert counters["images"] == 2 + 38
    assert counters["duplicateBuilds"] == 0
