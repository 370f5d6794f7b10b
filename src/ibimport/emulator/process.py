"""``EmulatorProcess``: an emulator in a child process, so that it has a core of its own.

Benchmarks use it; the child is ``python -m ibimport.emulator`` started with the argv
``cli_args`` generates from the config's knobs (a secret travels in the environment,
never on the command line). Loads no aiohttp: the child does.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.request
from types import TracebackType
from typing import Any, Self

from ibimport.emulator.config import EmulatorConfig, knobs
from ibimport.emulator.defaults import RESET_PATH, STATS_PATH

__all__ = ["EmulatorProcess", "cli_args", "cli_env"]


def cli_args(config: EmulatorConfig) -> list[str]:
    """The ``python -m ibimport.emulator`` arguments that reproduce ``config``."""
    args: list[str] = []
    for item in knobs():
        value = getattr(config, item.name)
        if item.knob.secret or value is None:
            continue
        if isinstance(value, bool):
            args.append(f"--{item.flag}" if value else f"--no-{item.flag}")
        elif isinstance(value, tuple):  # a repeatable option
            for each in value:
                args += [f"--{item.flag}", str(each)]
        else:
            args += [f"--{item.flag}", str(value)]
    return args


def cli_env(config: EmulatorConfig) -> dict[str, str]:
    """The environment variables that carry the knobs ``cli_args`` leaves out (secrets)."""
    return {
        item.knob.envvar: str(getattr(config, item.name))
        for item in knobs()
        if item.knob.secret and item.knob.envvar is not None
    }


class EmulatorProcess:
    """An emulator in a child process (benchmarks).

    Same interface as ``EmulatorServer``; ``cpus`` pins the child with ``taskset -c``.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        cpus: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.cpus = cpus
        self.python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The endpoint URL the child printed."""
        if self._url is None:
            raise RuntimeError("the emulator is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self, *, timeout_s: float = 30.0) -> Self:
        """Start the child and wait for the line that names its URL."""
        if self._process is not None:
            raise RuntimeError("the emulator is already running")
        command = [self.python, "-m", "ibimport.emulator", *cli_args(self.config)]
        if self.cpus is not None:
            command = ["taskset", "-c", self.cpus, *command]
        env = {**os.environ, **cli_env(self.config)}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
        )
        self._process = process
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        line = process.stdout.readline().decode() if ready else ""
        found = re.search(r"http://\S+", line)
        if found is None:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line.strip() or 'no output'}")
        self._url = found.group(0)
        return self

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """SIGTERM the child (it saves its state) and wait for it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._process = None
        self._url = None

    def _request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The counters, read from ``GET /_emulator/stats``."""
        result: dict[str, Any] = self._request("GET", STATS_PATH)
        return result

    def reset(self) -> None:
        """Forget everything, through ``POST /_emulator/reset``."""
        self._request("POST", RESET_PATH)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
