"""Integration helpers: generated manifests, the CLI in-process, and the emulator's view.

Everything here talks to a real emulator over HTTP; what the emulator holds is read back
with plain boto3 (ListImages + ListImageBuildVersions) and ``GET /_emulator/stats``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, HTTPClientError
from typer.testing import CliRunner, Result

from ibimport.cli import app
from ibimport.domain.tokens import client_token
from ibimport.manifest import read_manifest

REGION = "us-east-1"
ACCESS_KEY = "AKIDIBIMPORTTEST"  # the same as the root conftest's aws_credentials
SECRET_KEY = "ibimport-test-secret"

Task = dict[str, Any]
Builds = dict[tuple[str, str], list[str]]

_PLATFORMS = {
    "Linux": ["Ubuntu 22.04", "Red Hat Enterprise Linux 9", "Amazon Linux 2"],
    "Windows": ["Microsoft Windows Server 2019", "Microsoft Windows Server 2022"],
    "macOS": ["macOS 14"],
}


def make_tasks(n: int, *, seed: int = 1, prefix: str = "vm") -> list[Task]:
    """``n`` varied, valid tasks with unique name+semanticVersion (optional fields sometimes)."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    for i in range(n):
        platform = rng.choice(list(_PLATFORMS))
        task: Task = {
            "name": f"{prefix}-{i:04d}",
            "semanticVersion": f"{rng.randint(1, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 40)}",
            "platform": platform,
            "vmImportTaskId": f"import-ami-0{rng.getrandbits(64):016x}",
        }
        if rng.random() < 0.8:
            task["osVersion"] = rng.choice(_PLATFORMS[platform])
        if rng.random() < 0.4:
            task["description"] = f"Lift-and-shift of VM {i}, ünïcode and, commas"
        tags = {"Env": rng.choice(["prod", "staging", "dev"])}
        if rng.random() < 0.5:
            tags["Wave"] = str(1 + i // 30)
        task["tags"] = tags
        if rng.random() < 0.1:
            task["logGroupName"] = "/aws/imagebuilder/migration"
        tasks.append(task)
    return tasks


_CSV_FIELDS = ["name", "semanticVersion", "description", "platform", "osVersion"]


def write_csv(path: Path, tasks: Sequence[Task]) -> Path:
    """CSV with a ``tag:Env`` column and any other tags as a JSON ``tags`` cell."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [*_CSV_FIELDS, "vmImportTaskId", "clientToken", "tag:Env", "tags", "logGroupName"]
        )
        for task in tasks:
            tags = dict(task.get("tags", {}))
            env = tags.pop("Env", "")
            writer.writerow(
                [
                    *(task.get(f, "") for f in _CSV_FIELDS),
                    task["vmImportTaskId"],
                    task.get("clientToken", ""),
                    env,
                    json.dumps(tags) if tags else "",
                    task.get("logGroupName", ""),
                ]
            )
    return path


def write_jsonl(path: Path, tasks: Sequence[Task], *, shuffle_seed: int | None = None) -> Path:
    """JSON Lines, in another order when ``shuffle_seed`` is given."""
    ordered = list(tasks)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(ordered)
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in ordered), "utf-8")
    return path


def invoke(*args: str | Path, input: str | None = None) -> Result:
    """Run the real typer app in-process, as ``ibimport ARGS...`` would.

    The CLI sets a private umask for the files it writes; it is restored afterwards so that
    no other test in this process inherits it.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
    finally:
        os.umask(umask)


def stats(url: str) -> dict[str, Any]:
    """The emulator's counters, from ``GET /_emulator/stats``."""
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def import_requests(url: str) -> int:
    """ImportVmImage requests the emulator received (throttled and faulted ones included)."""
    return int(stats(url)["requests"].get("ImportVmImage", 0))


def boto_client(url: str) -> Any:
    return boto3.client(
        "imagebuilder",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )


_TRANSIENT = {"CallRateLimitExceededException", "ServiceException", "ServiceUnavailableException"}


def _call(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """One boto3 read, waiting out the emulator's throttling and faults (tests turn them on)."""
    for _ in range(200):
        try:
            return method(**kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] not in _TRANSIENT:
                raise
        except (ConnectionClosedError, HTTPClientError):
            pass
        time.sleep(0.05)
    raise AssertionError("the emulator kept failing a read 200 times")


def builds(url: str) -> Builds:
    """Every build the emulator holds, by (name, version): ListImages + ListImageBuildVersions."""
    client = boto_client(url)
    found: Builds = {}
    kwargs: dict[str, Any] = {"owner": "Self", "maxResults": 25}
    while True:
        page = _call(client.list_images, **kwargs)
        for version in page.get("imageVersionList", []):
            arns = found.setdefault((version["name"], version["version"]), [])
            build_kwargs: dict[str, Any] = {"imageVersionArn": version["arn"], "maxResults": 25}
            while True:
                builds_page = _call(client.list_image_build_versions, **build_kwargs)
                arns.extend(s["arn"] for s in builds_page.get("imageSummaryList", []))
                if not builds_page.get("nextToken"):
                    break
                build_kwargs["nextToken"] = builds_page["nextToken"]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    client.close()
    return found


def read_results(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_report(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def run_args(manifest: Path, url: str, *extra: str | Path) -> list[str | Path]:
    """``run`` against ``url`` with outputs beside the manifest and no progress output."""
    return [
        "run",
        manifest,
        "--endpoint-url",
        url,
        "--region",
        REGION,
        "--progress",
        "off",
        *extra,
    ]


def expected_tokens(manifest: Path) -> dict[tuple[str, str], str]:
    """The clientToken ibimport must send for each valid row of ``manifest``."""
    return {
        (r.task.name, r.task.semanticVersion): client_token(r.task)
        for r in read_manifest(manifest)
        if r.task is not None
    }


def assert_imported_exactly_once(
    url: str,
    manifest: Path,
    *,
    results: list[dict[str, str]],
    report: dict[str, Any],
    before: dict[str, Any] | None = None,
) -> Builds:
    """Every valid row has exactly one build, and the results and report say so truthfully.

    The results must name the very build the service holds (ARN from ListImageBuildVersions)
    and carry the deterministic token; the report's call counts must match what the
    emulator received during this run (``before``: the emulator's stats when it started).
    """
    tokens = expected_tokens(manifest)
    counters = stats(url)  # before the listing below adds its own requests
    held = builds(url)
    assert set(held) == set(tokens), "the service holds other images than the manifest's"
    twins = {key: arns for key, arns in held.items() if len(arns) != 1}
    assert not twins, f"imported more than once: {twins}"
    assert counters["duplicateBuilds"] == 0
    assert counters["images"] == len(tokens)

    assert [int(r["row"]) for r in results] == list(range(1, len(results) + 1))
    done = [r for r in results if r["status"] in ("succeeded", "exists")]
    assert len(done) == len(tokens), [r for r in results if r not in done][:3]
    for r in done:
        key = (r["name"], r["semanticVersion"])
        assert r["imageArn"] == held[key][0], r
        assert r["clientToken"] == tokens[key], r
        assert int(r["attempts"]) >= 1
        assert r["requestId"], r
    assert report["totals"]["rows"] == len(results)
    assert report["totals"]["succeeded"] + report["totals"]["exists"] == len(tokens)
    earlier = before or {"requests": {}, "throttled": 0}
    sent = counters["requests"].get("ImportVmImage", 0) - earlier["requests"].get(
        "ImportVmImage", 0
    )
    # aiohttp silently re-sends a PUT once when a kept-alive connection closes without an
    # answer (the emulator's "dropped" fault), so the server may see up to one request more
    # per drop than ibimport made calls.
    dropped = counters["dropped"] - earlier.get("dropped", 0)
    assert report["calls"] <= sent <= report["calls"] + dropped, (report["calls"], sent, dropped)
    assert report["throttled"] == counters["throttled"] - earlier["throttled"]
    assert report["calls"] == sum(int(r["attempts"]) for r in results)
    return held
