"""The emulator's HTTP server: aiohttp, authentication, knobs, statistics, start and stop.

``serve`` runs one emulator on the current event loop until told to stop. Two handles
wrap it: ``EmulatorServer`` runs it in a background thread of this process (tests),
``EmulatorProcess`` in a child process (benchmarks, so the server has its own core).
The hot path is kept lean because every benchmark in the project runs against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ibimport._files import atomic_private_file
from ibimport.emulator.defaults import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, SECRET_ENV
from ibimport.emulator.models import ApiException, Clock, ImageBuilderBackend, Scope
from ibimport.emulator.responses import OPERATIONS, Call, render_error
from ibimport.emulator.sigv4 import Credentials, verify
from ibimport.errors import ConfigError

# SigV4: "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/imagebuilder/aws4_request, ..."
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/,\s]+/([^/,\s]+)/")
_ACCOUNT_KEY = re.compile(r"^[0-9]{12}$")
_JSON = "application/json"
_STATS_PATH = "/_emulator/stats"
_RESET_PATH = "/_emulator/reset"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    """Everything that shapes one emulator: where it listens and how it misbehaves.

    ``rate``/``burst`` meter each operation with a token bucket (None: unlimited);
    ``fault_rate`` is the share of calls that fail with 500/503, of which ``drop_share``
    instead lose their answer (the connection closes after the call took effect).
    The network faults of the fault matrix, each an independent share of the calls that
    pass the meter: ``drop_before_share`` closes the connection before the call takes
    effect, ``truncate_share`` sends the headers and half the body of a call that took
    effect and closes, ``slow_share`` answers a call that took effect ``slow_ms`` late.
    ``verify_signatures`` checks SigV4 against ``access_key_id``/``secret_access_key``
    (by default the throwaway pair ``ibimport run --local`` signs with).
    """

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    account_id: str = "123456789012"
    rate: float | None = None
    burst: int | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    drop_share: float = 0.1
    seed: int | None = None
    token_ttl_s: float = 86400.0
    available_after_s: float = 0.0
    state_file: Path | None = None
    state_save_interval_s: float = 5.0
    drop_before_share: float = 0.0
    truncate_share: float = 0.0
    slow_share: float = 0.0
    slow_ms: float = 0.0
    verify_signatures: bool = False
    access_key_id: str = LOCAL_ACCESS_KEY_ID
    secret_access_key: str = field(default=LOCAL_SECRET_ACCESS_KEY, repr=False)

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ConfigError(f"rate must be positive, got {self.rate}")
        if self.burst is not None and self.burst < 1:
            raise ConfigError(f"burst must be at least 1, got {self.burst}")
        for name in (
            "fault_rate",
            "drop_share",
            "drop_before_share",
            "truncate_share",
            "slow_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        for name in ("latency_ms", "jitter_ms", "token_ttl_s", "available_after_s", "slow_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not _ACCOUNT_KEY.match(self.account_id):
            raise ConfigError(f"account_id must be 12 digits, got {self.account_id!r}")
        if self.verify_signatures and not (self.access_key_id and self.secret_access_key):
            raise ConfigError("verify_signatures needs an access key id and a secret access key")

    @property
    def effective_burst(self) -> int:
        """The bucket size: ``burst``, or one second's worth of ``rate``."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate or 1))


