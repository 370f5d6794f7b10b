"""Helpers for the subprocess resume tests: run ``ibimport`` as a child, kill it, look inside.

The importer runs as its own process (so it can be killed with SIGKILL, SIGINT or SIGTERM)
against an emulator in another process (so the emulator outlives it and its counters tell
what was sent). Every wait is bounded; ``Children`` kills whatever a test left running.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import boto3
from botocore.config import Config
from integration_support import REGION

from ibimport.emulator import EmulatorConfig, EmulatorProcess

#: The console script of the interpreter running the tests (the project's venv).
IBIMPORT = str(Path(sys.executable).with_name("ibimport"))
ACCOUNT = "123456789012"
#: Generous bound on any one child process; tests normally finish in a few seconds.
RUN_TIMEOUT_S = 60.0

T = TypeVar("T")


def child_env() -> dict[str, str]:
    """The environment for an ``ibimport`` child: dummy credentials, no real AWS reachable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="AKIDIBIMPORTTEST",
        AWS_SECRET_ACCESS_KEY="ibimport-test-secret",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        COLUMNS="120",
    )
    return env


# --------------------------------------------------------------------- manifests


def task_row(i: int, *, variant: str = "") -> dict[str, str]:
    """Manifest row ``i`` (0-based); ``variant`` changes its content, and so its token."""
    return {
        "name": f"vm-{i:05d}",
        "semanticVersion": "1.0.0",
        "platform": "Linux",
        "vmImportTaskId": f"import-ami-{i:017x}",
        "description": f"resume test row {i}{variant}",
    }


def write_manifest(path: Path, rows: Sequence[dict[str, str]] | int) -> Path:
    """Write a CSV manifest: ``rows`` tasks (an int means ``task_row(0..rows-1)``)."""
    tasks = [task_row(i) for i in range(rows)] if isinstance(rows, int) else list(rows)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(tasks[0]))
        writer.writeheader()
        writer.writerows(tasks)
    return path


# --------------------------------------------------------------------- emulator


class Emulator:
    """An emulator child process with the counters these tests read."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.process = EmulatorProcess(config)

    def __enter__(self) -> Self:
        self.process.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.process.stop(timeout_s=10)

    @property
    def url(self) -> str:
        return self.process.url

    def reset(self) -> None:
        self.process.reset()

    def stats(self) -> dict[str, Any]:
        return self.process.stats()

    def imports(self) -> int:
        """ImportVmImage requests received so far (faulted and throttled ones included)."""
        return int(self.stats()["requests"].get("ImportVmImage", 0))

    def builds_per_row(self, names: Sequence[str], version: str = "1.0.0") -> dict[str, int]:
        """Builds of each ``name``/``version``, counted through ListImageBuildVersions."""
        client = boto3.client(
            "imagebuilder",
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="AKIDIBIMPORTTEST",
            aws_secret_access_key="ibimport-test-secret",
            # The emulator's faults hit these calls too; they are read-only, so retry freely.
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 20}, max_pool_connections=16
            ),
        )

        def count(name: str) -> int:
            arn = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image/{name}/{version}"
            builds = 0
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"imageVersionArn": arn}
                if token:
                    kwargs["nextToken"] = token
                try:
                    page = client.list_image_build_versions(**kwargs)
                except client.exceptions.ResourceNotFoundException:
                    return 0
                builds += len(page.get("imageSummaryList", []))
                token = page.get("nextToken")
                if not token:
                    return builds

        try:
            with ThreadPoolExecutor(max_workers=16) as pool:
                return dict(zip(names, pool.map(count, names), strict=True))
        finally:
            client.close()


# --------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class Finished:
    """A child that has exited: its code, output and how long it ran."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def assert_clean(self) -> None:
        """No traceback, whatever the exit code: every failure must be a message."""
        assert "Traceback" not in self.stderr, self.stderr
        assert "Traceback" not in self.stdout, self.stdout


