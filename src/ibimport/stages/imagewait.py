"""Following imported images until they are AVAILABLE, FAILED, CANCELLED or out of time.

ImportVmImage answers while the image is PENDING; it becomes AVAILABLE only once its EC2
import task completed and the build ran. botocore's ImageAvailable waiter polls GetImage
for one image per round; 10,000 images would cost 10,000 calls a round. Here a round
reads every outstanding image's state in batches:

- ListImageBuildVersions without an ARN lists 100 builds of the account with their state
  per call, so while many images are outstanding one listing (``P`` pages, measured on
  the first round) covers them all;
- once fewer images are outstanding than that listing's pages, GetImage for each is
  cheaper (one call each): the crossover is the last listing's page count;
- an outstanding image absent from a complete listing is asked for once by GetImage in
  the same round: a new build may not be listed yet (the older model said up to two
  minutes), and one the service no longer has is DELETED at once (issue 22 item 13),
  instead of being listed round after round until the timeout.

Pages may be shorter than asked and still carry a nextToken (current model): a listing is
complete only at the page without one.

Rounds are spaced by an interval that grows by ``growth`` up to ``max_interval_s``
(early images settle quickly, the stragglers are polled less often), every call goes
through the limiter and the retry rules (``calls``), and ``on_settled`` hears each
round's final states as they are learnt, so a caller can journal them and a killed wait
resumes with only the images still outstanding; ``on_round`` hears where the wait stands
after each round (``polling.WaitRound``), for people watching. Pure engine: no printing,
no files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

import anyio

from ibimport.aws.client import ImageState, PartitionClient
from ibimport.domain.rowstate import ImageStatus, image_status
from ibimport.domain.stages import StageName
from ibimport.errors import ApiError
from ibimport.flow.clock import Clock
from ibimport.flow.executor import CallExecutor, first_error
from ibimport.journal import Followup, JournalEntry
from ibimport.stages.polling import Waiting, WaitRound

__all__ = [
    "ImageOutcome",
    "ImageWaiter",
    "WaitFigures",
    "WaitJournal",
    "WaitSettings",
    "follow_journal",
]

#: GetImage's answer for an ARN the service does not have (any more): the image is gone.
_GONE_CODES = frozenset({"ResourceNotFoundException"})


@dataclass(frozen=True, kw_only=True, slots=True)
class WaitSettings:
    """How often to look, for how long (None: until every image settled)."""

    interval_s: float = 5.0
    max_interval_s: float = 60.0
    growth: float = 1.5
    timeout_s: float | None = 3600.0
    #: GetImage calls in flight at once in a round of GetImage.
    parallel: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= self.max_interval_s or self.growth < 1 or self.parallel < 1:
            raise ValueError("WaitSettings needs 0 < interval_s <= max_interval_s, growth >= 1")


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """One image's final state (or TIMED_OUT) and the service's reason."""

    arn: str
    status: ImageStatus
    reason: str = ""


@dataclass(slots=True)
class WaitFigures:
    """What a wait cost: per round (outstanding at its start, calls made), and the totals."""

    rounds: list[tuple[int, int]] = field(default_factory=list)
    list_calls: int = 0
    get_calls: int = 0
    elapsed_s: float = 0.0
    timed_out: bool = False

    @property
    def calls(self) -> int:
        return sum(calls for _, calls in self.rounds)


class ImageWaiter:
    """Follows a set of image build ARNs to their final states, in batched rounds."""

    def __init__(
        self,
        client: PartitionClient,
        calls: CallExecutor,
        *,
        clock: Clock,
        settings: WaitSettings | None = None,
        on_settled: Callable[[Sequence[ImageOutcome]], None] | None = None,
        on_round: Callable[[WaitRound], None] | None = None,
    ) -> None:
        self._client = client
        self._calls = calls
        self._clock = clock
        self._settings = settings or WaitSettings()
        self._on_settled = on_settled
        self._on_round = on_round
        self._pages: int | None = None  # the last full listing's page count
        #: The service's last word on each outstanding image (PENDING, CREATING, ...).
        self._seen: dict[str, str] = {}
        self.figures = WaitFigures()

    async def wait(self, arns: Iterable[str]) -> dict[str, ImageOutcome]:
        """Every ARN's outcome; those still being built at the deadline are TIMED_OUT."""
        settings = self._settings
        outstanding = dict.fromkeys(arns)
        outcomes: dict[str, ImageOutcome] = {}
        started = self._clock.now()
        deadline = None if settings.timeout_s is None else started + settings.timeout_s
        interval = settings.interval_s
        first = 0.0 if outstanding else None
        self._tell(outcomes, outstanding, next_poll_s=first, deadline=deadline)
        while outstanding:
            before = self._calls.calls
            count = len(outstanding)
            if self._pages is None or count > self._pages:
                settled = await self._listing_round(outstanding)
            else:
                settled = await self._get_round(list(outstanding))
            self.figures.rounds.append((count, self._calls.calls - before))
            for outcome in settled:
                outstanding.pop(outcome.arn, None)
                self._seen.pop(outcome.arn, None)
                outcomes[outcome.arn] = outcome
            if settled and self._on_settled is not None:
                self._on_settled(settled)
            if not outstanding:
                self._tell(outcomes, outstanding, next_poll_s=None, deadline=deadline)
                break
            now = self._clock.now()
            if deadline is not None and now >= deadline:
                self.figures.timed_out = True
                late = [ImageOutcome(arn, ImageStatus.TIMED_OUT) for arn in outstanding]
                outcomes.update((outcome.arn, outcome) for outcome in late)
                if self._on_settled is not None:
                    self._on_settled(late)
                self._tell(outcomes, {}, next_poll_s=None, deadline=deadline)
                break
            pause = interval if deadline is None else min(interval, deadline - now)
            self._tell(outcomes, outstanding, next_poll_s=pause, deadline=deadline)
            await self._clock.sleep(pause)
            interval = min(interval * settings.growth, settings.max_interval_s)
        self.figures.elapsed_s = self._clock.now() - started
        return outcomes

    def _tell(
        self,
        outcomes: dict[str, ImageOutcome],
        outstanding: dict[str, None],
        *,
        next_poll_s: float | None,
        deadline: float | None,
    ) -> None:
        """Where the wait stands, to ``on_round``: settled images by final state, the
        outstanding ones by the service's last word on them (none yet before the first)."""
        if self._on_round is None:
            return
        states = Counter(outcome.status.value for outcome in outcomes.values())
        states.update(self._seen[arn] for arn in outstanding if arn in self._seen)
        left = None if deadline is None else max(deadline - self._clock.now(), 0.0)
        self._on_round(
            WaitRound(
                waiting_for=Waiting.IMAGES,
                states=dict(states),
                outstanding=len(outstanding),
                next_poll_s=next_poll_s,
                time_left_s=left,
                rounds=len(self.figures.rounds),
            )
        )

    async def _listing_round(self, outstanding: dict[str, None]) -> list[ImageOutcome]:
        """One full listing of the account's builds; the outstanding ones that ended."""
        settled: list[ImageOutcome] = []
        listed: set[str] = set()
        pages = 0
        token: str | None = None
        while True:
            page = await self._calls.read(partial(self._client.list_builds, next_token=token))
            pages += 1
            for build in page.builds:
                if build.arn in outstanding:
                    listed.add(build.arn)
                    self._seen[build.arn] = build.status
                    final = image_status(build.status)
                    if final is not None:
                        settled.append(ImageOutcome(build.arn, final, build.reason))
            token = page.next_token
            if token is None:
                break
        self.figures.list_calls += pages
        self._pages = pages
        absent = [arn for arn in outstanding if arn not in listed]
        if absent:
            settled += await self._get_round(absent)
        return settled

    async def _get_round(self, arns: list[str]) -> list[ImageOutcome]:
        """GetImage for each outstanding image, a few in flight; the ones that ended."""
        settled: list[ImageOutcome] = []
        queue = iter(arns)

        async def worker() -> None:
            for arn in queue:
                outcome = await self._get(arn)
                if outcome is not None:
                    settled.append(outcome)

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self._settings.parallel, len(arns))):
                    tg.start_soon(worker)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        self.figures.get_calls += len(arns)
        return settled

    async def _get(self, arn: str) -> ImageOutcome | None:
        try:
            state: ImageState = await self._calls.read(partial(self._client.get_image, arn))
        except ApiError as error:
            if error.code in _GONE_CODES:
                return ImageOutcome(arn, ImageStatus.DELETED, f"{error.code}: {error.message}")
            raise
        self._seen[arn] = state.status
        final = image_status(state.status)
        return None if final is None else ImageOutcome(arn, final, state.reason)


