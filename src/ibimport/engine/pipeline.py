"""One partition's pipeline: every row of the manifest through the stages, in order.

The pipeline only orchestrates. It pulls rows from the manifest as workers have room (so
nothing is created up front and a million-row manifest streams), carries over the rows an
earlier run settled (``rowstate.settled``), hands each other row to the stages in order
until one gives its outcome, keeps the journal current and tells listeners what happened.
The stages make the calls (``ibimport.stages``); a stage that may wait long defers the
row, which then holds no worker. It prints nothing and knows no CLI.

Why a retry is always safe: every attempt of a row carries the same clientToken, so a
call that landed but whose answer was lost returns the original image when re-sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ibimport.aws.client import PartitionClient
from ibimport.domain import rowstate
from ibimport.domain.request import ImageRequest
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.tokens import client_token, reimport_token
from ibimport.engine.events import CallEvent, CallOutcome, RunListener
from ibimport.errors import FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import Attempt, CallExecutor, PartitionHealth, RetryPolicy
from ibimport.flow.limiter import Limiter, build_limiter
from ibimport.flow.retry import Backoff, Disposition
from ibimport.journal import Journal, JournalEntry
from ibimport.manifest import ManifestRow
from ibimport.stages.base import HoldsOutcome, RowStage, RowWork
from ibimport.stages.existing import ExistingStage, Reconciler
from ibimport.stages.importing import ImportStage

__all__ = ["Pipeline", "RunOutcome", "RunSettings", "import_pipeline"]

_OUTCOMES = {
    None: CallOutcome.OK,
    Disposition.THROTTLED: CallOutcome.THROTTLED,
    Disposition.RETRY: CallOutcome.RETRYABLE,
    Disposition.PERMANENT: CallOutcome.PERMANENT,
    Disposition.FATAL: CallOutcome.FATAL,
    Disposition.BACKPRESSURE: CallOutcome.THROTTLED,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    """The knobs of one batch that the pipeline and its calls honour."""

    concurrency: int = 16
    max_attempts: int = 8
    #: Throttled attempts get a budget of their own: the limiter slows down, so a
    #: throttled call is a pacing signal, not evidence that the row is broken.
    max_throttled_attempts: int = 50
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 20.0
    token_salt: str = ""
    #: How long the service is trusted to remember a clientToken: a row in doubt that a
    #: complete listing does not show is re-sent with its token (``rowstate.in_doubt``).
    token_ttl_s: float = 8 * 3600.0
    retry_failed: bool = True
    #: ``--retry-failed-images``: rows whose image a wait found FAILED, CANCELLED or
    #: DELETED are imported again (a new build beside the failed one), under a token of
    #: their own (``tokens.reimport_token``).
    retry_failed_images: bool = False
    #: How long in-flight rows may take to finish after a stop is requested.
    drain_timeout_s: float = 5.0
    #: Consecutive "endpoint unreachable" failures, with no answer yet, that stop a
    #: partition (every call of it: imports and look-ups alike).
    unreachable_after: int = 8
    #: Calls in a row, across rows, with no answer (timeouts, no connection) that stop a
    #: partition once nothing has answered for ``outage_quiet_s`` (``retry.OutageDetector``).
    outage_after: int = 32
    outage_quiet_s: float = 10.0

    def retry_policy(self) -> RetryPolicy:
        """The one way these settings become a call's retry rules."""
        return RetryPolicy(
            backoff=Backoff(
                base_s=self.backoff_base_s, cap_s=self.backoff_cap_s, max_attempts=self.max_attempts
            ),
            max_throttled_attempts=self.max_throttled_attempts,
        )

    def health(self) -> PartitionHealth:
        """A partition's endpoint rules (one per partition, shared by all its calls)."""
        return PartitionHealth(
            unreachable_after=self.unreachable_after,
            outage_after=self.outage_after,
            outage_quiet_s=self.outage_quiet_s,
        )


@dataclass(slots=True)
class RunOutcome:
    """How a run ended: the listeners hold the figures, this says why it stopped."""

    interrupted: bool = False
    fatal: FatalBatchError | None = None
    elapsed_s: float = 0.0


@dataclass(slots=True)
class _State:
    stop_requested: bool = False
    fatal: FatalBatchError | None = None
    #: Rows on their way through the stages (a stop's drain deadline may cut them off).
    in_progress: dict[int, RowWork] = field(default_factory=dict)
    #: Rows a stage deferred (waiting without a worker).
    deferred: dict[int, RowWork] = field(default_factory=dict)
    #: The last row taken from the manifest: every later one is unreached.
    last_row: int = 0


