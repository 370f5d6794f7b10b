"""What already exists in a partition: a complete listing of its builds, by image identity.

A clientToken protects a retry only while the service remembers it, and not at all
against an image imported earlier by hand, by another tool or from another machine. So
before a batch whose journal is new sends anything (and before re-sending a row whose
token may have expired), ibimport lists every build in the account and Region, about one
call per 100 builds whatever the manifest's size, and a row whose image already has a
build is recorded ``exists`` instead of sent.

The rule that makes this safe: absence is concluded only from a complete, successful
listing. Each page call is retried under its own limiter like any call (``calls``:
throttling slows it, transient faults back off); a listing that cannot complete raises,
and the rows that needed it are left unresolved, never sent on a guess.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import anyio

from ibimport.aws.client import BuildPage, ImageBuilderClient
from ibimport.domain.apimodel import ImageIdentity, image_identity
from ibimport.errors import CallError
from ibimport.flow.calls import RetriedCalls
from ibimport.flow.clock import Clock
from ibimport.flow.limiter import Limiter
from ibimport.flow.retry import Backoff

__all__ = ["ExistingImages", "Reconciler"]

#: Builds in these states do not stand in the way of an import: re-importing a failed
#: VM is how a migration recovers, and a deleted build is gone.
_NOT_STANDING = frozenset({"FAILED", "CANCELLED", "DELETED"})


@dataclass(frozen=True, slots=True)
class ExistingImages:
    """Every standing build of a partition, found by a complete listing."""

    by_identity: dict[ImageIdentity, str]  # the newest build's ARN
    builds: int  # every build listed, standing or not
    calls: int  # page calls made, retries included
    elapsed_s: float

    def arn_for(self, name: str, semantic_version: str) -> str | None:
        """The existing build of this image, if there is one."""
        return self.by_identity.get(image_identity(name, semantic_version))


class Reconciler:
    """Lists a partition's builds once, on first need, and answers from that listing.

    Concurrent askers wait for the one listing. A listing that failed (after its
    retries) fails every later asker of this run at once, instead of each one retrying
    the whole listing; a re-run tries again.
    """

    def __init__(
        self,
        client: ImageBuilderClient,
        limiter: Limiter,
        *,
        clock: Clock,
        backoff: Backoff,
        max_throttled_attempts: int = 50,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._calls = RetriedCalls(
            limiter,
            clock=clock,
            backoff=backoff,
            max_throttled_attempts=max_throttled_attempts,
            rng=rng,
        )
        self._lock = anyio.Lock()
        self._listing: ExistingImages | None = None
        self._failure: CallError | None = None

    @property
    def listing(self) -> ExistingImages | None:
        """The complete listing, once one succeeded."""
        return self._listing

    async def existing(self) -> ExistingImages:
        """The complete listing; raises the last ``CallError`` if it cannot be completed."""
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._listing is None:
                try:
                    self._listing = await self._list_all()
                except CallError as error:
                    self._failure = error
                    raise
            return self._listing

    async def _list_all(self) -> ExistingImages:
        started = self._clock.now()
        newest: dict[ImageIdentity, tuple[int, str]] = {}
        builds = calls = 0
        next_token: str | None = None
        while True:
            page, attempts = await self._page(next_token)
            calls += attempts
            for build in page.builds:
                builds += 1
                if build.status in _NOT_STANDING:
                    continue
                identity = image_identity(build.name, build.semantic_version)
                number = _build_number(build.arn)
                if identity not in newest or number > newest[identity][0]:
                    newest[identity] = (number, build.arn)
            next_token = page.next_token
            if next_token is None:
                break
        return ExistingImages(
            by_identity={identity: arn for identity, (_, arn) in newest.items()},
            builds=builds,
            calls=calls,
            elapsed_s=self._clock.now() - started,
        )

    async def _page(self, next_token: str | None) -> tuple[BuildPage, int]:
        """One page, retried as an import would be (the same token is safe to re-ask);
        its answer and the calls it took."""
        before = self._calls.calls
        page = await self._calls.call(lambda: self._client.list_builds(next_token=next_token))
        return page, self._calls.calls - before


def _build_number(arn: str) -> int:
    """The build node of a build ARN (``.../image/<name>/<version>/<build>``)."""
    tail = arn.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0
