"""What a stage is, and what it may ask of the pipeline that runs it.

A row stage (``RowStage``) says what it asks the service, how it is metered (a rate, a
concurrency, or slots held for a long time: ``domain.stages.Metering``), which row states
it yields and how it resumes. The pipeline (``engine.pipeline``) hands each row to the
stages in order: a stage answers with the row's outcome (the row stops there) or ``None``
(on to the next stage). A stage whose answer may take long (a task still converting, a
slot held for hours) says so with ``defers``, and the pipeline waits for it without holding
a worker. ``prepare`` runs once per partition before any row (a listing, a batched check).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from ibimport.domain.request import ImageRequest
from ibimport.domain.results import RowResult, RowStatus
from ibimport.domain.stages import Metering, StageName
from ibimport.errors import FatalBatchError
from ibimport.flow.executor import Attempt, Attempts
from ibimport.journal import Journal, JournalEntry

__all__ = ["HoldsOutcome", "PartitionRun", "RowStage", "RowWork"]


@dataclass(slots=True)
class RowWork:
    """One valid row on its way through the stages."""

    row: int
    request: ImageRequest
    #: ImportVmImage's parameters, built once: for the token and for every attempt.
    params: dict[str, Any]
    token: str
    #: What an earlier run journalled of this row (None: a fresh journal, or a new row).
    prior: JournalEntry | None
    attempts: Attempts = field(default_factory=Attempts)
    #: The clientToken ImportVmImage is sent with when it is not ``token`` (a row with
    #: disks: its task's, ``stages.taskstart.import_vm_image_token``); "" means ``token``.
    call_token: str = ""

    @property
    def sent_token(self) -> str:
        return self.call_token or self.token


class PartitionRun(Protocol):
    """What a stage may ask of the pipeline running one partition."""

    #: (account, Region) of the partition.
    origin: tuple[str, str]
    journal: Journal

    @property
    def stopping(self) -> bool:
        """A stop was asked for (a signal, or a fatal error): start nothing new."""
        ...

    def stop(self, fatal: FatalBatchError) -> None:
        """Every call of this partition would fail: stop it, with this one message."""
        ...

    def result(
        self, work: RowWork, status: RowStatus, *, error: tuple[str, str] = ("", "")
    ) -> RowResult:
        """The row's outcome, with its token and attempts, ready to be finished."""
        ...

    def beside(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` beside the rows (a stage's polling) until every row is done."""
        ...

    def attempt_listener(self, work: RowWork) -> Callable[[Attempt], None]:
        """Tells the run's listeners of each attempt of this row's calls."""
        ...


class RowStage(Protocol):
    """One stage of every row's walk (see the module's docstring)."""

    name: ClassVar[StageName]
    metering: ClassVar[Metering]

    async def prepare(self, run: PartitionRun) -> None:
        """Once per partition, before any row; a failure stops the partition (``run.stop``)."""
        ...

    def defers(self, work: RowWork) -> bool:
        """Whether ``process`` may wait long for this row (it then holds no worker)."""
        ...

    async def process(self, work: RowWork) -> RowResult | None:
        """The row's outcome if it ends here; None: on to the next stage."""
        ...

    def release(self) -> None:
        """A stop: answer every row waiting in this stage now."""
        ...


@runtime_checkable
class HoldsOutcome(Protocol):
    """A stage whose work goes on after the row passed it (an EC2 import task behind the
    image): the row's outcome waits, without a worker, for ``settle`` to give the final one."""

    def holds(self, work: RowWork) -> bool:
        """Whether the row's outcome must wait for this stage's work."""
        ...

    async def settle(self, work: RowWork, result: RowResult) -> RowResult:
        """The row's final outcome, given the one its walk ended with."""
        ...