class WaitJournal(Protocol):
    """The journal a wait reads its images from and records their final states in."""

    def entries(self) -> Iterator[JournalEntry]: ...

    def followups(self) -> dict[tuple[str, str], Followup]: ...

    def record_image_statuses(self, images: Iterable[tuple[str, str, str, str]]) -> None: ...

    def stage_started(self, identity: tuple[str, str], stage: StageName, *, at: float) -> None: ...

    def stage_ended(
        self,
        identity: tuple[str, str],
        stage: StageName,
        *,
        at: float,
        attempts: int,
        outcome: str,
        error_code: str = "",
        started_at: float | None = None,
    ) -> None: ...


async def follow_journal(
    client: PartitionClient,
    journal: WaitJournal,
    *,
    calls: CallExecutor,
    clock: Clock,
    settings: WaitSettings,
    only: Callable[[JournalEntry], bool] | None = None,
    on_round: Callable[[WaitRound], None] | None = None,
) -> tuple[Counter[ImageStatus], WaitFigures]:
    """Follow every imported row of ``journal`` whose image has no final state yet.

    ``only``: the rows this client can see (one partition's, of a batch that has several).
    ``on_round``: where the wait stands after each round, images an earlier wait settled
    included.

    Rows ``succeeded`` or ``exists`` with an image ARN; an image an earlier wait settled
    (anything but TIMED_OUT) is not asked again, so an interrupted wait resumes. Each
    round's final states are committed as they are learnt. Returns the count of every
    imported row's image by state (those settled earlier included) and what it cost.
    """
    known = journal.followups()
    by_arn: dict[str, tuple[str, str]] = {}
    totals: Counter[ImageStatus] = Counter()
    for entry in journal.entries():
        if not entry.state.is_done or not entry.image_arn:
            continue
        if only is not None and not only(entry):
            continue
        learnt = known.get((entry.name, entry.semantic_version))
        earlier = ImageStatus(learnt.image_status) if learnt and learnt.image_status else None
        if earlier is not None and earlier.is_final:
            totals[earlier] += 1
            continue
        by_arn[entry.image_arn] = (entry.name, entry.semantic_version)
    began = clock.wall()
    for identity in by_arn.values():
        journal.stage_started(identity, StageName.IMAGE_WAIT, at=began)

    def record(outcomes: Sequence[ImageOutcome]) -> None:
        # The image_wait stage's end is committed with the statuses (one transaction).
        now, rounds = clock.wall(), len(waiter.figures.rounds)
        for o in outcomes:
            if o.arn in by_arn:
                journal.stage_ended(
                    by_arn[o.arn], StageName.IMAGE_WAIT, at=now, attempts=rounds, outcome=o.status
                )
        journal.record_image_statuses(
            (*by_arn[o.arn], o.status.value, o.reason) for o in outcomes if o.arn in by_arn
        )

    def tell(figures: WaitRound) -> None:
        assert on_round is not None
        states = Counter({status.value: n for status, n in totals.items()})
        states.update(figures.states)
        on_round(replace(figures, states=dict(states)))

    waiter = ImageWaiter(
        client,
        calls,
        clock=clock,
        settings=settings,
        on_settled=record,
        on_round=tell if on_round is not None else None,
    )
    outcomes = await waiter.wait(by_arn)
    totals.update(outcome.status for outcome in outcomes.values())
    return totals, waiter.figures
