"""Exactly once as the service counts images: names equal once normalised, images that
already exist, lost journals, and lookups that are throttled or fail (issues 11 and 15).

Every test ends by asking the emulator, over HTTP, for every build it holds: one per image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integration_support import (
    _call,
    boto_client,
    invoke,
    make_tasks,
    read_report,
    read_results,
    run_args,
    stats,
    write_csv,
)

from ibimport.domain.apimodel import image_identity
from ibimport.emulator import EmulatorServer

StartEmulator = Callable[..., EmulatorServer]


def every_build(url: str) -> list[dict[str, Any]]:
    """Every build in the account and Region: ListImageBuildVersions without an ARN."""
    client = boto_client(url)
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"maxResults": 100}
    while True:
        page = _call(client.list_image_build_versions, **kwargs)
        found.extend(page.get("imageSummaryList", []))
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    client.close()
    return found


def assert_one_build_per_image(url: str, expected_images: int) -> None:
    per_image = Counter(
        image_identity(b["name"], b["version"].split("/")[0]) for b in every_build(url)
    )
    assert len(per_image) == expected_images
    twins = {identity: n for identity, n in per_image.items() if n != 1}
    assert twins == {}, f"second builds: {twins}"
    assert stats(url)["duplicateBuilds"] == 0


def seed(url: str, tasks: list[dict[str, Any]]) -> dict[str, str]:
    """Import ``tasks`` as another tool would (its own tokens); their ARNs by name."""
    client = boto_client(url)
    arns = {}
    for i, task in enumerate(tasks):
        params = {k: v for k, v in task.items() if k in ("name", "semanticVersion", "platform")}
        answer = _call(
            client.import_vm_image,
            **params,
            vmImportTaskId=task["vmImportTaskId"],
            clientToken=f"other-tool-{i}",
        )
        arns[task["name"]] = answer["imageArn"]
    client.close()
    return arns


def test_names_equal_once_normalised_are_one_image_and_validate_names_the_later_row(
    tmp_path: Path,
) -> None:
    tasks = make_tasks(3)
    for task, name in zip(tasks, ["Web 01", "WEB-01", "web_01"], strict=True):
        task["name"], task["semanticVersion"] = name, "1.0.0"
    manifest = write_csv(tmp_path / "wave.csv", tasks)
    result = invoke("validate", manifest)
    assert result.exit_code == 2
    assert "row 2: name: duplicate of row 1" in result.output
    assert "row 3: name: duplicate of row 1" in result.output
    assert "row 1:" not in result.output


def test_an_fqdn_name_is_refused_with_a_name_that_would_fit(tmp_path: Path) -> None:
    tasks = make_tasks(1)
    tasks[0]["name"] = "web01.corp.example.com"
    result = invoke("validate", write_csv(tmp_path / "wave.csv", tasks))
    assert result.exit_code == 2
    assert "'.' at position 6 is not allowed" in result.output
    assert "try 'web01-corp-example-com'" in result.output


def test_an_image_imported_earlier_under_another_spelling_is_not_imported_again(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    tasks = make_tasks(20)
    for i, task in enumerate(tasks[:5]):
        task["name"] = f"Legacy App_{i}"  # the manifest's spelling
    earlier = [{**task, "name": f"legacy-app {i}"} for i, task in enumerate(tasks[:5])]
    arns = seed(server.url, earlier)
    manifest = write_csv(tmp_path / "wave.csv", tasks)

    result = invoke(*run_args(manifest, server.url))

    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in read_results(tmp_path / "wave.results.csv")}
    for i in range(5):
        row = rows[f"Legacy App_{i}"]
        assert (row["status"], row["imageArn"]) == ("exists", arns[f"legacy-app {i}"])
    assert Counter(r["status"] for r in rows.values()) == {"succeeded": 15, "exists": 5}
    assert stats(server.url)["requests"]["ImportVmImage"] == 5 + 15
    assert_one_build_per_image(server.url, 20)


def test_a_lost_journal_after_the_tokens_expired_imports_nothing_twice(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "account.json"
    first = start_emulator(token_ttl_s=0.0, state_file=state)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(40))
    assert invoke(*run_args(manifest, first.url)).exit_code == 0
    first.stop()
    (tmp_path / "wave.journal").unlink()  # a new machine, a deleted folder
    second = start_emulator(token_ttl_s=0.0, state_file=state)  # the account survives

    result = invoke(*run_args(manifest, second.url))

    assert result.exit_code == 0, result.output
    statuses = Counter(r["status"] for r in read_results(tmp_path / "wave.results.csv"))
    assert statuses == {"exists": 40}
    assert stats(second.url)["requests"].get("ImportVmImage", 0) == 0
    report = read_report(tmp_path / "wave.report.json")
    assert report["existingImages"]["images"] == 40
    assert report["existingImages"]["calls"] >= 1
    assert_one_build_per_image(second.url, 40)


def test_reconcile_completes_under_throttling_and_faults(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    quiet = start_emulator(state_file=tmp_path / "account.json")
    tasks = make_tasks(250)
    seed(quiet.url, tasks)  # 250 builds: three pages of ListImageBuildVersions
    quiet.stop()
    server = start_emulator(
        state_file=tmp_path / "account.json", rate=4.0, burst=1, fault_rate=0.2, seed=5
    )
    manifest = write_csv(tmp_path / "wave.csv", tasks)

    result = invoke(*run_args(manifest, server.url))

    assert result.exit_code == 0, result.output
    counters = stats(server.url)
    assert counters["throttled"] + counters["faults"] > 0, "the listing met no trouble"
    assert counters["requests"].get("ImportVmImage", 0) == 0
    statuses = Counter(r["status"] for r in read_results(tmp_path / "wave.results.csv"))
    assert statuses == {"exists": 250}
    assert_one_build_per_image(server.url, 250)


def test_lookups_throttled_after_lost_answers_still_end_with_one_build_per_image(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    # First run: every call takes effect and its answer is lost; rows end failed, their
    # images created. Re-run after the service forgot the tokens, against a quota that
    # throttles the lookups: they are retried, and nothing is imported twice.
    # (The first emulator still remembers tokens: aiohttp re-sends a PUT once, silently,
    # when a connection drops, and that re-send must be answered as a replay.)
    lossy = start_emulator(fault_rate=1.0, drop_share=1.0, state_file=tmp_path / "a.json")
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(250))
    first = invoke(*run_args(manifest, lossy.url, "--max-attempts", "1", "--no-reconcile"))
    assert first.exit_code != 0
    assert stats(lossy.url)["images"] == 250
    lossy.stop()
    throttled = start_emulator(token_ttl_s=0.0, rate=3.0, burst=1, state_file=tmp_path / "a.json")

    result = invoke(*run_args(manifest, throttled.url, "--token-ttl", "0"))  # 3 pages

    assert result.exit_code == 0, result.output
    assert stats(throttled.url)["throttled"] > 0
    statuses = Counter(r["status"] for r in read_results(tmp_path / "wave.results.csv"))
    assert statuses == {"exists": 250}
    assert_one_build_per_image(throttled.url, 250)


def test_no_reconcile_lists_nothing_and_says_what_it_risks(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(10))
    result = invoke(*run_args(manifest, server.url, "--no-reconcile"))
    assert result.exit_code == 0, result.output
    assert stats(server.url)["requests"].get("ListImageBuildVersions", 0) == 0
    assert "existingImages" not in read_report(tmp_path / "wave.report.json")
    help_text = invoke("run", "--help").output
    assert "--no-reconcile" in help_text


def test_a_fresh_run_lists_the_account_once_whatever_the_manifest_size(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = start_emulator()
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(120))
    assert invoke(*run_args(manifest, server.url)).exit_code == 0
    assert stats(server.url)["requests"]["ListImageBuildVersions"] == 1  # empty account
    assert_one_build_per_image(server.url, 120)
