"""Where a batch stands, from its journal alone (``ibimport status``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ibimport.domain.results import RowStatus
from ibimport.domain.rowstate import ImageStatus, RerunPlan, reported_counts
from ibimport.engine.recorded import RecordedRun
from ibimport.journal import SqliteJournal

#: How many failed or blocked rows, and images not AVAILABLE, a status names.
SHOWN_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class RowNote:
    """One row worth a person's look: failed or blocked, or its image not AVAILABLE."""

    row: int
    name: str
    semantic_version: str
    state: str  # the row's state, or its image's
    code: str  # the error code, or the image's reason
    message: str = ""


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """Where a batch stands, from its journal alone (``ibimport status``)."""

    manifest_path: str
    updated_at: datetime | None  # local time, with its timezone
    counts: Mapping[RowStatus, int]  # the journal's own states
    errors_by_code: Mapping[str, int]
    rerun: RerunPlan
    #: ``counts`` in the words of the results and the report (unfinished rows ``skipped``).
    reported: Mapping[RowStatus, int] = field(default_factory=dict)
    #: Blocked rows per reason (TaskPending, TaskFailed, TaskNotFound).
    blocked_by_code: Mapping[str, int] = field(default_factory=dict)
    #: Imported rows' images by the state a wait learnt (none: never waited for).
    images: Mapping[ImageStatus, int] = field(default_factory=dict)
    #: The first few failed and blocked rows, in row order.
    rows: tuple[RowNote, ...] = ()
    #: The first few images FAILED, CANCELLED, DELETED or TIMED_OUT, in row order.
    image_rows: tuple[RowNote, ...] = ()
    #: The options of the run that wrote the journal.
    recorded: RecordedRun = field(default_factory=lambda: RecordedRun(known=False))
    journal_path: Path = Path()

    @property
    def resume_command(self) -> str | None:
        """The command that resumes the batch (None: a journal too old to say)."""
        return self.recorded.resume_command(self.journal_path) if self.recorded.known else None

    @property
    def wait_command(self) -> str:
        """The command that follows the images still outstanding or timed out."""
        return self.recorded.wait_command(self.journal_path)

    @property
    def images_to_follow(self) -> int:
        """Imported images no wait settled yet (never followed, or timed out)."""
        done = sum(self.counts.get(s, 0) for s in (RowStatus.SUCCEEDED, RowStatus.EXISTS))
        settled = sum(n for status, n in self.images.items() if status.is_final)
        return max(done - settled, 0)


def recorded_run(journal_path: Path) -> RecordedRun:
    """The options of the run that wrote a journal, from its header alone (no row is read)."""
    store = SqliteJournal.open_readonly(journal_path)
    try:
        return RecordedRun.from_header(store.header.manifest_path, store.header.settings)
    finally:
        store.close()


def batch_status(journal_path: Path) -> BatchStatus:
    """Counts per state, failures and blocks by code, images by state, what a re-run does."""
    store = SqliteJournal.open_readonly(journal_path)
    try:
        counts = store.counts()
        last = store.last_update()
        followups = store.followups()
        blocked: Counter[str] = Counter()
        images: Counter[ImageStatus] = Counter()
        rows: list[RowNote] = []
        image_rows: list[RowNote] = []
        for entry in store.entries():
            state = entry.state
            if state is RowStatus.BLOCKED:
                blocked[entry.error_code or "unknown"] += 1
            if state in (RowStatus.FAILED, RowStatus.BLOCKED) and len(rows) < SHOWN_EXAMPLES:
                rows.append(
                    RowNote(
                        entry.row,
                        entry.name,
                        entry.semantic_version,
                        state.value,
                        entry.error_code,
                        entry.error_message,
                    )
                )
            if not state.is_done:
                continue
            learnt = followups.get((entry.name, entry.semantic_version))
            if learnt is None or not learnt.image_status:
                continue
            image = ImageStatus(learnt.image_status)
            images[image] += 1
            if image is not ImageStatus.AVAILABLE and len(image_rows) < SHOWN_EXAMPLES:
                image_rows.append(
                    RowNote(
                        entry.row,
                        entry.name,
                        entry.semantic_version,
                        image.value,
                        learnt.image_reason,
                    )
                )
        header = store.header
        return BatchStatus(
            manifest_path=header.manifest_path,
            updated_at=datetime.fromtimestamp(last).astimezone() if last is not None else None,
            counts=counts,
            errors_by_code=store.errors_by_code(),
            rerun=RerunPlan.from_counts(counts),
            reported=reported_counts(counts),
            blocked_by_code=dict(blocked.most_common()),
            images=dict(images),
            rows=tuple(rows),
            image_rows=tuple(image_rows),
            recorded=RecordedRun.from_header(header.manifest_path, header.settings),
            journal_path=journal_path,
        )
    finally:
        store.close()