class TokenBucket:
    """Classic token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("burst", "clock", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, *, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def take(self) -> bool:
        """Spend a token if one is there."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Emulator:
    """One emulator's request handling and counters; the aiohttp handler is ``handle``."""

    def __init__(self, config: EmulatorConfig, *, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.backend = ImageBuilderBackend(
            clock=clock, token_ttl_s=config.token_ttl_s, available_after_s=config.available_after_s
        )
        self.rng = random.Random(config.seed)
        self.buckets: dict[str, TokenBucket] = {}
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.throttled = 0
        self.faults = 0
        self.dropped = 0
        self.dropped_before = 0
        self.truncated = 0
        self.slowed = 0
        self._credentials = Credentials(config.access_key_id, config.secret_access_key)
        self._internal: dict[tuple[str, str], Callable[[], web.Response]] = {
            ("GET", _STATS_PATH): lambda: _json_response(200, json.dumps(self.stats()).encode()),
            ("POST", _RESET_PATH): self._reset_response,
        }

    def stats(self) -> dict[str, Any]:
        """The counters ``GET /_emulator/stats`` reports."""
        backend = self.backend
        return {
            "requests": dict(self.requests),
            "throttled": self.throttled,
            "faults": self.faults,
            "dropped": self.dropped,
            "droppedBefore": self.dropped_before,
            "truncated": self.truncated,
            "slowed": self.slowed,
            "errors": dict(self.errors),
            "images": backend.images,
            "duplicateBuilds": backend.duplicate_builds,
            "idempotentReplays": backend.idempotent_replays,
        }

    def reset(self) -> None:
        """Forget all state and counters, and refill the buckets."""
        self.backend.reset()
        self.buckets.clear()
        self.requests.clear()
        self.errors.clear()
        self.throttled = self.faults = self.dropped = 0
        self.dropped_before = self.truncated = self.slowed = 0
        self.rng = random.Random(self.config.seed)

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
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return self._error(
                ApiException(
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                    status=403,
                )
            )
        credential = _CREDENTIAL.search(authorization)
        if credential is None:
            return self._error(
                ApiException(
                    "IncompleteSignatureException",
                    "Authorization header requires 'Credential' parameter.",
                    status=403,
                )
            )
        config = self.config
        try:
            body = await request.read()
        except ConnectionResetError:
            # The client went away mid-request (killed, say): nothing happened and
            # there is nobody to answer; a server takes that in its stride.
            return _json_response(400, b"{}")
        if config.verify_signatures:
            try:
                verify(
                    credentials=self._credentials,
                    method=request.method,
                    raw_path=request.raw_path,
                    headers=request.headers,
                    header_values=lambda header: request.headers.getall(header, ()),
                    body=body,
                )
            except ApiException as exc:
                return self._error(exc)
        if operation is None:
            return self._error(
                ApiException("UnknownOperationException", "Unknown operation.", status=404)
            )
        name, handler = operation
        requests = self.requests
        requests[name] = requests.get(name, 0) + 1
        if config.latency_ms or config.jitter_ms:
            await asyncio.sleep((config.latency_ms + self.rng.random() * config.jitter_ms) / 1000.0)
        if config.rate is not None and not self._bucket(name).take():
            self.throttled += 1
            return self._error(
                ApiException(
                    "CallRateLimitExceededException",
                    f"Rate exceeded for operation {name}.",
                    status=429,
                )
            )
        drop = False
        if config.fault_rate:
            draw = self.rng.random()
            if draw < config.fault_rate:
                self.faults += 1
                share = draw / config.fault_rate
                if share < config.drop_share:
                    drop = True
                elif share < config.drop_share + (1.0 - config.drop_share) / 2:
                    return self._error(
                        ApiException("ServiceException", "An internal error occurred.", status=500)
                    )
                else:
                    return self._error(
                        ApiException(
                            "ServiceUnavailableException",
                            "The service is unavailable. Try again later.",
                            status=503,
                        )
                    )
        if config.drop_before_share and self.rng.random() < config.drop_before_share:
            # The connection resets before the call takes effect: nothing happened.
            self.dropped_before += 1
            _abort(request)
            return _json_response(500, b"{}")  # never reaches the client
        access_key, region = credential.groups()
        account = access_key if _ACCOUNT_KEY.match(access_key) else config.account_id
        request_id = str(uuid.uuid4())
        call = Call(
            scope=Scope(account, region),
            request_id=request_id,
            body=body,
            query=request.query,
        )
        try:
            answer = handler(self.backend, call)
        except ApiException as exc:
            response = self._error(exc, request_id=request_id)
        else:
            response = _json_response(200, answer, request_id=request_id)
        if drop:
            # The call took effect but its answer is lost: the client must retry safely.
            self.dropped += 1
            _abort(request)
            return response
        if config.truncate_share and self.rng.random() < config.truncate_share:
            self.truncated += 1
            return await _send_truncated(request, response)
        if config.slow_share and self.rng.random() < config.slow_share:
            # The call took effect; its answer arrives after the client may have given up.
            self.slowed += 1
            await asyncio.sleep(config.slow_ms / 1000.0)
        return response

    def _bucket(self, operation: str) -> TokenBucket:
        bucket = self.buckets.get(operation)
        if bucket is None:
            rate = self.config.rate or 1.0
            bucket = TokenBucket(rate, self.config.effective_burst, clock=self.clock)
            self.buckets[operation] = bucket
        return bucket

    def _error(self, exc: ApiException, *, request_id: str | None = None) -> web.Response:
        status, error_type, body = render_error(exc)
        self.errors[error_type] = self.errors.get(error_type, 0) + 1
        response = _json_response(status, body, request_id=request_id or str(uuid.uuid4()))
        response.headers["x-amzn-ErrorType"] = error_type
        return response


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _send_truncated(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Send the status, the headers and half of the body announced by Content-Length; close."""
    body = response.body
    assert isinstance(body, bytes)
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    _abort(request)
    return stream


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


def cli_args(config: EmulatorConfig) -> list[str]:
    """The ``python -m ibimport.emulator`` arguments that reproduce ``config``."""
    args = [
        "--host", config.host,
        "--port", str(config.port),
        "--region", config.region,
        "--account-id", config.account_id,
        "--latency-ms", repr(config.latency_ms),
        "--jitter-ms", repr(config.jitter_ms),
        "--fault-rate", repr(config.fault_rate),
        "--drop-share", repr(config.drop_share),
        "--token-ttl", repr(config.token_ttl_s),
        "--available-after-s", repr(config.available_after_s),
        "--state-save-interval-s", repr(config.state_save_interval_s),
        "--drop-before-share", repr(config.drop_before_share),
        "--truncate-share", repr(config.truncate_share),
        "--slow-share", repr(config.slow_share),
        "--slow-ms", repr(config.slow_ms),
        "--access-key-id", config.access_key_id,
    ]  # fmt: skip
    if config.verify_signatures:
        args.append("--verify-signatures")
    if config.rate is not None:
        args += ["--rate", repr(config.rate)]
    if config.burst is not None:
        args += ["--burst", str(config.burst)]
    if config.seed is not None:
        args += ["--seed", str(config.seed)]
    if config.state_file is not None:
        args += ["--state", str(config.state_file)]
    return args


class EmulatorProcess:
    """An emulator in a child process, so that it has a core of its own (benchmarks).

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
        env = {**os.environ, SECRET_ENV: self.config.secret_access_key}
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
        result: dict[str, Any] = self._request("GET", _STATS_PATH)
        return result

    def reset(self) -> None:
        """Forget everything, through ``POST /_emulator/reset``."""
        self._request("POST", _RESET_PATH)

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


__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorProcess",
    "EmulatorServer",
    "TokenBucket",
    "cli_args",
    "run_until_signalled",
    "serve",
]