class Child:
    """One ``ibimport`` child process, its output going to files (no pipe can fill up)."""

    def __init__(self, args: Sequence[str], *, cwd: Path, name: str) -> None:
        self.out_path = cwd / f"{name}.stdout"
        self.err_path = cwd / f"{name}.stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                list(args),
                cwd=cwd,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stderr_text(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> Finished:
        """Wait for the exit (killing the child if it takes longer than ``timeout``)."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(
                f"ibimport did not exit within {timeout} s; stderr:\n{self.stderr_text()}"
            ) from None
        return Finished(
            returncode=self.popen.returncode,
            stdout=self.out_path.read_text(encoding="utf-8", errors="replace"),
            stderr=self.stderr_text(),
            seconds=time.monotonic() - self.started,
        )

    def kill(self) -> None:
        if self.running():
            self.popen.kill()
        self.popen.wait()


class Children:
    """Starts children for one test and kills any still running at its end."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self._children: list[Child] = []

    def start(self, *args: str) -> Child:
        """``ibimport ARGS...`` in the background."""
        return self.spawn([IBIMPORT, *args])

    def spawn(self, command: Sequence[str]) -> Child:
        child = Child(command, cwd=self.cwd, name=f"child-{len(self._children) + 1}")
        self._children.append(child)
        return child

    def run(self, *args: str, timeout: float = RUN_TIMEOUT_S) -> Finished:
        """``ibimport ARGS...`` to completion."""
        return self.start(*args).wait(timeout)

    def close(self) -> None:
        for child in self._children:
            with contextlib.suppress(OSError):
                child.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_args(manifest: Path, url: str, *extra: str) -> list[str]:
    """``run MANIFEST --endpoint-url URL --progress plain EXTRA...``."""
    return [
        "run",
        str(manifest),
        "--endpoint-url",
        url,
        "--region",
        REGION,
        "--progress",
        "plain",
        *extra,
    ]


# --------------------------------------------------------------------- journal and waiting


def journal_counts(path: Path) -> dict[str, int]:
    """Rows per state in a journal, read read-only; {} while it cannot be read yet."""
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return {}
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM rows GROUP BY state").fetchall())
    except sqlite3.Error:
        return {}  # not created yet, or mid-creation
    finally:
        conn.close()


def journal_integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a journal no process has open."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
        return str(result)
    finally:
        conn.close()


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.01
) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_for_done(
    journal: Path, child: Child, *, at_least: int, timeout: float = 30.0
) -> dict[str, int]:
    """Wait until the journal records ``at_least`` succeeded rows while ``child`` runs."""

    def probe() -> dict[str, int] | None:
        if not child.running():
            raise AssertionError(
                f"ibimport exited ({child.popen.returncode}) before {at_least} rows were "
                f"done:\n{child.stderr_text()}"
            )
        counts = journal_counts(journal)
        return counts if counts.get("succeeded", 0) >= at_least else None

    return wait_for(probe, timeout=timeout, what=f"{at_least} rows journalled as succeeded")


def signal_and_time(child: Child, signum: int, *, timeout: float = 30.0) -> tuple[Finished, float]:
    """Send ``signum`` and wait for the exit; returns the result and seconds from the signal."""
    sent = time.monotonic()
    child.signal(signum)
    finished = child.wait(timeout)
    return finished, time.monotonic() - sent


def kill9(child: Child) -> None:
    """SIGKILL, no cleanup at all; wait until the process is gone."""
    os.kill(child.pid, signal.SIGKILL)
    child.popen.wait(10)


def iter_names(rows: int) -> Iterator[str]:
    return (task_row(i)["name"] for i in range(rows))


#: A child that runs one batch through the library with the journal's fault hook armed:
#: it dies (os._exit(137), no cleanup) instead of making journal commit COMMITS+1, i.e.
#: between "sent" and "recorded". Arguments: MANIFEST ENDPOINT_URL COMMITS CONCURRENCY.
CRASH_DRIVER = """
import sys
from pathlib import Path

import anyio

from ibimport import BatchConfig, ClientSettings, RunSettings, default_output_paths, open_batch
from ibimport.journal import exit_after_commits

manifest, url = Path(sys.argv[1]), sys.argv[2]
commits, concurrency = int(sys.argv[3]), int(sys.argv[4])
journal_path, report_path, results_path = default_output_paths(manifest)
config = BatchConfig(
    manifest=manifest,
    run=RunSettings(concurrency=concurrency),
    client=ClientSettings(region="us-east-1", endpoint_url=url, max_pool_connections=concurrency),
    journal_path=journal_path,
    report_path=report_path,
    results_path=results_path,
)
batch = open_batch(config, fault_hook=exit_after_commits(commits))


async def main() -> None:
    await batch.run()


anyio.run(main)
print("the fault hook never fired", file=sys.stderr)
sys.exit(3)
"""


def crash_driver(
    children: Children, manifest: Path, url: str, *, commits: int, concurrency: int
) -> Child:
    """Start ``CRASH_DRIVER`` in the background."""
    return children.spawn(
        [sys.executable, "-c", CRASH_DRIVER, str(manifest), url, str(commits), str(concurrency)]
    )