class Pipeline:
    """Runs one partition's rows through ``stages``. Create it, then ``await run(rows)``;
    ``request_stop()`` drains it."""

    def __init__(
        self,
        stages: Sequence[RowStage],
        *,
        journal: Journal,
        clock: Clock,
        listeners: Sequence[RunListener] = (),
        settings: RunSettings = RunSettings(),
        origin: tuple[str, str] = ("", ""),
    ) -> None:
        self.stages = tuple(stages)
        self._holders = [stage for stage in self.stages if isinstance(stage, HoldsOutcome)]
        #: The partition this pipeline imports into: (account, Region), for the results.
        self.origin = origin
        self.journal = journal
        self._clock = clock
        self._listeners = tuple(listeners)
        self._settings = settings
        self._state = _State()
        self._dispatch_scope: anyio.CancelScope | None = None
        self._deferring: TaskGroup | None = None
        self._background: TaskGroup | None = None
        #: Rows whose image failed, to import again (``RunSettings.retry_failed_images``).
        self._reimport: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ PartitionRun

    @property
    def stopping(self) -> bool:
        return self._state.stop_requested

    def stop(self, fatal: FatalBatchError) -> None:
        if self._state.fatal is None:
            self._state.fatal = fatal
        self._state.stop_requested = True
        for stage in self.stages:
            stage.release()
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()

    def result(
        self, work: RowWork, status: RowStatus, *, error: tuple[str, str] = ("", "")
    ) -> RowResult:
        prior_attempts = work.prior.attempts if work.prior is not None else 0
        return RowResult(
            row=work.row,
            name=work.request.name,
            semantic_version=work.request.semanticVersion,
            status=status,
            client_token=work.token,
            attempts=prior_attempts + work.attempts.made,
            error_code=error[0],
            error_message=error[1],
        )

    def beside(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        assert self._background is not None, "only while running"
        self._background.start_soon(work)

    def attempt_listener(self, work: RowWork) -> Callable[[Attempt], None]:
        listeners = self._listeners

        def tell(attempt: Attempt) -> None:
            event = CallEvent(
                row=work.row,
                attempt=attempt.number,
                latency_s=attempt.latency_s,
                outcome=_OUTCOMES[attempt.disposition],
                error_code=attempt.error_code,
            )
            for listener in listeners:
                listener.on_call(event)

        return tell

    # ------------------------------------------------------------ running

    def request_stop(self) -> None:
        """Stop dispatching rows; rows in flight get ``drain_timeout_s`` to finish."""
        if self._state.stop_requested:
            return
        self._state.stop_requested = True
        for stage in self.stages:
            stage.release()
        if self._dispatch_scope is not None:
            self._dispatch_scope.deadline = min(
                self._dispatch_scope.deadline,
                anyio.current_time() + self._settings.drain_timeout_s,
            )

    async def run(
        self,
        rows: Iterable[ManifestRow],
        *,
        total_rows: int | None = None,
        unreached: Callable[[int], Iterable[RowResult]] | None = None,
        stopped_by: FatalBatchError | None = None,
    ) -> RunOutcome:
        """Walk every valid row through the stages; record the others. Returns once every
        row has a result.

        Each stage is prepared first, in order (a listing, a batched check); a stage that
        cannot prepare stops the partition, nothing sent. After a stop, the rows never
        reached are listed by ``unreached(last_row)`` when given (from the journal, which
        holds them all: seconds for millions of rows), otherwise by reading the rest of
        ``rows`` (validating every row: minutes). ``stopped_by``: the partition cannot
        work at all; its rows are reported, not sent.
        """
        state = self._state
        started = self._clock.now()
        for listener in self._listeners:
            listener.on_start(total_rows=total_rows)
        row_iter = iter(rows)
        if self._settings.retry_failed_images and self.journal.has_history:
            self._reimport = self.journal.reimportable_images()
        with anyio.CancelScope() as scope:
            self._dispatch_scope = scope
            async with anyio.create_task_group() as background:
                self._background = background
                if stopped_by is not None:
                    state.fatal, state.stop_requested = stopped_by, True
                else:
                    for stage in self.stages:
                        if state.stop_requested:
                            break
                        await stage.prepare(self)
                async with anyio.create_task_group() as workers:
                    self._deferring = workers
                    for _ in range(
                        0 if state.stop_requested else _worker_count(self._settings.concurrency)
                    ):
                        workers.start_soon(self._worker, row_iter)
                background.cancel_scope.cancel()
        self._dispatch_scope = self._deferring = self._background = None
        # Rows cut off by the drain deadline or a fatal stop stay in_flight (or pending) in
        # the journal (a re-run re-sends them with their token); here they are "skipped".
        # A fatal stop names its reason on each row it cut off: nothing was interrupted.
        fatal = state.fatal
        cut_off = ("Interrupted", "") if fatal is None else ("StoppedOnFatalError", str(fatal))
        cut = {**state.in_progress, **state.deferred}
        for row in sorted(cut):
            self._finish(self.result(cut[row], RowStatus.SKIPPED, error=cut_off))
        state.in_progress.clear()
        state.deferred.clear()
        if state.stop_requested or fatal is not None:
            tail = (
                unreached(state.last_row)
                if unreached is not None
                else (self._unsent_result(manifest_row) for manifest_row in row_iter)
            )
            for result in tail:
                if fatal is not None and result.status is RowStatus.SKIPPED:
                    result.error_code, result.error_message = cut_off
                self._finish(result)
        with anyio.CancelScope(shield=True):
            await self.journal.flush()
        elapsed = self._clock.now() - started
        interrupted = state.stop_requested and state.fatal is None
        for listener in self._listeners:
            listener.on_finish(elapsed_s=elapsed, interrupted=interrupted)
        return RunOutcome(interrupted=interrupted, fatal=state.fatal, elapsed_s=elapsed)

    async def _worker(self, rows: Iterator[ManifestRow]) -> None:
        state = self._state
        while not state.stop_requested:
            try:
                manifest_row = next(rows, None)
            except FatalBatchError as fatal:  # the manifest changed under the run
                self.stop(fatal)
                return
            if manifest_row is None:
                return
            state.last_row = max(state.last_row, manifest_row.row)
            result = await self._start_row(manifest_row)
            if result is not None:
                self._finish(result)

    async def _start_row(self, manifest_row: ManifestRow) -> RowResult | None:
        """A row's outcome; None if it was cut off mid-way or deferred (its walk goes on
        without this worker and finishes it)."""
        request = manifest_row.task
        if request is None:
            return _invalid_result(manifest_row)
        params = request.api_params()  # built once: for the token and for every attempt
        # The read held to the selection pass already derived it (ManifestRow.client_token).
        token = manifest_row.client_token or client_token(
            request, salt=self._settings.token_salt, params=params
        )
        prior = self._prior(request)
        identity = (request.name, request.semanticVersion)
        if prior is not None and identity in self._reimport and prior.image_arn:
            # Its image failed: imported again under a token of its own (the row's would
            # return the failed image); the wait follows the new one.
            token = reimport_token(token, prior.image_arn)
            self._reimport.discard(identity)
            self.journal.record_image_statuses([(*identity, "", "")])
        elif prior is not None:
            carried = self._carry_over(prior, row=manifest_row.row)
            if carried is not None:
                return carried
            if prior.image_arn and prior.client_token == reimport_token(token, prior.image_arn):
                token = prior.client_token  # a re-import cut off: under its own token again
        work = RowWork(
            row=manifest_row.row, request=request, params=params, token=token, prior=prior
        )
        self._state.in_progress[work.row] = work
        result = await self._walk(work, 0)
        if result is not None:
            del self._state.in_progress[work.row]
            if self._hold(work, result):
                return None
        return result

    async def _walk(self, work: RowWork, first: int) -> RowResult | None:
        """The row through ``stages[first:]``: the first outcome a stage gives."""
        for index in range(first, len(self.stages)):
            stage = self.stages[index]
            # A stop starts no row's next stage, a deferred row's included (its walk goes on
            # from the stage it waited in: ``first`` > 0).
            if index > 0 and self._state.stop_requested:
                return self.result(work, RowStatus.SKIPPED, error=("Interrupted", ""))
            if stage.defers(work) and self._deferring is not None:
                del self._state.in_progress[work.row]
                self._state.deferred[work.row] = work
                self._deferring.start_soon(self._deferred_walk, work, index)
                return None
            result = await stage.process(work)
            if result is not None:
                return result
        return self.result(work, RowStatus.SKIPPED, error=("NotImported", "no stage settled it"))

    async def _deferred_walk(self, work: RowWork, index: int) -> None:
        """A deferred row: its stage waited without a worker; the rest of its walk."""
        result = await self.stages[index].process(work)
        del self._state.deferred[work.row]
        if result is None:
            self._state.in_progress[work.row] = work
            result = await self._walk(work, index + 1)
            if result is None:
                return
            del self._state.in_progress[work.row]
        if not self._hold(work, result):
            self._finish(result)

    def _hold(self, work: RowWork, result: RowResult) -> bool:
        """Whether a stage the row passed holds its outcome (``stages.base.HoldsOutcome``):
        the row then waits for it without a worker, and is finished by ``_settle``."""
        if self._deferring is None:
            return False
        for stage in self._holders:
            if stage.holds(work):
                self._state.deferred[work.row] = work
                self._deferring.start_soon(self._settle, stage, work, result)
                return True
        return False

    async def _settle(self, stage: HoldsOutcome, work: RowWork, result: RowResult) -> None:
        final = await stage.settle(work, result)
        del self._state.deferred[work.row]
        self._finish(final)

    def _prior(self, request: ImageRequest) -> JournalEntry | None:
        """What an earlier run recorded of this row; a fresh journal is not asked."""
        if not self.journal.has_history:
            return None
        return self.journal.get(request.name, request.semanticVersion)

    def _carry_over(self, prior: JournalEntry, *, row: int) -> RowResult | None:
        """A row an earlier run settled is reported, not sent, at its current ``row``.

        (The journal's row number is where the row stood when it was journalled; after a
        forced manifest change another row may stand there now.)
        """
        if rowstate.settled(prior.state, retry_failed=self._settings.retry_failed):
            result = prior.to_result(resumed=True)
            result.row = row
            return result
        return None

    def _unsent_result(self, manifest_row: ManifestRow) -> RowResult:
        """A row the run never reached: carried over if an earlier run settled it."""
        request = manifest_row.task
        if request is None:
            return _invalid_result(manifest_row)
        prior = self._prior(request)
        if prior is not None:
            carried = self._carry_over(prior, row=manifest_row.row)
            if carried is not None:
                return carried
        return RowResult(
            row=manifest_row.row,
            name=request.name,
            semantic_version=request.semanticVersion,
            status=RowStatus.SKIPPED,
            client_token=manifest_row.client_token
            or client_token(request, salt=self._settings.token_salt),
            attempts=prior.attempts if prior is not None else 0,
        )

    def _finish(self, result: RowResult) -> None:
        result.account, result.region = result.account or self.origin[0], self.origin[1]
        if not result.resumed and result.status is not RowStatus.SKIPPED:
            self.journal.record(result)
        for listener in self._listeners:
            listener.on_row_done(result)


def import_pipeline(
    client: PartitionClient,
    limiter: Limiter,
    *,
    journal: Journal,
    clock: Clock,
    listeners: Sequence[RunListener] = (),
    settings: RunSettings = RunSettings(),
    rng: random.Random | None = None,
    origin: tuple[str, str] = ("", ""),
    before: Sequence[RowStage] = (),
    list_first: bool = False,
    belongs: Callable[[int], bool] | None = None,
    health: PartitionHealth | None = None,
) -> Pipeline:
    """The import's pipeline for one partition: ``before`` (e.g. the task gate), then
    the existing-image stage, then ImportVmImage.

    Imports go through ``limiter``; the listing of existing builds gets a limiter of its
    own (the List calls have their own quota); both share the partition's ``health``.
    """
    rng = rng or random.Random()
    policy = settings.retry_policy()
    health = health or settings.health()
    lookups = CallExecutor(
        build_limiter(concurrency=1, rate=None, clock=clock),
        clock=clock,
        policy=policy,
        health=health,
        rng=rng,
    )
    imports = CallExecutor(limiter, clock=clock, policy=policy, health=health, rng=rng)
    existing = ExistingStage(
        Reconciler(client, lookups, clock=clock),
        clock=clock,
        list_first=list_first,
        belongs=belongs,
    )
    return Pipeline(
        [*before, existing, ImportStage(client, imports, clock=clock)],
        journal=journal,
        clock=clock,
        listeners=listeners,
        settings=settings,
        origin=origin,
    )


def _worker_count(concurrency: int) -> int:
    """More workers than calls in flight: the limiter bounds the calls.

    A row waits for its in_flight group commit before it may be sent; the extra workers
    do that wait while every slot is busy, so the commit overlaps calls instead of
    leaving a slot idle behind each one.
    """
    concurrency = max(1, concurrency)
    return concurrency + max(2, concurrency // 2)


def _invalid_result(manifest_row: ManifestRow) -> RowResult:
    first = manifest_row.errors[0] if manifest_row.errors else None
    return RowResult(
        row=manifest_row.row,
        name=manifest_row.name,
        semantic_version=manifest_row.semantic_version,
        status=RowStatus.INVALID,
        error_code="InvalidManifestRow",
        error_message="; ".join(f"{e.field}: {e.rule}" for e in manifest_row.errors)
        if first
        else "invalid row",
    )
