"""The emulator's HTTP server: aiohttp wiring, the emulator's own endpoints, start and stop.

``SERVICES`` is the table of what is served: each service is a sub-package laid out like
moto's (``<service>/models.py`` its state, ``<service>/responses.py`` its wire format and
the ``RestService`` or ``QueryService`` that describes it), and a request finds its
service here: a REST-JSON call by its route, a query-protocol call (a form POST to
``/``) by its Action, an unknown Action by the credential scope's service. Each service
acts on the backend ``Emulator.backends`` holds under its signing name, and its errors
take that service's codes and shape.
``Emulator.handle`` takes each request through the other modules in turn: ``auth`` (who
calls, and ``--verify-signatures``), ``faults`` (quota and injected misbehaviour), the
service's handler, then ``faults`` again for how the answer travels. Each call acts in the
(account, region) ``sts.models.Identities`` reads from its access key and credential scope.
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
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ibimport._files import atomic_private_file
from ibimport.emulator.auth import Credentials, caller, signing_service, verify
from ibimport.emulator.config import EmulatorConfig
from ibimport.emulator.core import Clock, Scope
from ibimport.emulator.defaults import RESET_PATH, STATS_PATH
from ibimport.emulator.ec2.models import ImportTasks, load_import_tasks
from ibimport.emulator.ec2.responses import EC2
from ibimport.emulator.exceptions import (
    RequestEntityTooLargeException,
    ServiceError,
    UnknownOperationException,
)
from ibimport.emulator.faults import Faults, abort
from ibimport.emulator.imagebuilder.models import ImageBuilderBackend
from ibimport.emulator.imagebuilder.paging import Pager
from ibimport.emulator.imagebuilder.responses import IMAGEBUILDER
from ibimport.emulator.permissions import Permissions
from ibimport.emulator.query import QueryCall, QueryService, is_query, parse_form
from ibimport.emulator.rest import Call, Handler, RestService, render_error
from ibimport.emulator.sts.models import Accounts, Identities, load_accounts
from ibimport.emulator.sts.responses import STS
from ibimport.errors import ConfigError

_JSON = "application/json"
_XML = "text/xml"
#: Every service served. A new one is a sub-package, its backend in ``Emulator.backends``
#: under its signing name, and a row here.
SERVICES: tuple[RestService | QueryService, ...] = (IMAGEBUILDER, EC2, STS)
#: REST route (method, path) -> its service, operation name and handler.
_ROUTES: dict[tuple[str, str], tuple[RestService, str, Handler]] = {
    route: (service, name, handler)
    for service in SERVICES
    if isinstance(service, RestService)
    for route, (name, handler) in service.operations.items()
}
#: The REST service that answers a route nobody serves (UnknownOperationException).
_REST_FALLBACK = IMAGEBUILDER
#: Query-protocol Action -> its service; an unknown Action goes by the signing service.
_QUERY_SERVICES = {
    action: service
    for service in SERVICES
    if isinstance(service, QueryService)
    for action in service.actions
}
_BY_SIGNING_NAME = {s.signing_name: s for s in SERVICES if isinstance(s, QueryService)}


class Emulator:
    """One emulator's request handling and counters; the aiohttp handler is ``handle``."""

    def __init__(self, config: EmulatorConfig, *, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        listed = None if config.import_tasks is None else load_import_tasks(config.import_tasks)
        self.tasks = ImportTasks(
            clock=clock,
            listed=listed,
            shares=config.task_shares,
            seed=config.seed,
            active_s=config.task_active_s,
        )
        accounts = Accounts() if config.accounts is None else load_accounts(config.accounts)
        self.identities = Identities(
            default_account=config.account_id,
            accounts=accounts.keys,
            roles=accounts.roles,
            base=Credentials(config.access_key_id, config.secret_access_key),
            clock=clock,
        )
        self.permissions = Permissions(config.denials)
        self.backend = ImageBuilderBackend(
            clock=clock,
            token_ttl_s=config.token_ttl_s,
            available_after_s=config.available_after_s,
            task_outcome=self.tasks.outcome,
            list_delay_s=config.list_delay_s,
            pager=Pager(short_share=config.short_pages, seed=config.seed),
        )
        self.backend.companions.update(importTasks=self.tasks, credentials=self.identities)
        self.faults = Faults(config, clock=clock)
        self.requests: dict[str, int] = {}
        self.requests_by_region: dict[str, dict[str, int]] = {}
        self.errors: dict[str, int] = {}
        self._regions = config.served_regions
        #: Each service's backend, under its signing name (``SERVICES``).
        self.backends: dict[str, object] = {
            IMAGEBUILDER.signing_name: self.backend,
            EC2.signing_name: self.tasks,
            STS.signing_name: self.identities,
        }
        #: Set by ``serve`` with ``--state``: answers that changed the state wait for it.
        self.saver: StateSaver | None = None
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
            "reimportsOverFailed": backend.reimports_over_failed,
            "idempotentReplays": backend.idempotent_replays,
            "shortPages": backend.pager.short_pages,
            "regions": self._region_stats(),
        }

    def _region_stats(self) -> dict[str, dict[str, Any]]:
        """Per region: requests by operation, throttled calls, images, duplicate builds."""
        backend, faults = self.backend, self.faults
        regions = set(self.requests_by_region) | set(backend.images_by_region)
        return {
            region: {
                "requests": dict(self.requests_by_region.get(region, {})),
                "throttled": faults.throttled_by_region.get(region, 0),
                "images": backend.images_by_region.get(region, 0),
                "duplicateBuilds": backend.duplicates_by_region.get(region, 0),
                "reimportsOverFailed": backend.reimports_by_region.get(region, 0),
            }
            for region in sorted(regions)
        }

    def _count(self, name: str, region: str) -> None:
        requests = self.requests
        requests[name] = requests.get(name, 0) + 1
        by_region = self.requests_by_region.get(region)
        if by_region is None:
            by_region = self.requests_by_region[region] = {}
        by_region[name] = by_region.get(name, 0) + 1

    def reset(self) -> None:
        """Forget all state and counters, and refill the buckets."""
        self.backend.reset()
        self.faults.reset()
        self.requests.clear()
        self.requests_by_region.clear()
        self.errors.clear()

    def _reset_response(self) -> web.Response:
        self.reset()
        return _json_response(200, b"{}")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Authenticate, meter, maybe misbehave, then answer one request."""
        route = (request.method, request.path)
        operation = _ROUTES.get(route)
        if operation is None:
            internal = self._internal.get(route)
            if internal is not None:
                return internal()
            if is_query(request.method, request.path, request.content_type):
                return await self._handle_query(request)
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
        except web.HTTPRequestEntityTooLarge:
            # aiohttp would answer text/plain; AWS answers every error in its JSON shape.
            return self._error(
                RequestEntityTooLargeException(
                    f"The request body is larger than {request.client_max_size} bytes."
                )
            )
        faults = self.faults
        service = _REST_FALLBACK if operation is None else operation[0]
        try:
            if config.verify_signatures:
                self._verify(request, body, service=service.signing_name, regional=True)
            if operation is None:
                raise UnknownOperationException()
            _, name, handler = operation
            scope = self.identities.scope_of(access_key, region)
            self._count(name, region)
            if self.permissions:
                self._authorize(service.signing_name, name, access_key, scope)
            drop = await faults.before_call(name, scope=scope, service=service.signing_name)
        except ServiceError as exc:
            return self._error(exc)
        if faults.drops_before():
            abort(request)
            return _json_response(500, b"{}")  # never reaches the client
        request_id = str(uuid.uuid4())
        call = Call(
            scope=scope,
            request_id=request_id,
            body=body,
            query=request.query,
            access_key=access_key,
        )
        try:
            answer = handler(self.backends[service.signing_name], call)
        except ServiceError as exc:
            response = self._error(exc, request_id=request_id)
        else:
            if self.saver is not None and self.backend.dirty:
                await self.saver.saved()  # an OSError answers 500: the client retries
            response = _json_response(200, answer, request_id=request_id)
        return await faults.deliver(request, response, drop=drop)

    def _authorize(self, service: str, action: str, access_key: str, scope: Scope) -> None:
        identities = self.identities
        self.permissions.check(
            service=service,
            action=action,
            access_key=access_key,
            role_arn=identities.role_of(access_key),
            caller_arn=identities.arn_of(access_key, scope.account),
        )

    def _verify(
        self, request: web.BaseRequest, body: bytes, *, service: str, regional: bool
    ) -> None:
        verify(
            known=self.identities.known,
            service=service,
            method=request.method,
            raw_path=request.raw_path,
            headers=request.headers,
            header_values=lambda header: request.headers.getall(header, ()),
            body=body,
            regions=self._regions if regional else None,
            now=self.clock(),
        )

    async def _handle_query(self, request: web.BaseRequest) -> web.StreamResponse:
        """One EC2 or STS call: the same checks as Image Builder's, in that service's words."""
        authorization = request.headers.get("Authorization")
        try:
            body = await request.read()
        except ConnectionResetError:
            return _json_response(400, b"{}")
        except web.HTTPRequestEntityTooLarge:
            return self._query_error(
                EC2,
                RequestEntityTooLargeException(
                    f"The request body is larger than {request.client_max_size} bytes."
                ),
            )
        params = parse_form(body)
        action = params.get("Action", "")
        service = _QUERY_SERVICES.get(action) or _BY_SIGNING_NAME.get(
            signing_service(authorization) or "", EC2
        )
        faults = self.faults
        try:
            access_key, region = caller(authorization)
            if self.config.verify_signatures:
                self._verify(request, body, service=service.signing_name, regional=service.regional)
            handler = service.actions.get(action)
            if handler is None:
                raise service.unknown_action(action)
            scope = self.identities.scope_of(access_key, region)
            self._count(action, region)
            if self.permissions:
                self._authorize(service.signing_name, action, access_key, scope)
            drop = False
            if service.regional:  # STS, global, is not metered
                drop = await faults.before_call(action, scope=scope, service=service.signing_name)
        except ServiceError as exc:
            return self._query_error(service, exc)
        if faults.drops_before():
            abort(request)
            return _json_response(500, b"{}")  # never reaches the client
        request_id = str(uuid.uuid4())
        call = QueryCall(scope=scope, request_id=request_id, params=params, access_key=access_key)
        try:
            answer = handler(self.backends[service.signing_name], call)
        except ServiceError as exc:
            response = self._query_error(service, exc, request_id=request_id)
        else:
            if self.saver is not None and self.backend.dirty:
                await self.saver.saved()
            response = _xml_response(200, answer, request_id=request_id)
        return await faults.deliver(request, response, drop=drop)

    def _query_error(
        self, service: QueryService, exc: ServiceError, *, request_id: str | None = None
    ) -> web.Response:
        answered = service.translate(exc)
        self.errors[answered.code] = self.errors.get(answered.code, 0) + 1
        request_id = request_id or str(uuid.uuid4())
        status, body = service.render_error(answered, request_id)
        return _xml_response(status, body, request_id=request_id)

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


def _xml_response(status: int, body: bytes, *, request_id: str) -> web.Response:
    headers = {"Content-Type": _XML, "x-amzn-RequestId": request_id}
    return web.Response(status=status, body=body, headers=headers)


def _load_state(emulator: Emulator, path: Path) -> None:
    if not path.exists():
        return
    try:
        emulator.backend.load_state(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load emulator state from {path}: {exc}") from exc


def check_state_path(path: Path) -> None:
    """Refuse, before serving, a ``--state`` that the first save could not write: a folder,
    a file in a folder that does not exist (never created: a typo would make one), or a
    place this process cannot create files in."""
    if path.is_dir():
        raise ConfigError(f"--state {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"--state {path}: the folder {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--state {path}: cannot write in {folder}: {exc.strerror or exc}"
        ) from None


def _write_state(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    with atomic_private_file(path) as handle:
        json.dump(data, handle, separators=(",", ":"))


class StateSaver:
    """Makes ``--state`` durable: no answer tells of a change the file does not hold yet.

    An answer that changed the state (an image created, a token remembered) waits in
    ``saved()`` for a write that began after the change, so a SIGKILL of the emulator
    never loses an image a client was told about. Changes arriving while a write is under
    way share the next one (group commit); writes start at most every ``interval_s``, so a
    creating call's answer is delayed by up to ``interval_s`` plus one write.
    """

    def __init__(self, backend: ImageBuilderBackend, path: Path, *, interval_s: float) -> None:
        self._backend = backend
        self._path = path
        self._interval_s = max(0.0, interval_s)
        self._wanted = asyncio.Event()
        self._next: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[None] | None = None

    async def saved(self) -> None:
        """Return once the state as it is now is in the file."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        self._wanted.set()
        await asyncio.shield(self._next)

    async def run(self) -> None:
        """Write whenever asked, until cancelled; a last write then releases any waiter."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                waiting = self._writing = self._next
                self._next = None
                self._backend.dirty = False
                state = self._backend.to_state()  # snapshot on the loop: consistent
                try:
                    await loop.run_in_executor(None, _write_state, self._path, state)
                except OSError as exc:
                    if waiting is not None:
                        waiting.set_exception(exc)
                        waiting.exception()  # retrieved: a waiter may have gone
                else:
                    if waiting is not None:
                        waiting.set_result(None)
                await asyncio.sleep(self._interval_s)
        finally:
            pending = [f for f in (self._writing, self._next) if f is not None and not f.done()]
            self._next = None
            if pending:
                _write_state(self._path, self._backend.to_state())
                for waiting in pending:
                    waiting.set_result(None)


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
        _load_state(emulator, config.state_file)
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
