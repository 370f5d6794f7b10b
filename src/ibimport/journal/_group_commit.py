"""Group commit: many writers' operations, few commits, on the injected clock.

Every caller appends to the batch that is forming; one flusher task commits it, at most
once per ``max_delay`` (sooner when ``max_batch`` long). Pacing commits (rather than
delaying each batch by ``max_delay``) keeps a lone mark's wait down to one commit while a
busy run still shares each commit among everything that arrived in the last ``max_delay``.
The flusher waits on the ``Clock``, so a test drives it in virtual time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from ibimport.flow.clock import Clock

__all__ = ["Batch", "GroupCommit", "Op"]

#: (kind, parameters): what the writer is to execute, in order.
Op = tuple[int, tuple[object, ...]]


class Batch:
    """Operations committed together; ``done`` is set once they are (or failed to be)."""

    __slots__ = ("done", "nap", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.done: anyio.Event | None = None
        #: The flusher's wait for more operations, cut short once the batch is full.
        self.nap: anyio.CancelScope | None = None


class GroupCommit:
    """The forming batch and its flusher; ``write`` commits one batch, or raises."""

    def __init__(
        self,
        write: Callable[[list[Op]], None],
        *,
        clock: Clock,
        max_delay: float,
        max_batch: int,
    ) -> None:
        self._write = write
        self._clock = clock
        self._max_delay = max_delay
        self._max_batch = max_batch
        self._batch = Batch()
        self._wake: anyio.Event | None = None
        #: True while ``flushing()`` runs the flusher.
        self.running = False

    @property
    def pending(self) -> bool:
        """Operations are buffered that no commit has taken yet."""
        return bool(self._batch.ops)

    def add(self, op: Op) -> Batch:
        """Append to the forming batch and nudge the flusher: the per-row hot path."""
        batch = self._batch
        ops = batch.ops
        if not ops and self._wake is not None:
            self._wake.set()
        ops.append(op)
        if len(ops) >= self._max_batch and batch.nap is not None:
            batch.nap.cancel()
        return batch

    async def add_and_wait(self, op: Op) -> None:
        """Append ``op``; return once the commit that holds it is done (or failed).

        Without a running flusher, that commit is made at once.
        """
        batch = self.add(op)
        if batch.done is None:
            batch.done = anyio.Event()
        done = batch.done
        if not self.running:
            await self.commit()
        await done.wait()

    async def commit(self) -> None:
        """Commit the forming batch.

        Synchronous inside, on the event loop: no other task runs between swapping the
        batch out and writing it, so a cancelled flusher can never lose a batch and two
        commits never overlap. In WAL mode with synchronous=NORMAL a commit only hands
        pages to the OS (about 0.1 ms for a batch): cheaper than a thread hop, and the GIL
        hand-offs a thread costs slow every socket. The fsyncs are in the checkpoint,
        which runs in a thread of its own.
        """
        self.commit_now()

    def commit_now(self) -> None:
        """``commit`` for synchronous callers (a write made at once that must follow what
        is buffered)."""
        batch = self._batch
        if not batch.ops:
            return
        self._batch = Batch()
        try:
            self._write(batch.ops)
        except Exception:
            pass  # the writer keeps the error: every waiter and later call raises it
        finally:
            if batch.done is not None:
                batch.done.set()

    @asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """Run the flusher for the duration of the block.

        The body's own exception is re-raised unchanged (not wrapped in an
        ExceptionGroup). What is still buffered at the end is the caller's to commit.
        """
        caught: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._wake = anyio.Event()
                await tg.start(self._flush_loop)
                self.running = True
                try:
                    yield
                except BaseException as exc:
                    # Raised outside the task group below, so callers see it as is.
                    caught = exc
                finally:
                    self.running = False
                    tg.cancel_scope.cancel()
        finally:
            self._wake = None
        if caught is not None:
            raise caught

    async def _flush_loop(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Commit the forming batch, at most one commit per ``max_delay`` (or when full)."""
        task_status.started()
        clock = self._clock
        last_commit = -self._max_delay
        while True:
            wake = self._wake
            assert wake is not None
            await wake.wait()  # idle: no spinning while nothing is buffered
            self._wake = anyio.Event()
            batch = self._batch
            if not batch.ops:
                continue
            delay = last_commit + self._max_delay - clock.now()
            if delay > 0 and len(batch.ops) < self._max_batch:
                with anyio.CancelScope() as nap:  # ``add`` cancels it once the batch is full
                    batch.nap = nap
                    await clock.sleep(delay)
                batch.nap = None
            last_commit = clock.now()
            await self.commit()
            if self._batch.ops:
                self._wake.set()
