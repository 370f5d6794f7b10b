"""The engine: import every manifest row exactly once, concurrently, under a limiter.

The runner only orchestrates. It pulls rows from the manifest as workers have room
(so nothing is created up front and a million-row manifest streams), asks the limiter
before each call, classifies each failure with ``ibimport.flow.retry``, keeps the journal
current, and tells listeners what happened. It prints nothing and knows no CLI.

Why a retry is always safe: every attempt of a row carries the same clientToken, so a
call that landed but whose answer was lost returns the original image when re-sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from ibimport.aws.client import ImageBuilderClient
from ibimport.domain import rowstate
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.tokens import client_token
from ibimport.engine.events import CallEvent, CallOutcome, RunListener
from ibimport.errors import CallError, FatalBatchError
from ibimport.flow.clock import Clock
from ibimport.flow.limiter import Limiter, build_limiter
from ibimport.flow.retry import (
    UNREACHABLE_CODES,
    Backoff,
    Disposition,
    FatalDetector,
    OutageDetector,
    classify,
    fatal_message,
)
from ibimport.journal import Journal, JournalEntry
from ibimport.manifest import ImageRequest, ManifestRow
from ibimport.stages.existing import Reconciler

_OUTCOMES = {
    Disposition.THROTTLED: CallOutcome.THROTTLED,
    Disposition.RETRY: CallOutcome.RETRYABLE,
    Disposition.PERMANENT: CallOutcome.PERMANENT,
    Disposition.FATAL: CallOutcome.FATAL,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    """The knobs of one batch that the runner itself honours."""

    concurrency: int = 16
    max_attempts: int = 8
    #: Throttled attempts get a budget of their own: the limiter slows down, so a
    #: throttled call is a pacing signal, not evidence that the row is broken.
    max_throttled_attempts: int = 50
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 20.0
    token_salt: str = ""
    token_ttl_s: float = 8 * 3600.0
    retry_failed: bool = True
    #: How long in-flight rows may take to finish after a stop is requested.
    drain_timeout_s: float = 5.0
    #: Consecutive "endpoint unreachable" failures, with no success yet, that stop the batch.
    unreachable_after: int = 8
    #: Calls in a row, across rows, with no answer (timeouts, no connection) that stop the
    #: batch once nothing has answered for ``outage_quiet_s`` (``retry.OutageDetector``).
    outage_after: int = 32
    outage_quiet_s: float = 10.0


@dataclass(slots=True)
class RunOutcome:
    """How a run ended: the listeners hold the figures, this says why it stopped."""

    interrupted: bool = False
    fatal: FatalBatchError | None = None
    elapsed_s: float = 0.0


@dataclass(slots=True)
class _RowWork:
    row: int
    task: ImageRequest
    params: dict[str, Any]
    token: str
    prior: JournalEntry | None
    attempts: int = 0
    throttled_attempts: int = 0


class RowGate(Protocol):
    """Which rows may be sent now (``ibimport.stages.taskgate``: ``run --preflight``)."""

    def waits(self, task_id: str) -> bool:
        """Whether ``admit`` may wait (the row is then deferred, holding no worker)."""
        ...

    async def admit(self, task_id: str) -> tuple[str, str] | None:
        """None: send the row; else (errorCode, errorMessage): record it ``blocked``."""
        ...

    def release(self) -> None:
        """A stop: answer every waiting row now."""
        ...


@dataclass(slots=True)
class _Shared:
    stop_requested: bool = False
    fatal: FatalBatchError | None = None
    in_progress: dict[int, _RowWork] = field(default_factory=dict)
    #: Rows waiting for their import task (``RowGate.waits``), not yet sending.
    deferred: dict[int, _RowWork] = field(default_factory=dict)
    #: The last row taken from the manifest: every later one is unreached.
    last_row: int = 0


class Runner:
    """Runs one batch. Create it, then ``await run(rows)``; ``request_stop()`` drains it."""

    def __init__(
        self,
        client: ImageBuilderClient,
        limiter: Limiter,
        *,
        journal: Journal,
        clock: Clock,
        listeners: Sequence[RunListener] = (),
        settings: RunSettings = RunSettings(),
        rng: random.Random | None = None,
        origin: tuple[str, str] = ("", ""),
        gate: RowGate | None = None,
    ) -> None:
        #: The partition this runner imports into: (account, Region), for the results.
        self.origin = origin
        self._client = client
        self._limiter = limiter
        self._journal = journal
        self._clock = clock
        self._listeners = tuple(listeners)
        self._settings = settings
        self._rng = rng or random.Random()
        self._backoff = Backoff(
            base_s=settings.backoff_base_s,
            cap_s=settings.backoff_cap_s,
            max_attempts=settings.max_attempts,
        )
        # Lookups get a limiter of their own: the List calls have their own quota.
        self.reconciler = Reconciler(
            client,
            build_limiter(concurrency=1, rate=None, clock=clock),
            clock=clock,
            backoff=self._backoff,
            max_throttled_attempts=settings.max_throttled_attempts,
            rng=self._rng,
        )
        self._shared = _Shared()
        self._unreachable = FatalDetector(settings.unreachable_after)
        self._outage = OutageDetector(settings.outage_after, quiet_s=settings.outage_quiet_s)
        self._dispatch_scope: anyio.CancelScope | None = None
        self._gate = gate
        self._deferring: TaskGroup | None = None

    def request_stop(self) -> None:
        """Stop dispatching rows; rows in flight get ``drain_timeout_s`` to finish."""
        if self._shared.stop_requested:
            return
        self._shared.stop_requested = True
        if self._gate is not None:
            self._gate.release()
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
        list_existing: bool = False,
        belongs: Callable[[int], bool] | None = None,
        stopped_by: FatalBatchError | None = None,
    ) -> RunOutcome:
        """Import every valid row; record the others. Returns once every row has a result.

        After a stop, the rows never reached are listed by ``unreached(last_row)`` when
        given (from the journal, which holds them all: seconds for millions of rows),
        otherwise by reading the rest of ``rows`` (validating every row: minutes).
        ``list_existing``: list what the partition holds before the first call
        (``ibimport.stages.existing``) and journal the rows found (``belongs`` says which
        journalled rows are this partition's) before any is sent; a listing that cannot
        complete stops the batch, unsent.
        ``stopped_by``: the partition cannot work at all; its rows are reported, not sent.
        """
        started = self._clock.now()
        for listener in self._listeners:
            listener.on_start(total_rows=total_rows)
        row_iter = iter(rows)
        with anyio.CancelScope() as scope:
            self._dispatch_scope = scope
            if stopped_by is not None:
                self._shared.fatal, self._shared.stop_requested = stopped_by, True
            elif list_existing:
                await self._list_existing(belongs)
            async with anyio.create_task_group() as workers:
                self._deferring = workers
                for _ in range(
                    0 if self._shared.stop_requested else _worker_count(self._settings.concurrency)
                ):
                    workers.start_soon(self._worker, row_iter)
        self._dispatch_scope = self._deferring = None
        # Rows cut off by the drain deadline or a fatal stop stay in_flight in the
        # journal (a re-run re-sends them with their token); here they are "skipped".
        # A fatal stop names its reason on each row it cut off: nothing was interrupted.
        fatal = self._shared.fatal
        cut_off = ("Interrupted", "") if fatal is None else ("StoppedOnFatalError", str(fatal))
        cut = [*self._shared.in_progress.values(), *self._shared.deferred.values()]
        for work in sorted(cut, key=lambda w: w.row):
            self._finish(self._result(work, RowStatus.SKIPPED, error=cut_off))
        self._shared.in_progress.clear()
        self._shared.deferred.clear()
        stopped = self._shared.stop_requested or self._shared.fatal is not None
        if stopped:
            tail = (
                unreached(self._shared.last_row)
                if unreached is not None
                else (self._unsent_result(manifest_row) for manifest_row in row_iter)
            )
            for result in tail:
                if fatal is not None and result.status is RowStatus.SKIPPED:
                    result.error_code, result.error_message = cut_off
                self._finish(result)
        with anyio.CancelScope(shield=True):
            await self._journal.flush()
        elapsed = self._clock.now() - started
        interrupted = self._shared.stop_requested and self._shared.fatal is None
        for listener in self._listeners:
            listener.on_finish(elapsed_s=elapsed, interrupted=interrupted)
        return RunOutcome(interrupted=interrupted, fatal=self._shared.fatal, elapsed_s=elapsed)

    async def _list_existing(self, belongs: Callable[[int], bool] | None) -> None:
        try:
            listing = await self.reconciler.existing()
        except CallError as error:
            disposition = classify(error)
            if disposition is Disposition.FATAL:
                message = fatal_message(error)
            else:
                message = (
                    f"could not list the images that already exist ({error.code}: "
                    f"{error.message}), so nothing was sent: re-run, or pass --no-reconcile "
                    "for an account known to have no images"
                )
                if error.code in UNREACHABLE_CODES:
                    message = f"cannot reach the Image Builder endpoint: {error.message}"
            self._shared.fatal = FatalBatchError(message)
            self._shared.stop_requested = True
            return
        # Durable before the first import: a run stopped before it reaches these rows
        # leaves them ``exists``, and its resume (which does not list again) sends none.
        await self._journal.record_existing(
            listing.arn_for, belongs=belongs, partition=partition_key(*self.origin)
        )

    async def _worker(self, rows: Iterator[ManifestRow]) -> None:
        shared = self._shared
        while not shared.stop_requested:
            try:
                manifest_row = next(rows, None)
            except FatalBatchError as fatal:  # the manifest changed under the run
                self._stop_fatally(fatal)
                return
            if manifest_row is None:
                return
            shared.last_row = max(shared.last_row, manifest_row.row)
            result = await self._import_row(manifest_row)
            if result is not None:
                self._finish(result)

    async def _import_row(self, manifest_row: ManifestRow) -> RowResult | None:
        """One row from manifest to outcome; None if the row was cut off mid-way or deferred
        (its import task pending: ``_deferred_row`` finishes it)."""
        task = manifest_row.task
        if task is None:
            return _invalid_result(manifest_row)
        params = task.api_params()  # built once: for the token and for every attempt
        # The read held to the selection pass already derived it (ManifestRow.client_token).
        token = manifest_row.client_token or client_token(
            task, salt=self._settings.token_salt, params=params
        )
        prior = self._prior(task)
        if prior is not None:
            carried = self._carry_over(prior, row=manifest_row.row)
            if carried is not None:
                return carried
        work = _RowWork(row=manifest_row.row, task=task, params=params, token=token, prior=prior)
        gate = self._gate
        if gate is not None:
            if gate.waits(task.vmImportTaskId) and self._deferring is not None:
                self._shared.deferred[work.row] = work
                self._deferring.start_soon(self._deferred_row, work, gate)
                return None
            blocked = await gate.admit(task.vmImportTaskId)
            if blocked is not None:
                return self._result(work, RowStatus.BLOCKED, error=blocked)
        return await self._send(work)

    async def _deferred_row(self, work: _RowWork, gate: RowGate) -> None:
        """A row whose import task is pending: sent once it is ready, else ``blocked``."""
        blocked = await gate.admit(work.task.vmImportTaskId)
        del self._shared.deferred[work.row]
        if blocked is not None:
            self._finish(self._result(work, RowStatus.BLOCKED, error=blocked))
            return
        if self._shared.stop_requested:
            self._finish(self._result(work, RowStatus.SKIPPED, error=("Interrupted", "")))
            return
        result = await self._send(work)
        if result is not None:
            self._finish(result)

    async def _send(self, work: _RowWork) -> RowResult | None:
        """A row that may be sent: looked up if its token may be forgotten, then imported."""
        task, token, prior = work.task, work.token, work.prior
        found = await self._find_existing(work)
        if found is not None:
            return found
        self._shared.in_progress[work.row] = work
        await self._journal.mark_in_flight(
            row=work.row,
            name=task.name,
            semantic_version=task.semanticVersion,
            client_token=token,
            attempt=(prior.attempts if prior else 0) + 1,
        )
        result = await self._attempt_until_done(work)
        del self._shared.in_progress[work.row]
        return result

    def _prior(self, task: ImageRequest) -> JournalEntry | None:
        """What an earlier run recorded of this row; a fresh journal is not asked."""
        if not self._journal.has_history:
            return None
        return self._journal.get(task.name, task.semanticVersion)

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

    def _needs_lookup(self, prior: JournalEntry, token: str) -> bool:
        return rowstate.needs_lookup(
            first_sent_at=prior.first_sent_at,
            recorded_token=prior.client_token,
            token=token,
            now=self._clock.wall(),  # journal stamps are wall time
            token_ttl_s=self._settings.token_ttl_s,
        )

    async def _find_existing(self, work: _RowWork) -> RowResult | None:
        """``exists`` if the image already has a build, unresolved if that cannot be known.

        Rows are matched against the partition's listing when one was taken (a new
        journal, see ``ibimport.stages.existing``); a row whose token the service may have
        forgotten takes one if none was. None: send the row.
        """
        reconciler = self.reconciler
        listing = reconciler.listing
        if listing is None:
            if work.prior is None or not self._needs_lookup(work.prior, work.token):
                return None
            try:
                listing = await reconciler.existing()
            except CallError as error:
                # Absence is never concluded from a failed listing: the row is not sent.
                return self._result(
                    work,
                    RowStatus.SKIPPED,
                    error=(
                        error.code,
                        "not sent: could not check for an existing build "
                        f"(its clientToken may have expired): {error.message}",
                    ),
                )
        arn = listing.arn_for(work.task.name, work.task.semanticVersion)
        if arn is None:
            return None
        result = self._result(work, RowStatus.EXISTS)
        result.image_arn = arn
        return result

    async def _attempt_until_done(self, work: _RowWork) -> RowResult:
        params = work.params
        while True:
            work.attempts += 1
            await self._limiter.acquire()
            started = self._clock.now()
            error: CallError | None = None
            try:
                answer = await self._client.import_vm_image(params, client_token=work.token)
            except CallError as failure:
                error = failure
            finally:
                disposition = classify(error) if error is not None else None
                self._limiter.release(throttled=disposition is Disposition.THROTTLED)
            latency = self._clock.now() - started
            if error is None:
                self._on_call(work, latency, CallOutcome.OK)
                self._unreachable.success()
                self._outage.answered()
                result = self._result(work, RowStatus.SUCCEEDED)
                result.image_arn = answer.image_arn
                result.request_id = answer.request_id
                result.latency_ms = latency * 1000.0
                return result
            assert disposition is not None
            self._on_call(work, latency, _OUTCOMES[disposition], error.code)
            fatal = self._fatal_for(error, disposition)
            if fatal is not None:
                self._stop_fatally(fatal)
                if disposition is Disposition.FATAL:
                    return self._failed(work, error)
                # No answer: the call may have landed; the row stays in_flight, resumable.
                return self._result(work, RowStatus.SKIPPED, error=(error.code, error.message))
            if disposition is Disposition.PERMANENT or not self._may_retry(work, disposition):
                return self._failed(work, error)
            if self._shared.stop_requested:
                return self._result(work, RowStatus.SKIPPED, error=(error.code, error.message))
            await self._clock.sleep(self._backoff.delay(work.attempts, self._rng))

    def _may_retry(self, work: _RowWork, disposition: Disposition) -> bool:
        if disposition is Disposition.THROTTLED:
            work.throttled_attempts += 1
            return work.throttled_attempts < self._settings.max_throttled_attempts
        return self._backoff.should_retry(work.attempts - work.throttled_attempts)

    def _fatal_for(self, error: CallError, disposition: Disposition) -> FatalBatchError | None:
        """Faults that would fail every call stop the batch with one message."""
        if disposition is Disposition.FATAL:
            return FatalBatchError(fatal_message(error))
        if self._unreachable.failure(error):
            return FatalBatchError(f"cannot reach the Image Builder endpoint: {error.message}")
        if self._outage.failure(error, now=self._clock.now()):
            return FatalBatchError(self._outage.message(error))
        return None

    def _stop_fatally(self, fatal: FatalBatchError) -> None:
        if self._shared.fatal is None:
            self._shared.fatal = fatal
        self._shared.stop_requested = True
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()

    def _on_call(
        self, work: _RowWork, latency: float, outcome: CallOutcome, code: str = ""
    ) -> None:
        event = CallEvent(
            row=work.row, attempt=work.attempts, latency_s=latency, outcome=outcome, error_code=code
        )
        for listener in self._listeners:
            listener.on_call(event)

    def _failed(self, work: _RowWork, error: CallError) -> RowResult:
        result = self._result(work, RowStatus.FAILED, error=(error.code, error.message))
        request_id = getattr(error, "request_id", None)
        if request_id:
            result.request_id = request_id
        return result

    def _result(
        self, work: _RowWork, status: RowStatus, *, error: tuple[str, str] = ("", "")
    ) -> RowResult:
        prior_attempts = work.prior.attempts if work.prior is not None else 0
        return RowResult(
            row=work.row,
            name=work.task.name,
            semantic_version=work.task.semanticVersion,
            status=status,
            client_token=work.token,
            attempts=prior_attempts + work.attempts,
            error_code=error[0],
            error_message=error[1],
        )

    def _unsent_result(self, manifest_row: ManifestRow) -> RowResult:
        """A row the run never reached: carried over if an earlier run settled it."""
        task = manifest_row.task
        if task is None:
            return _invalid_result(manifest_row)
        prior = self._prior(task)
        if prior is not None:
            carried = self._carry_over(prior, row=manifest_row.row)
            if carried is not None:
                return carried
        return RowResult(
            row=manifest_row.row,
            name=task.name,
            semantic_version=task.semanticVersion,
            status=RowStatus.SKIPPED,
            client_token=manifest_row.client_token
            or client_token(task, salt=self._settings.token_salt),
            attempts=prior.attempts if prior is not None else 0,
        )

    def _finish(self, result: RowResult) -> None:
        result.account, result.region = result.account or self.origin[0], self.origin[1]
        if not result.resumed and result.status is not RowStatus.SKIPPED:
            self._journal.record(result)
        for listener in self._listeners:
            listener.on_row_done(result)


def partition_key(account: str, region: str) -> str:
    """How the journal names a partition it reconciled (``account/region``)."""
    return f"{account}/{region}"


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
