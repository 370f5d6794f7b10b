"""botocore's and aiohttp's per-call work that never changes, done once per client.

Every call of a batch pays for what botocore recomputes on each one (the User-Agent, the
endpoint rules, its retry check, SigV4's parts: ``signing``), and aiohttp silently re-sends
a request on a dropped keep-alive connection, behind the limiter's back. Each trim keeps
botocore's answer as it is; what each one saves is said where it is made.
"""

from __future__ import annotations

import platform
from typing import Any

import aiobotocore
from aiobotocore.httpsession import AIOHTTPSession

from ibimport._version import __version__
from ibimport.aws.signing import install_reusing_signer

__all__ = ["USER_AGENT", "NoResendSession", "trim_per_call_work"]

#: The User-Agent, composed once. Left to itself botocore rebuilds its User-Agent twice
#: per call (dozens of sanitising calls each time, about 15% of a call's CPU); a
#: ``Config(user_agent=...)`` string is used as given. botocore appends the session's
#: ``botocore/<version>`` extra to it.
USER_AGENT = (
    f"ibimport/{__version__} md/aiobotocore#{aiobotocore.__version__} ua/2.1 "
    f"os/{platform.system().lower() or 'other'} "
    f"lang/python#{platform.python_version()} md/pyimpl#{platform.python_implementation()}"
)


class NoResendSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore is untyped
    """aiohttp's HTTP session without its silent re-send.

    aiohttp re-sends an idempotent request (ImportVmImage is a PUT) once when a reused
    keep-alive connection drops before the answer (RFC 9112's retry of persistent
    connections). That attempt never reaches botocore, so the limiter, the retry budget,
    the report and the bar never saw it: with dropped connections a run reported 313 calls
    where the service received 372. Off, every attempt that leaves the client is ours to
    count and to retry. (``_retry_connection`` is aiohttp's switch, 3.10 and later.)
    """

    async def _get_session(self, proxy_url: str | None) -> Any:
        session = await super()._get_session(proxy_url)
        session._retry_connection = False
        return session


def trim_per_call_work(client: Any) -> None:
    """Skip per-call work that gives the same answer on every call.

    - Endpoint rules: botocore runs the endpoint rules engine on every call (about 6% of
      a call's CPU), but for a client bound to one region and endpoint, an operation
      without context parameters always resolves to the same URL. Resolve it once per
      operation. Operations with context parameters keep the per-call resolution.
    - botocore's retry handler: our retries are the only ones (total_max_attempts 1), so
      its needs-retry check on every answer is dead work; it is unregistered by the
      unique id botocore gave it.
    - SigV4's Host, body hash input and signing key: see ``ibimport.aws.signing``.
    """
    install_reusing_signer(client)
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    resolver = getattr(client, "_ruleset_resolver", None)
    if resolver is None:
        return
    resolve = resolver.construct_endpoint
    resolved: dict[str, Any] = {}

    async def construct_endpoint(
        operation_model: Any, call_args: Any = None, request_context: Any = None
    ) -> Any:
        if operation_model.context_parameters or operation_model.static_context_parameters:
            return await resolve(operation_model, call_args, request_context)
        endpoint = resolved.get(operation_model.name)
        if endpoint is None:
            endpoint = resolved[operation_model.name] = await resolve(
                operation_model, call_args, request_context
            )
        return endpoint

    resolver.construct_endpoint = construct_endpoint
