"""The selection pass (``engine.selection``) over a real manifest file, sharded and spread
over Regions: each shard selects its own rows and together they select every row once;
each partition's second read gets exactly its rows; a row's token is derived once a pass
and never again by the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from orchestration_support import Collector, MemoryJournal, StepStage, succeed

from ibimport import BatchConfig, Shard, client_token
from ibimport.domain.results import RowStatus
from ibimport.engine import pipeline as pipeline_module
from ibimport.engine import rowprints, selection
from ibimport.engine.fleet import Partition
from ibimport.engine.partitions import Place
from ibimport.engine.pipeline import Pipeline
from ibimport.testing import FakeClock

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")


def _manifest(path: Path, n: int, *, broken: frozenset[int] = frozenset()) -> Path:
    """Rows 1..n over three Regions; rows in ``broken`` name an unknown platform."""
    lines = ["name,semanticVersion,platform,vmImportTaskId,region"]
    for i in range(1, n + 1):
        platform = "BeOS" if i in broken else "Linux"
        lines.append(f"vm-{i:03d},1.0.0,{platform},import-ami-{i:017d},{REGIONS[i % 3]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[str]:
    calls: list[str] = []
    real: Callable[..., str] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> str:
        token = real(*args, **kwargs)
        calls.append(token)
        return token

    monkeypatch.setattr(module, name, counted)
    return calls


def _planned(found: selection.Selection, *, rows: int) -> set[int]:
    """The rows the selection placed in any of its partitions (invalid ones included)."""
    every = found.plan.rows_in(frozenset(range(len(found.plan.places))))
    return {row for row in range(1, rows + 1) if every(row)}


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_shards_of_a_wave_select_every_row_exactly_once(tmp_path: Path, count: int) -> None:
    manifest = _manifest(tmp_path / "wave.csv", 60, broken=frozenset({7, 30}))
    owners: dict[int, list[int]] = {}
    totals = invalid = 0
    for k in range(count):
        config = BatchConfig(manifest=manifest, shard=Shard(k, count))
        found = selection.select_rows(config)
        totals += found.total_rows
        invalid += found.invalid_count
        planned = _planned(found, rows=60)
        for row in planned:
            owners.setdefault(row, []).append(k)
        # An invalid row has no image to hash: one shard reports it, with its rows.
        assert {r.row for r in found.invalid_rows} <= planned
        assert found.invalid_count == len(found.invalid_rows)
    assert sorted(owners) == list(range(1, 61))
    assert all(len(shards) == 1 for shards in owners.values()), owners
    assert (totals, invalid) == (60, 2)


def test_a_shard_derives_tokens_only_for_its_own_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _manifest(tmp_path / "wave.csv", 40)
    derived = _counting(monkeypatch, selection, "client_token")
    found = selection.select_rows(BatchConfig(manifest=manifest, shard=Shard(1, 3)))
    assert 0 < found.total_rows < 40
    assert len(derived) == found.total_rows  # once a row, and only for this shard's rows


async def test_each_partition_reads_its_own_rows_and_the_pipeline_derives_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BatchConfig(manifest=_manifest(tmp_path / "wave.csv", 30))
    first = _counting(monkeypatch, selection, "client_token")
    second = _counting(monkeypatch, rowprints, "client_token")
    third = _counting(monkeypatch, pipeline_module, "client_token")
    found = selection.select_rows(config)
    assert len(first) == 30
    assert sorted(p.region for p in found.plan.places) == sorted(REGIONS)

    seen: dict[str, list[int]] = {}
    for index, place in enumerate(found.plan.places):
        assert place.region is not None
        partition = Partition("123456789012", place.region, {index}, None)
        rows = list(selection.partition_rows(config, partition, found.plan, found.prints))
        seen[place.region] = [r.row for r in rows]
        assert all(r.task is not None and r.task.region == place.region for r in rows)
        clock = FakeClock()
        stage = StepStage("import", [], clock, answer=succeed)
        collector = Collector()
        pipe = Pipeline([stage], journal=MemoryJournal(), clock=clock, listeners=[collector])
        await pipe.run(rows)
        assert [collector.results[r.row].client_token for r in rows] == [
            client_token(r.task) for r in rows if r.task is not None
        ]
        assert {r.status for r in collector.results.values()} == {RowStatus.SUCCEEDED}
    for i, region in enumerate(REGIONS):
        assert seen[region] == [n for n in range(1, 31) if n % 3 == i]
    assert len(second) == 30  # the second read: once a row, to hold it to the first
    assert third == []  # the pipeline took the tokens the read carried


def test_a_partition_reads_no_further_than_its_last_row(tmp_path: Path) -> None:
    config = BatchConfig(manifest=_manifest(tmp_path / "wave.csv", 9))
    found = selection.select_rows(config)
    east = found.plan.places.index(Place(None, "us-east-1"))
    assert found.plan.last_row_in(frozenset({east})) == 9
    west = found.plan.places.index(Place(None, "eu-west-1"))
    assert found.plan.last_row_in(frozenset({west})) == 7
