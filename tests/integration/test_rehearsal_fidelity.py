"""Issue 21's rehearsal, with the real CLI against the emulator over HTTP: unknown import
tasks, a denied partition, short pages and builds listed late end with the right
statuses, each image built exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from integration_support import invoke, make_tasks, read_results, run_args, stats, write_csv

from ibimport.emulator import EmulatorServer

Start = Callable[..., EmulatorServer]


def test_unknown_tasks_short_pages_and_late_listings_end_right_exactly_once(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(
        task_mix="completed=0.7,missing=0.3",
        seed=21,
        short_pages=0.5,
        list_delay_s=0.5,
        available_after_s=1.5,
    )
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(250))
    wait = ("--wait", "--poll-interval", "0.2")
    first = invoke(*run_args(manifest, server.url, *wait))
    assert first.exit_code == 1, first.output  # some images FAILED
    rows = read_results(tmp_path / "wave.results.csv")
    statuses = {r["imageStatus"] for r in rows}
    assert statuses == {"AVAILABLE", "FAILED"}, statuses
    failed = [r for r in rows if r["imageStatus"] == "FAILED"]
    assert all("does not exist" in r["imageStatusReason"] for r in failed)
    assert all("failureContext: imageStatus=CREATING" in r["imageStatusReason"] for r in failed)
    again = invoke(*run_args(manifest, server.url, *wait))  # a re-run sends nothing again
    assert again.exit_code == 1, again.output
    figures = stats(server.url)
    assert figures["images"] == 250
    assert figures["duplicateBuilds"] == figures["reimportsOverFailed"] == 0
    assert figures["shortPages"] > 0


def test_a_denied_partition_stops_without_building_anything(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(deny=["AKIDIBIMPORTTEST=ImportVmImage"])
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(30))
    done = invoke(*run_args(manifest, server.url))
    assert done.exit_code == 3, done.output
    assert "AccessDeniedException" in done.output
    figures = stats(server.url)
    assert figures["images"] == 0
    assert figures["errors"]["AccessDeniedException"] <= 4  # the partition stops at once


def test_a_wait_against_a_service_that_lost_the_images_ends_deleted_at_once(
    start_emulator: Start, tmp_path: Path
) -> None:
    """Issue 22 item 13: the emulator restarted without --state has none of the images;
    the wait concludes DELETED in its first round, not TIMED_OUT after --wait-timeout."""
    imported = start_emulator(available_after_s=3600.0)
    manifest = write_csv(tmp_path / "wave.csv", make_tasks(150))
    assert invoke(*run_args(manifest, imported.url)).exit_code == 0
    restarted = start_emulator()  # another emulator: none of the images
    waited = invoke(
        "wait", tmp_path / "wave.journal", "--endpoint-url", restarted.url,
        "--region", "us-east-1", "--poll-interval", "0.2", "--wait-timeout", "3600",
    )  # fmt: skip
    assert waited.exit_code == 1, waited.output
    assert {r["imageStatus"] for r in read_results(tmp_path / "wave.results.csv")} == {"DELETED"}
    asked = stats(restarted.url)["requests"]
    assert asked["ListImageBuildVersions"] == 1  # one round: one listing,
    assert asked["GetImage"] == 150  # then each absent image confirmed once
