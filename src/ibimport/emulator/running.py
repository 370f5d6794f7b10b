"""Running one emulator: on the current event loop until told to stop (``serve``), on a
thread of this process (``EmulatorServer``: tests and demos), or until SIGINT or SIGTERM
(``run_until_signalled``: ``ibimport emulator``, which ``process.EmulatorProcess`` runs
in a child process).

Apart from ``server`` because request handling knows nothing of event loops, threads or
signals; here ``serve`` loads the ``--state`` (``statefile``) before the first request,
keeps it saved while serving, and writes it once more on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ibimport.emulator.config import EmulatorConfig
from ibimport.emulator.core import Clock
from ibimport.emulator.server import Emulator
from ibimport.emulator.statefile import StateSaver, check_state_path, load_state, write_state

__all__ = ["EmulatorServer", "run_until_signalled", "serve"]


async def serve(
    config: EmulatorConfig,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[Emulator, str], None],
    clock: Clock = time.time,
) -> None:
    """Serve ``config`` on the running loop until ``stop`` is set, then save the state."""
    emulator = Emulator(config, clock=clock)
    if config.state_file is not None:
        check_state_path(config.state_file)
        load_state(emulator.backend, config.state_file)
    runner = web.ServerRunner(web.Server(emulator.handle, access_log=None), handle_signals=False)
    await runner.setup()
    saver: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        port = _bound_port(runner)
        if config.state_file is not None:
            emulator.saver = StateSaver(
                emulator.backend, config.state_file, interval_s=config.state_save_interval_s
            )
            saver = asyncio.create_task(emulator.saver.run())
        on_ready(emulator, f"http://{_url_host(config.host)}:{port}")
        await stop.wait()
    finally:
        if saver is not None:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
        await runner.cleanup()
        if config.state_file is not None:
            write_state(config.state_file, emulator.backend.to_state())


def _bound_port(runner: web.ServerRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the emulator is not listening")


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class EmulatorServer:
    """An emulator on a background thread with its own event loop, for tests and demos."""

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock = time.time) -> None:
        self.config = config or EmulatorConfig()
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._emulator: Emulator | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The endpoint URL, e.g. http://127.0.0.1:PORT."""
        if self._url is None:
            raise RuntimeError("the emulator is not running")
        return self._url

    def start(self, *, timeout_s: float = 10.0) -> Self:
        """Start listening; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="ibimport-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()

        def ready(emulator: Emulator, url: str) -> None:
            self._emulator = emulator
            self._url = url
            self._ready.set()

        await serve(self.config, stop=self._stop, on_ready=ready, clock=self._clock)

    def stop(self) -> None:
        """Stop serving, save the state file if any, and join the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        self._thread = self._loop = self._stop = self._emulator = None
        self._url = None
        if self._error is not None:
            raise self._error

    def _call(self, action: Callable[[Emulator], Any]) -> Any:
        loop, emulator = self._loop, self._emulator
        if loop is None or emulator is None:
            raise RuntimeError("the emulator is not running")

        async def on_loop() -> Any:
            return action(emulator)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /_emulator/stats``."""
        result: dict[str, Any] = self._call(Emulator.stats)
        return result

    def reset(self) -> None:
        """Forget all images, tokens and counters."""
        self._call(Emulator.reset)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def run_until_signalled(config: EmulatorConfig, *, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM: what ``ibimport emulator`` does."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(config, stop=stop, on_ready=lambda _emulator, url: on_ready(url))
