"""Where a batch's outputs go, and writing them again from a journal alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibimport._files import check_paths
from ibimport.errors import (
    ConfigError,
)
from ibimport.journal import SqliteJournal
from ibimport.partitions import Shard
from ibimport.report import ResultsWriter, RunStats, write_report

#: How many invalid rows preflight keeps to show; the count is always exact.


def default_output_paths(manifest: Path, *, shard: Shard | None = None) -> tuple[Path, Path, Path]:
    """Journal, report and results beside the manifest, named after it (and the shard)."""
    stem = manifest.with_suffix("") if manifest.suffix else manifest
    name = stem.name + (f".{shard.label}" if shard is not None else "")
    return (
        stem.with_name(name + ".journal"),
        stem.with_name(name + ".report.json"),
        stem.with_name(name + ".results.csv"),
    )


@dataclass(frozen=True, slots=True)
class RebuiltOutputs:
    """The report and results ``rebuild_outputs`` wrote, and the figures in them."""

    stats: RunStats
    report: dict[str, Any]
    report_path: Path
    results_path: Path


def rebuild_outputs(
    journal_path: Path,
    *,
    report_path: Path | None = None,
    results_path: Path | None = None,
    report_file: bool = True,
) -> RebuiltOutputs:
    """Write a journal's report and results from the journal alone.

    By default where that journal's run wrote them (its header records them); for a
    journal written before the paths were recorded, beside its manifest, or beside the
    journal when the manifest's folder is gone (stdin was a temporary file). The report
    lists every run the journal recorded. ``report_file=False`` only returns the report.
    """
    store = SqliteJournal.open_readonly(journal_path)
    try:
        recorded = store.header.settings
        manifest = Path(store.header.manifest_path)
        beside = manifest if manifest.is_absolute() and manifest.parent.is_dir() else journal_path
        _, default_report, default_results = default_output_paths(beside)
        report_path = report_path or _recorded_path(recorded, "report") or default_report
        results_path = results_path or _recorded_path(recorded, "results") or default_results
        outputs = {"--report": report_path} if report_file else {}
        check_paths(
            inputs={"the journal": journal_path}, outputs={**outputs, "--results": results_path}
        )
        stats = RunStats()
        followups = store.followups()
        try:
            with ResultsWriter(results_path) as writer:
                for entry in store.entries():
                    result = entry.to_result()
                    learnt = followups.get((entry.name, entry.semantic_version))
                    if learnt is not None:
                        result.image_status = learnt.image_status
                        result.image_status_reason = learnt.image_reason
                    stats.on_row_done(result)
                    writer.write(result)
            report = stats.to_report(earlier_runs=store.runs())
            stats.adopt_batch_figures(report)
            if report_file:
                write_report(report_path, report)
        except OSError as error:
            raise ConfigError(f"cannot write {error.filename}: {error.strerror}") from None
    finally:
        store.close()
    return RebuiltOutputs(
        stats=stats, report=report, report_path=report_path, results_path=results_path
    )


def _recorded_path(settings: Mapping[str, object], key: str) -> Path | None:
    value = settings.get(key)
    return Path(value) if isinstance(value, str) and value else None
