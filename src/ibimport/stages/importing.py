"""The import stage: ImportVmImage, once per row, under the partition's rate.

Asks Image Builder ``ImportVmImage`` with the row's clientToken, journalled ``in_flight``
(durably) before the first attempt. Yields ``succeeded`` (with the image's ARN),
``failed`` (a permanent 4xx, or the attempts spent on answers that refused), or leaves the
row ``in_flight`` and reports it ``skipped`` when no answer came (it may have landed: a
resume sends it again with the same token, after checking the listing). Metered by the
partition's limiter: a rate and the calls in flight.
"""

from __future__ import annotations

from typing import ClassVar

from ibimport.aws.client import PartitionClient
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import Metering, StageName
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor, GaveUp
from ibimport.flow.retry import Disposition
from ibimport.stages.base import PartitionRun, RowWork

__all__ = ["ImportStage"]


class ImportStage:
    """Imports each row that reaches it (see the module's docstring)."""

    name: ClassVar[StageName] = StageName.IMPORT
    metering: ClassVar[Metering] = Metering.RATE

    def __init__(self, client: PartitionClient, calls: CallExecutor, *, clock: Clock) -> None:
        self._client = client
        self._calls = calls
        self._clock = clock
        self._run: PartitionRun | None = None

    async def prepare(self, run: PartitionRun) -> None:
        self._run = run

    def defers(self, work: RowWork) -> bool:
        return False

    def release(self) -> None:
        return None

    async def process(self, work: RowWork) -> RowResult | None:
        run = self._run
        assert run is not None, "prepare() first"
        prior_attempts = work.prior.attempts if work.prior is not None else 0
        identity = (work.request.name, work.request.semanticVersion)
        # Buffered first, so the stage's start is committed with the in_flight mark.
        run.journal.stage_started(identity, StageName.IMPORT, at=self._clock.wall())
        await run.journal.mark_in_flight(
            row=work.row,
            name=work.request.name,
            semantic_version=work.request.semanticVersion,
            client_token=work.token,
            attempt=prior_attempts + 1,
        )
        params = work.params
        try:
            answer = await self._calls.call(
                lambda: self._client.import_vm_image(params, client_token=work.sent_token),
                attempts=work.attempts,
                stopping=lambda: run.stopping,
                on_attempt=run.attempt_listener(work),
            )
        except GaveUp as gave_up:
            result = self._gave_up(run, work, gave_up)
        else:
            result = run.result(work, RowStatus.SUCCEEDED)
            result.image_arn = answer.image_arn
            result.request_id = answer.request_id
        if result.status is not RowStatus.SKIPPED:  # a row cut off keeps an open record
            run.journal.stage_ended(
                identity,
                StageName.IMPORT,
                at=self._clock.wall(),
                attempts=work.attempts.made,
                outcome=result.status,
                error_code=result.error_code,
            )
        return result

    def _gave_up(self, run: PartitionRun, work: RowWork, gave_up: GaveUp) -> RowResult:
        error = gave_up.error
        if gave_up.fatal is not None:
            run.stop(gave_up.fatal)
        if gave_up.disposition is Disposition.FATAL or (
            gave_up.disposition is Disposition.PERMANENT and not gave_up.stopped
        ):
            return self._failed(run, work, gave_up)
        if gave_up.in_doubt or gave_up.stopped or gave_up.fatal is not None:
            # No answer to the last attempt (or a stop cut the row off): it may have
            # landed, so the row stays in_flight, resumable with its token.
            return run.result(work, RowStatus.SKIPPED, error=(error.code, error.message))
        return self._failed(run, work, gave_up)

    @staticmethod
    def _failed(run: PartitionRun, work: RowWork, gave_up: GaveUp) -> RowResult:
        error = gave_up.error
        result = run.result(work, RowStatus.FAILED, error=(error.code, error.message))
        request_id = getattr(error, "request_id", None)
        if request_id:
            result.request_id = request_id
        return result
