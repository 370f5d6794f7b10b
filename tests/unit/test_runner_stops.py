"""Rows a fatal stop cuts off carry its reason (issue 14): nothing was interrupted."""

from __future__ import annotations

from test_runner import ScriptedClient, _rows, _run

from ibimport.domain.results import RowStatus
from ibimport.engine.pipeline import RunSettings
from ibimport.errors import ApiError
from ibimport.testing import FakeClock


async def test_rows_cut_off_by_a_fatal_stop_name_the_fatal_error() -> None:
    unavailable = [ApiError("ServiceUnavailableException", "busy", status=503) for _ in range(8)]
    script = {f"vm-{i:03d}": list(unavailable) for i in range(1, 4)}  # retrying when it stops
    script["vm-004"] = [ApiError("AccessDeniedException", "not authorized", status=403)]
    client = ScriptedClient(FakeClock(), script=script)

    collector, outcome = await _run(_rows(20), client, settings=RunSettings(concurrency=4))

    assert outcome.fatal is not None
    cut_off = [
        r for r in collector.results.values() if r.attempts and r.status is RowStatus.SKIPPED
    ]
    assert cut_off, "some rows were between attempts when the batch stopped"
    for result in cut_off:
        assert result.error_code == "StoppedOnFatalError"
        assert "AccessDeniedException" in result.error_message
    assert all(r.error_code != "Interrupted" for r in collector.results.values())
