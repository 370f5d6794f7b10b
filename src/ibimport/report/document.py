"""The wave's report document from journals alone, with each stage's times: what the HTML
report (issue 20) renders, and the one source it shares with the JSON report.

``report_document`` is the JSON report that ``ibimport report`` writes for the same
journals, plus three keys read from the journals' stage records (schema 5): ``stages``
(per stage: rows, outcomes, durations, the slowest rows), ``timeline`` (per stage, rows
started, ended and failed per time bin, the bin chosen from the span so a two-minute
rehearsal and a two-day wave both get a readable number of bins) and ``runBands`` (each
run's start and end, for the stops and resumes). Memory grows with the rows' stage
durations only (a float each), not with their text.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from ibimport.domain.stages import StageName
from ibimport.journal import SqliteJournal, StageRecord
from ibimport.report.outputs import merge_outputs

__all__ = ["BIN_WIDTHS_S", "report_document", "stage_summaries", "timeline"]

#: Timeline bin widths to choose from, smallest first: the first that keeps the span
#: within ``MAX_BINS`` bins is used.
BIN_WIDTHS_S: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600)
MAX_BINS: Final = 240
#: The slowest rows shown per stage.
SLOWEST: Final = 10
#: Outcomes a stage ends with that count as failures on the timeline.
_FAILED: Final = frozenset({"failed", "FAILED", "CANCELLED", "DELETED", "TIMED_OUT", "unknown"})


def report_document(journal_paths: Sequence[Path], *, partial: bool = False) -> dict[str, Any]:
    """The report of these journals (one, or every shard of a wave), stage times included.

    Writes nothing. Refuses journals that are not a whole wave unless ``partial``, as
    ``ibimport report`` does.
    """
    rebuilt = merge_outputs(
        journal_paths, report_file=False, partial=partial, results_path=Path("/dev/null")
    )
    document = rebuilt.report.to_json()
    records: list[StageRecord] = []
    bands: list[dict[str, Any]] = []
    for path in journal_paths:
        store = SqliteJournal.open_readonly(path)
        try:
            records.extend(store.stage_records())
            bands.extend(
                {
                    "started_at": band.started_at,
                    "ended_at": band.ended_at,
                    "interrupted": band.interrupted,
                    "fatal": band.fatal,
                }
                for band in store.run_bands()
            )
        finally:
            store.close()
    document["stages"] = stage_summaries(records)
    document["timeline"] = timeline(records)
    document["runBands"] = sorted(bands, key=lambda band: band["started_at"])
    return document


def stage_summaries(records: Iterable[StageRecord]) -> dict[str, dict[str, Any]]:
    """Per stage (in pipeline order): rows, rows still in it, outcomes, durations, slowest."""
    by_stage: dict[str, list[StageRecord]] = {}
    for record in records:
        by_stage.setdefault(record.stage.value, []).append(record)
    summaries: dict[str, dict[str, Any]] = {}
    for stage in sorted(by_stage, key=_stage_order):
        found = by_stage[stage]
        ended = [r for r in found if r.duration_s is not None]
        durations = sorted(r.duration_s for r in ended if r.duration_s is not None)
        slowest = heapq.nlargest(SLOWEST, ended, key=lambda r: r.duration_s or 0.0)
        summaries[stage] = {
            "rows": len(found),
            "open": len(found) - len(ended),
            "outcomes": dict(Counter(r.outcome for r in ended).most_common()),
            "attempts": sum(r.attempts for r in found),
            "duration_s": {
                "p50": _percentile(durations, 50),
                "p90": _percentile(durations, 90),
                "max": durations[-1] if durations else 0.0,
            },
            "slowest": [
                {
                    "name": r.name,
                    "semanticVersion": r.semantic_version,
                    "duration_s": round(r.duration_s or 0.0, 3),
                    "outcome": r.outcome,
                    "errorCode": r.error_code,
                }
                for r in slowest
            ],
            "first_started_at": min(r.started_at for r in found),
            "last_ended_at": max((r.ended_at for r in ended if r.ended_at), default=None),
        }
    return summaries


def timeline(records: Sequence[StageRecord]) -> dict[str, Any]:
    """Per stage, rows started, ended and failed in each bin from the earliest start on."""
    if not records:
        return {"start": None, "bin_s": None, "bins": 0, "stages": {}}
    start = min(r.started_at for r in records)
    end = max(max(r.started_at, r.ended_at or r.started_at) for r in records)
    span = max(end - start, 1e-9)
    width = next((w for w in BIN_WIDTHS_S if span / w <= MAX_BINS), None)
    if width is None:  # longer than the ladder: wider bins, a whole hour each
        width = 3600 * math.ceil(span / MAX_BINS / 3600)
    bins = int(span // width) + 1
    stages: dict[str, dict[str, list[int]]] = {}
    for record in records:
        series = stages.setdefault(
            record.stage.value,
            {"started": [0] * bins, "ended": [0] * bins, "failed": [0] * bins},
        )
        series["started"][int((record.started_at - start) // width)] += 1
        if record.ended_at is not None:
            index = int((record.ended_at - start) // width)
            series["ended"][index] += 1
            if record.outcome in _FAILED:
                series["failed"][index] += 1
    ordered = {stage: stages[stage] for stage in sorted(stages, key=_stage_order)}
    return {"start": start, "bin_s": width, "bins": bins, "stages": ordered}


def _percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values; 0.0 for none."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return round(ordered[rank - 1], 3)


def _stage_order(stage: str) -> int:
    return _ORDER[StageName(stage)]


_ORDER: Final = {stage: index for index, stage in enumerate(StageName)}
