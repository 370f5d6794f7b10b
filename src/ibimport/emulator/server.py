"""The emulator's HTTP server: aiohttp wiring, the emulator's own endpoints, start and stop.

``Emulator.handle`` takes each request through the other modules in turn: ``auth`` (who
calls, and ``--verify-signatures``), ``faults`` (quota and injected misbehaviour),
``responses`` (the operation), then ``faults`` again for how the answer travels.
``serve`` runs one emulator on the current event loop until told to stop;
``EmulatorServer`` runs it in a background thread of this process (tests), and
``process.EmulatorProcess`` in a child process. The hot path is kept lean because every
benchmark in the project runs against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ibimport._files import atomic_private_file
from ibimport.emulator.auth import Credentials, caller, scope_of, verify
from ibimport.emulator.config import EmulatorConfig
from ibimport.emulator.defaults import RESET_PATH, STATS_PATH
from ibimport.emulator.exceptions import ServiceError, UnknownOperationException
from ibimport.emulator.faults import Faults, abort
from ibimport.emulator.models import Clock, ImageBuilderBackend
from ibimport.emulator.responses import OPERATIONS, Call, render_error
from ibimport.errors import ConfigError

_JSON = "application/json"


class Emulator:
    """One emulator's request handling and counters; the aiohttp handler is ``handle``."""

    def __init__(self, config: EmulatorConfig, *, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.backend = ImageBuilderBackend(
            clock=clock, token_ttl_s=config.token_ttl_s, available_after_s=config.available_after_s
        )
        self.faults = Faults(config, clock=clock)
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._credentials = Credentials(config.access_key_id, config.secret_access_key)
        self._internal: dict[tuple[str, str], Callable[[], web.Response]] = {
            ("GET", STATS_PATH): lambda: _json_response(200, json.dumps(self.stats()).encode()),
            ("POST", RESET_PATH): self._reset_response,
        }

    def stats(self) -> dict[str, Any]:
        """The counters ``GET /_emulator/stats`` reports."""
        backend, faults = self.backend, self.faults
        return {
            "requests": dict(self.requests),
            "throttled": faults.throttled,
            "faults": faults.faults,
            "dropped": faults.dropped,
            "droppedBefore": faults.dropped_before,
            "truncated": faults.truncated,
            "slowed": faults.slowed,
            "errors": dict(self.errors),
            "images": backend.images,
            "duplicateBuilds": backend.duplicate_builds,
            "idempotentReplays": backend.idempotent_replays,
        }

    def reset(self) -> None:
        """Forget all state and counters, and refill the buckets."""
        self.backend.reset()
        self.faults.reset()
        self.requests.clear()
        self.errors.clear()

    def _reset_response(self) -> web.Response:
        self.reset()
        return _json_response(200, b"{}")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Authenticate, meter, maybe misbehave, then answer one request."""
        route = (request.method, request.path)
        operation = OPERATIONS.get(route)
        if operation is None:
            internal = self._internal.get(route)
            if internal is not None:
                return internal()
        try:
            access_key, region = caller(request.headers.get("Authorization"))
        except ServiceError as exc:
            return self._error(exc)
        config = self.config
        try:
            body = await request.read()
        except ConnectionResetError:
            # The client went away mid-request (killed, say): nothing happened and
            # there is nobody to answer; a server takes that in its stride.
            return _json_response(400, b"{}")
        faults = self.faults
        try:
            if config.verify_signatures:
                verify(
                    credentials=self._credentials,
                    method=request.method,
                    raw_path=request.raw_path,
                    headers=request.headers,
                    header_values=lambda header: request.headers.getall(header, ()),
                    body=body,
                )
            if operation is None:
                raise UnknownOperationException()
            name, handler = operation
            requests = self.requests
            requests[name] = requests.get(name, 0) + 1
            drop = await faults.before_call(name)
        except ServiceError as exc:
            return self._error(exc)
        if faults.drops_before():
            abort(request)
            return _json_response(500, b"{}")  # never reaches the client
        request_id = str(uuid.uuid4())
        call = Call(
            scope=scope_of(access_key, region, default_account=config.account_id),
            request_id=request_id,
            body=body,
            query=request.query,
        )
        try:
            answer = handler(self.backend, call)
        except ServiceError as exc:
            response = self._error(exc, request_id=request_id)
        else:
            response = _json_response(200, answer, request_id=request_id)
        return await faults.deliver(request, response, drop=drop)

    def _error(self, exc: ServiceError, *, request_id: str | None = None) -> web.Response:
        status, error_type, body = render_error(exc)
        self.errors[error_type] = self.errors.get(error_type, 0) + 1
        response = _json_response(status, body, request_id=request_id or str(uuid.uuid4()))
        response.headers["x-amzn-ErrorType"] = error_type
        return response


def _json_response(status: int, body: bytes, *, request_id: str | None = None) -> web.Response:
    headers = {"Content-Type": _JSON}
    if request_id is not None:
        headers["x-amzn-RequestId"] = request_id
    return web.Response(status=status, body=body, headers=headers)


def _load_state(emulator: Emulator, path: Path) -> None:
    if not path.exists():
        return
    try:
        emulator.backend.load_state(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load emulator state from {path}: {exc}") from exc


def _write_state(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_private_file(path) as handle:
        json.dump(data, handle, separators=(",", ":"))


async def _save_periodically(emulator: Emulator, path: Path, *, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        backend = emulator.backend
        if backend.dirty:
            backend.dirty = False
            # Snapshot on the loop (consistent), serialise and write off it.
            await loop.run_in_executor(None, _write_state, path, backend.to_state())


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
        _load_state(emulator, config.state_file)
    runner = web.ServerRunner(web.Server(emulator.handle, access_log=None), handle_signals=False)
    await runner.setup()
    saver: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        port = _bound_port(runner)
        if config.state_file is not None and config.state_save_interval_s > 0:
            saver = asyncio.create_task(
                _save_periodically(
                    emulator, config.state_file, interval_s=config.state_save_interval_s
                )
            )
        on_ready(emulator, f"http://{_url_host(config.host)}:{port}")
        await stop.wait()
    finally:
        if saver is not None:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
        await runner.cleanup()
        if config.state_file is not None:
            _write_state(config.state_file, emulator.backend.to_state())


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


__all__ = ["Emulator", "EmulatorServer", "run_until_signalled", "serve"]
