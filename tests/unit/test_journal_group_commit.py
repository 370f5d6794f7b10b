"""The journal's group commit: durable marks, few commits, a flusher on the fake clock."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from journal_support import mark, open_journal, raw_row, result

from ibimport.domain.results import RowStatus
from ibimport.testing import FakeClock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "images.journal"


# ------------------------------------------------------------------ durability, group commit


async def test_mark_is_committed_before_it_returns_without_running(path: Path) -> None:
    journal = open_journal(path, clock=FakeClock(wall_start=7.0))
    await journal.mark_in_flight(
        row=3, name="a", semantic_version="1.0.0", client_token="tok-a", attempt=2
    )
    assert raw_row(path, "a") == ("in_flight", "tok-a", 2, "", "", 7.0)
    await journal.aclose()


async def test_mark_is_committed_before_it_returns_inside_running(path: Path) -> None:
    journal = open_journal(path, max_delay=0.01, clock=FakeClock())
    seen: list[tuple[object, ...] | None] = []

    async def worker(i: int) -> None:
        await mark(journal, f"img-{i}", row=i, token=f"t{i}")
        seen.append(raw_row(path, f"img-{i}"))

    async with journal.running(), anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(worker, i)
    assert len(seen) == 20
    assert all(found is not None and found[0] == "in_flight" for found in seen)
    await journal.aclose()


async def test_concurrent_marks_share_few_commits(path: Path) -> None:
    journal = open_journal(path, max_delay=0.02, max_batch=10_000, clock=FakeClock())
    async with journal.running(), anyio.create_task_group() as tg:
        for i in range(500):
            tg.start_soon(mark, journal, f"img-{i}")
    assert journal.ops_committed == 500
    assert journal.commits <= 5
    assert journal.counts()[RowStatus.IN_FLIGHT] == 500
    await journal.aclose()


async def test_full_batch_commits_without_waiting_for_the_delay(path: Path) -> None:
    clock = FakeClock()
    journal = open_journal(path, max_delay=30.0, max_batch=50, clock=clock)
    async with journal.running():
        await mark(journal, "first")  # the next commit may only come 30 s later ...
        with anyio.fail_after(5):  # ... unless a batch fills up
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(mark, journal, f"img-{i}")
                    await anyio.lowlevel.checkpoint()  # arrive one by one; the flusher waits
    assert journal.commits == 2
    assert clock.now() == 0.0  # no commit window passed, even in virtual time
    await journal.aclose()


async def test_a_lone_mark_does_not_wait_for_the_commit_window(path: Path) -> None:
    clock = FakeClock()
    journal = open_journal(path, max_delay=30.0, clock=clock)
    async with journal.running():
        with anyio.fail_after(5):
            await mark(journal, "a")
        assert clock.now() == 0.0
        assert raw_row(path, "a") is not None
    await journal.aclose()


async def test_flusher_is_idle_without_work_and_commits_records_by_itself(path: Path) -> None:
    clock = FakeClock()
    journal = open_journal(path, max_delay=0.005, clock=clock)
    async with journal.running():
        await clock.sleep(0.05)
        assert journal.commits == 0
        journal.record(result("a", RowStatus.SUCCEEDED, image_arn="arn:a"))
        with anyio.fail_after(2):
            # Polls another connection: there is no event to wait for from outside.
            while raw_row(path, "a") is None:
                await clock.sleep(0.005)
        assert journal.commits == 1
    await journal.aclose()


async def test_record_is_buffered_until_flush(path: Path) -> None:
    journal = open_journal(path)
    journal.record(result("a", RowStatus.SUCCEEDED, image_arn="arn:a", attempts=1))
    assert journal.get("a", "1.0.0") is None
    await journal.flush()
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert entry.state is RowStatus.SUCCEEDED
    assert entry.image_arn == "arn:a"
    await journal.aclose()


async def test_running_flushes_on_exit_and_reraises_the_body_error_unwrapped(path: Path) -> None:
    journal = open_journal(path, max_delay=60.0, clock=FakeClock())

    async def interrupted_run() -> None:
        async with journal.running():
            journal.record(result("a", RowStatus.FAILED, error_code="ValidationException"))
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await interrupted_run()
    assert raw_row(path, "a") is not None
    await journal.aclose()


async def test_a_commit_under_way_when_running_ends_is_not_lost(path: Path) -> None:
    journal = open_journal(path)
    async with journal.running():
        journal.record(result("a", RowStatus.SUCCEEDED))
        await anyio.lowlevel.checkpoint()  # the flusher takes the batch, then is cancelled
    entry = journal.get("a", "1.0.0")
    assert entry is not None
    assert entry.state is RowStatus.SUCCEEDED
    await journal.aclose()


async def test_get_does_not_wait_for_a_commit_in_progress(path: Path) -> None:
    journal = open_journal(path)
    await mark(journal, "a")
    # Holding the writer's lock is what a long commit in the worker thread looks like.
    with journal._write_lock:
        done = threading.Event()

        def read() -> None:
            journal.get("a", "1.0.0")
            done.set()

        thread = threading.Thread(target=read)
        thread.start()
        assert done.wait(2), "get() blocked behind the writer"
        thread.join()
    await journal.aclose()


# ------------------------------------------------------------------ batching preserves order

_NAMES = ("a", "b", "c")
_TOKENS = ("t1", "t2")
_OUTCOMES = (RowStatus.SUCCEEDED, RowStatus.EXISTS, RowStatus.FAILED, RowStatus.SKIPPED)
_op = st.one_of(
    st.tuples(st.just("mark"), st.sampled_from(_NAMES), st.sampled_from(_TOKENS)),
    st.tuples(st.sampled_from(_OUTCOMES), st.sampled_from(_NAMES), st.sampled_from(_TOKENS)),
    st.tuples(st.just("flush"), st.just(""), st.just("")),
)


def _model(ops: list[tuple[object, str, str]]) -> dict[str, tuple[RowStatus, str, int]]:
    """The row rules, one operation at a time: (state, token, attempts) per name."""
    rows: dict[str, tuple[RowStatus, str, int]] = {}
    for i, (kind, name, token) in enumerate(ops):
        old = rows.get(name)
        if kind == "flush":
            continue
        if kind == "mark":
            rows[name] = (RowStatus.IN_FLIGHT, token, i)
        elif kind is RowStatus.SKIPPED:
            rows.setdefault(name, (RowStatus.SKIPPED, token, i))
        elif old is not None and old[0].is_done and old[1] == token and not kind.is_done:  # type: ignore[attr-defined]
            continue
        else:
            rows[name] = (kind, token, i)  # type: ignore[assignment]
    return rows


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, max_size=30))
def test_grouped_commits_apply_operations_in_order(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, str, str]]
) -> None:
    path = tmp_path_factory.mktemp("journal") / "j.db"

    async def play() -> dict[str, tuple[RowStatus, str, int]]:
        journal = open_journal(path, max_delay=0.001)
        async with journal.running(), anyio.create_task_group() as tg:
            for i, (kind, name, token) in enumerate(ops):
                if kind == "mark":
                    # Started, not awaited: later operations join the same batch.
                    tg.start_soon(
                        functools.partial(
                            journal.mark_in_flight,
                            row=1,
                            name=name,
                            semantic_version="1.0.0",
                            client_token=token,
                            attempt=i,
                        )
                    )
                    await anyio.lowlevel.checkpoint()
                elif kind == "flush":
                    await journal.flush()
                else:
                    journal.record(result(name, kind, token=token, attempts=i))  # type: ignore[arg-type]
        found = {e.name: (e.state, e.client_token, e.attempts) for e in journal.entries()}
        await journal.aclose()
        return found

    assert anyio.run(play) == _model(ops)
