"""``ibimport.flow.clock.SystemClock``: the real clock behind the ``Clock`` protocol."""

from __future__ import annotations

import time

from ibimport.flow.clock import Clock, SystemClock
from ibimport.flow.limiter import MonotonicClock
from ibimport.testing import FakeClock


async def test_monotonic_clock_moves_forward() -> None:
    clock = SystemClock()
    before = clock.now()
    await clock.sleep(0)
    assert clock.now() >= before


def test_system_clock_wall_time_is_the_epoch_clock() -> None:
    before = time.time()
    assert before <= SystemClock().wall() <= time.time()


def test_both_clocks_satisfy_the_protocol_and_the_old_name_still_works() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock()]
    assert len(clocks) == 2
    assert MonotonicClock is SystemClock
