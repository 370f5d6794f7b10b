"""The emulator's HTTP server: aiohttp wiring, the table of services, the emulator's own endpoints.

``SERVICES`` is the table of what is served: each service is a sub-package laid out like
moto's (``<service>/models.py`` its state, ``<service>/responses.py`` its wire format and
the ``RestService``, ``QueryService``, ``JsonService`` or ``RestXmlService`` that
describes it), and a request finds its service here: a REST-JSON call by its route, a
query-protocol call (a form POST to ``/``) by its Action, an unknown Action by the
credential scope's service, a JSON 1.1 call by its ``X-Amz-Target``, an S3 call by the
credential scope's service (``s3``). Each service acts on the backend
``Emulator.backends`` holds under its signing name, and its errors take that service's
codes and shape.
``Emulator.handle`` takes each request through the other modules in turn: ``auth`` (who
calls, and ``--verify-signatures``), ``faults`` (quota and injected misbehaviour), the
service's handler, then ``faults`` again for how the answer travels. Each call acts in the
(account, region) ``sts.models.Identities`` reads from its access key and credential scope.
The emulator's own endpoints answer ``stats`` (the counters) and reset; an answer that
changed the state waits for ``statefile``'s save; ``running`` serves an ``Emulator`` (on a
loop, a thread, or until signalled). The hot path is kept lean because every benchmark in
the project runs against it.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ibimport.emulator import awsjson, restxml
from ibimport.emulator.auth import Credentials, caller, signing_service, verify
from ibimport.emulator.awsjson import JsonCall, JsonService
from ibimport.emulator.config import EmulatorConfig
from ibimport.emulator.core import Clock, Scope
from ibimport.emulator.defaults import RESET_PATH, STATS_PATH
from ibimport.emulator.ec2.declared import load_import_tasks
from ibimport.emulator.ec2.models import ImportTasks
from ibimport.emulator.ec2.responses import EC2
from ibimport.emulator.exceptions import (
    NotImplementedOperation,
    RequestEntityTooLargeException,
    ServiceError,
    UnknownOperationException,
    XAmzContentSHA256Mismatch,
)
from ibimport.emulator.faults import Faults, abort
from ibimport.emulator.iam.models import Roles
from ibimport.emulator.iam.responses import IAM
from ibimport.emulator.imagebuilder.models import ImageBuilderBackend
from ibimport.emulator.imagebuilder.paging import Pager
from ibimport.emulator.imagebuilder.responses import IMAGEBUILDER
from ibimport.emulator.permissions import Permissions
from ibimport.emulator.query import QueryCall, QueryService, is_query, parse_form
from ibimport.emulator.rest import Call, Handler, RestService, render_error
from ibimport.emulator.restxml import RestXmlCall, RestXmlService, bucket_and_key
from ibimport.emulator.s3.models import Buckets
from ibimport.emulator.s3.responses import IAM_ACTIONS, S3
from ibimport.emulator.servicequotas.models import Quotas
from ibimport.emulator.servicequotas.responses import SERVICE_QUOTAS
from ibimport.emulator.statefile import StateSaver
from ibimport.emulator.stats import RequestCounts, stats_document
from ibimport.emulator.sts.models import Accounts, Identities, load_accounts
from ibimport.emulator.sts.responses import STS

__all__ = ["SERVICES", "Emulator"]

_JSON = "application/json"
_XML = "text/xml"
#: Every service served. A new one is a sub-package, its backend in ``Emulator.backends``
#: under its signing name, and a row here.
SERVICES: tuple[RestService | QueryService | JsonService | RestXmlService, ...] = (
    IMAGEBUILDER,
    EC2,
    STS,
    IAM,
    SERVICE_QUOTAS,
    S3,
)
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
#: JSON 1.1 services by ``X-Amz-Target`` prefix; REST-XML ones (S3) by signing name.
_BY_TARGET = {s.target_prefix: s for s in SERVICES if isinstance(s, JsonService)}
_REST_XML = {s.signing_name: s for s in SERVICES if isinstance(s, RestXmlService)}


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
            slots=config.task_slots,
            duration_s=config.task_duration_s,
            failures=config.task_failure_shares,
        )
        self.buckets = Buckets(clock=clock)
        self.roles = Roles(vmimport=config.vmimport_role, created=clock())
        self.tasks.disks, self.tasks.roles = self.buckets, self.roles
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
        self.backend.companions.update(
            importTasks=self.tasks, credentials=self.identities, s3=self.buckets
        )
        self.faults = Faults(config, clock=clock)
        self.counts = RequestCounts()
        self._regions = config.served_regions
        #: Each service's backend, under its signing name (``SERVICES``).
        self.backends: dict[str, object] = {
            IMAGEBUILDER.signing_name: self.backend,
            EC2.signing_name: self.tasks,
            STS.signing_name: self.identities,
            IAM.signing_name: self.roles,
            SERVICE_QUOTAS.signing_name: Quotas(task_slots=config.task_slots),
            S3.signing_name: self.buckets,
        }
        #: Set by ``running.serve`` with ``--state``: answers that changed the state wait for it.
        self.saver: StateSaver | None = None
        self._internal: dict[tuple[str, str], Callable[[], web.Response]] = {
            ("GET", STATS_PATH): lambda: _json_response(200, json.dumps(self.stats()).encode()),
            ("POST", RESET_PATH): self._reset_response,
        }

    def stats(self) -> dict[str, Any]:
        """The counters ``GET /_emulator/stats`` reports."""
        return stats_document(
            self.counts, backend=self.backend, faults=self.faults, tasks=self.tasks
        )

    def reset(self) -> None:
        """Forget all state and counters, and refill the buckets."""
        self.backend.reset()
        self.faults.reset()
        self.counts.clear()

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
            target = request.headers.get("X-Amz-Target")
            if target is not None:
                return await self._handle_json(request, target)
            rest_xml = _REST_XML.get(signing_service(request.headers.get("Authorization")) or "")
            if rest_xml is not None:
                return await self._handle_rest_xml(request, rest_xml)
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
            self.counts.request(name, region)
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
            self.counts.request(action, region)
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

    async def _admit(
        self,
        request: web.BaseRequest,
        body: bytes,
        *,
        signing_name: str,
        regional: bool,
        operation: str,
        action: str | None = None,
        payload_hash: str | None = None,
    ) -> tuple[str, Scope, bool]:
        """Who calls and where, checked, counted, authorized and metered as every call is;
        returns the access key, the scope and whether the answer is to be lost. Raises
        the shared layers' ``ServiceError`` for the service to translate."""
        access_key, region = caller(request.headers.get("Authorization"))
        if self.config.verify_signatures:
            verify(
                known=self.identities.known,
                service=signing_name,
                method=request.method,
                raw_path=request.raw_path,
                headers=request.headers,
                header_values=lambda header: request.headers.getall(header, ()),
                body=body,
                regions=self._regions if regional else None,
                now=self.clock(),
                payload_hash=payload_hash,
            )
        scope = self.identities.scope_of(access_key, region)
        self.counts.request(operation, region)
        if self.permissions:
            self._authorize(signing_name, action or operation, access_key, scope)
        drop = False
        if regional:
            drop = await self.faults.before_call(operation, scope=scope, service=signing_name)
        return access_key, scope, drop

    async def _handle_json(self, request: web.BaseRequest, target: str) -> web.StreamResponse:
        """One JSON 1.1 call (Service Quotas), found by its ``X-Amz-Target``."""
        prefix, _, operation = target.partition(".")
        service = _BY_TARGET.get(prefix)
        if service is None:
            return self._error(UnknownOperationException())
        try:
            body = await request.read()
        except ConnectionResetError:
            return _json_response(400, b"{}")
        except web.HTTPRequestEntityTooLarge:
            return self._json_error(
                service,
                RequestEntityTooLargeException(
                    f"The request body is larger than {request.client_max_size} bytes."
                ),
            )
        try:
            handler = service.operations.get(operation)
            if handler is None:
                raise service.unknown_operation(operation)
            access_key, scope, drop = await self._admit(
                request, body, signing_name=service.signing_name, regional=True, operation=operation
            )
        except ServiceError as exc:
            return self._json_error(service, exc)
        if self.faults.drops_before():
            abort(request)
            return _json_response(500, b"{}")  # never reaches the client
        request_id = str(uuid.uuid4())
        try:
            members = awsjson.parse_body(body)
            call = JsonCall(
                scope=scope, request_id=request_id, members=members, access_key=access_key
            )
            answer = handler(self.backends[service.signing_name], call)
        except ServiceError as exc:
            response = self._json_error(service, exc, request_id=request_id)
        else:
            response = _json_response(200, awsjson.render(answer), request_id=request_id)
            response.content_type = "application/x-amz-json-1.1"
        return await self.faults.deliver(request, response, drop=drop)

    def _json_error(
        self, service: JsonService, exc: ServiceError, *, request_id: str | None = None
    ) -> web.Response:
        answered = service.translate(exc)
        self.counts.error(answered.code)
        status, body = awsjson.render_error(answered)
        response = _json_response(status, body, request_id=request_id or str(uuid.uuid4()))
        response.content_type = "application/x-amz-json-1.1"
        return response

    async def _handle_rest_xml(
        self, request: web.BaseRequest, service: RestXmlService
    ) -> web.StreamResponse:
        """One S3 call: the body is streamed (hashed, kept up to the service's cap)."""
        head = request.method == "HEAD"
        bucket, key = bucket_and_key(request.path, request.host)
        query = request.query
        try:
            operation, handler = service.route(request.method, bucket, key, query)
        except ServiceError as exc:
            return self._rest_xml_error(service, exc, head=head)
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        md5, sha256, kept, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), [], 0
        try:
            async for chunk in request.content.iter_chunked(1 << 16):
                md5.update(chunk)
                sha256.update(chunk)
                size += len(chunk)
                if size <= service.body_cap:
                    kept.append(chunk)
        except ConnectionResetError:
            return _json_response(400, b"{}")
        body = b"".join(kept) if size <= service.body_cap else None
        claimed = request.headers.get("X-Amz-Content-SHA256")
        try:
            if claimed is not None and claimed.startswith("STREAMING-"):
                raise NotImplementedOperation()
            if claimed not in (None, "UNSIGNED-PAYLOAD") and claimed != sha256.hexdigest():
                raise XAmzContentSHA256Mismatch()
            access_key, scope, drop = await self._admit(
                request,
                body or b"",
                signing_name=service.signing_name,
                regional=True,
                operation=operation,
                action=IAM_ACTIONS.get(operation, operation),
                payload_hash=claimed or sha256.hexdigest(),
            )
        except ServiceError as exc:
            return self._rest_xml_error(service, exc, head=head)
        if self.faults.drops_before():
            abort(request)
            return _json_response(500, b"{}")  # never reaches the client
        request_id = uuid.uuid4().hex[:16].upper()
        call = RestXmlCall(
            scope=scope,
            request_id=request_id,
            method=request.method,
            bucket=bucket,
            key=key,
            query=query,
            headers=request.headers,
            body=body,
            size=size,
            md5=md5.hexdigest(),
            access_key=access_key,
        )
        try:
            answer = handler(self.backends[service.signing_name], call)
        except ServiceError as exc:
            response = self._rest_xml_error(service, exc, head=head, request_id=request_id)
        else:
            if self.saver is not None and self.backend.dirty:
                await self.saver.saved()
            response = _rest_xml_response(answer, request_id=request_id)
        return await self.faults.deliver(request, response, drop=drop)

    def _rest_xml_error(
        self,
        service: RestXmlService,
        exc: ServiceError,
        *,
        head: bool,
        request_id: str | None = None,
    ) -> web.Response:
        answered = service.translate(exc)
        self.counts.error(answered.code)
        request_id = request_id or uuid.uuid4().hex[:16].upper()
        return _rest_xml_response(
            restxml.render_error(answered, request_id, head=head), request_id=request_id
        )

    def _query_error(
        self, service: QueryService, exc: ServiceError, *, request_id: str | None = None
    ) -> web.Response:
        answered = service.translate(exc)
        self.counts.error(answered.code)
        request_id = request_id or str(uuid.uuid4())
        status, body = service.render_error(answered, request_id)
        return _xml_response(status, body, request_id=request_id)

    def _error(self, exc: ServiceError, *, request_id: str | None = None) -> web.Response:
        status, error_type, body = render_error(exc)
        self.counts.error(error_type)
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


def _rest_xml_response(answer: restxml.Answer, *, request_id: str) -> web.Response:
    headers = {"x-amz-request-id": request_id, "x-amz-id-2": request_id, **answer.headers}
    # A HEAD answer's Content-Length is the object's; aiohttp sends no body for HEAD.
    return web.Response(status=answer.status, body=answer.body or None, headers=headers)
