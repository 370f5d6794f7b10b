"""What already exists in a partition: a complete listing of its builds, by image identity.

A clientToken protects a retry only while the service remembers it (for a length of time
it does not publish), and not at all against an image imported earlier by hand, by another
tool or from another machine. So before a partition the journal never reconciled sends
anything (and before re-sending a row sent earlier without a known outcome), ibimport
lists every build in the account and Region, about one call per 100 builds whatever the
manifest's size, and a row whose image already has a build is recorded ``exists``
instead of sent.

The rule that makes this safe: absence is concluded only from a complete, successful
listing. Each page call is retried under its own limiter like any call (``calls``:
throttling slows it, transient faults back off); a listing that cannot complete raises,
and the rows that needed it are left unresolved, never sent on a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import anyio

from ibimport.aws.client import BuildPage, PartitionClient
from ibimport.domain import rowstate
from ibimport.domain.apimodel import ImageIdentity, image_identity
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import Metering, StageName
from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor
from ibimport.flow.retry import UNREACHABLE_CODES, Disposition, classify, fatal_message
from ibimport.stages.base import PartitionRun, RowWork

__all__ = ["ExistingImages", "ExistingStage", "Reconciler", "partition_key"]

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

    def __init__(self, client: PartitionClient, calls: CallExecutor, *, clock: Clock) -> None:
        self._client = client
        self._clock = clock
        self._calls = calls
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
        page = await self._calls.read(lambda: self._client.list_builds(next_token=next_token))
        return page, self._calls.calls - before


def _build_number(arn: str) -> int:
    """The build node of a build ARN (``.../image/<name>/<version>/<build>``)."""
    tail = arn.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class ExistingStage:
    """Is the row's image already there? Never a second build of an image that exists.

    ``prepare`` (with ``list_first``: a partition the journal never reconciled) takes the
    complete listing and commits every row it finds ``exists`` before any import; a
    listing that cannot complete stops the partition, nothing sent. Then each row is
    matched against that listing; without one, a row sent before whose outcome is unknown
    (in doubt: ``rowstate.in_doubt``) takes the listing first, whatever its token's age:
    listed, its call landed (``succeeded``, not sent again); a row whose listing cannot
    complete is not sent (``skipped``). Metered by its own limiter: the List calls have
    their own quota.
    """

    name: ClassVar[StageName] = StageName.EXISTING
    metering: ClassVar[Metering] = Metering.CONCURRENCY

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        clock: Clock,
        list_first: bool,
        belongs: Callable[[int], bool] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self._clock = clock
        self._list_first = list_first
        self._belongs = belongs
        self._run: PartitionRun | None = None

    async def prepare(self, run: PartitionRun) -> None:
        self._run = run
        if not self._list_first:
            return
        listed_at = self._clock.wall()
        try:
            listing = await self.reconciler.existing()
        except CallError as error:
            run.stop(FatalBatchError(_listing_failed(error)))
            return
        # Durable before the first import: a run stopped before it reaches these rows
        # leaves them ``exists``, and its resume (which does not list again) sends none.
        await run.journal.record_existing(
            listing.arn_for,
            belongs=self._belongs,
            partition=partition_key(*run.origin),
            listed_at=listed_at,
        )

    def defers(self, work: RowWork) -> bool:
        return False

    def release(self) -> None:
        return None

    async def process(self, work: RowWork) -> RowResult | None:
        run = self._run
        assert run is not None, "prepare() first"
        listing = self.reconciler.listing
        if listing is None:
            if work.prior is None or not rowstate.in_doubt(
                first_sent_at=work.prior.first_sent_at, state=work.prior.state
            ):
                return None
            try:
                listing = await self.reconciler.existing()
            except CallError as error:
                # Absence is never concluded from a failed listing: the row is not sent.
                return run.result(
                    work,
                    RowStatus.SKIPPED,
                    error=(
                        error.code,
                        "not sent: could not check for an existing build of a row sent "
                        f"before without a known outcome: {error.message}",
                    ),
                )
        arn = listing.arn_for(work.request.name, work.request.semanticVersion)
        if arn is None:
            return None
        prior = work.prior
        landed = (
            prior is not None
            and prior.client_token == work.token
            and rowstate.in_doubt(first_sent_at=prior.first_sent_at, state=prior.state)
        )
        # A row this batch sent without learning the outcome, now listed: its call landed.
        result = run.result(work, RowStatus.SUCCEEDED if landed else RowStatus.EXISTS)
        result.image_arn = arn
        return result


def partition_key(account: str, region: str) -> str:
    """How the journal names a partition it reconciled (``account/region``)."""
    return f"{account}/{region}"


def _listing_failed(error: CallError) -> str:
    if classify(error) is Disposition.FATAL:
        return fatal_message(error)
    if error.code in UNREACHABLE_CODES:
        return f"cannot reach the Image Builder endpoint: {error.message}"
    return (
        f"could not list the images that already exist ({error.code}: {error.message}), "
        "so nothing was sent: re-run, or pass --no-reconcile for an account known to "
        "have no images"
    )
