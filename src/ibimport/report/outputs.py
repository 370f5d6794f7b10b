"""Where a batch's outputs go, and writing them again from journals alone.

Several journals are merged only when they are a whole wave: the shards ``0/N`` to
``N-1/N`` of one manifest, each once (every journal records its ``K/N``); anything else
is refused, or with ``partial`` reported as partial, naming what is missing.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ibimport._files import check_paths, inside_folder, output_error, remove_leftovers
from ibimport.engine.partitions import Shard
from ibimport.errors import (
    ConfigError,
)
from ibimport.journal import SqliteJournal, idle
from ibimport.report import ResultsWriter, RunStats, write_report
from ibimport.report.documents import PartialWave, RunReport


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
    report: RunReport
    report_path: Path
    results_path: Path
    #: Why the journals merged are not a whole wave (``partial`` merges only); empty: whole.
    gaps: tuple[str, ...] = field(default=())


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
    The paths are held to ``journal_outputs``' rules before anything is written.
    """
    store = SqliteJournal.open_readonly(journal_path)
    try:
        report_path, results_path = _checked_outputs(
            [store],
            [journal_path],
            report_path=report_path,
            results_path=results_path,
            report_file=report_file,
        )
        return _write_outputs(
            [store], report_path=report_path, results_path=results_path, report_file=report_file
        )
    finally:
        store.close()


def journal_outputs(
    journal_path: Path,
    *,
    report_path: Path | None = None,
    results_path: Path | None = None,
    report_file: bool = True,
) -> tuple[Path, Path]:
    """Where ``rebuild_outputs`` would write a journal's report and results, checked first.

    A journal is data (shard journals come from other machines): a path it records, or
    one derived from the manifest path it records, is used only inside the journal's own
    folder; elsewhere only when named (``report_path``, ``results_path``). No output may be
    the journal, the manifest or the other output (links resolved, device and inode
    compared). ``ConfigError`` says which.
    """
    store = SqliteJournal.open_readonly(journal_path)
    try:
        return _checked_outputs(
            [store],
            [journal_path],
            report_path=report_path,
            results_path=results_path,
            report_file=report_file,
        )
    finally:
        store.close()


def merge_outputs(
    journal_paths: Sequence[Path],
    *,
    report_path: Path | None = None,
    results_path: Path | None = None,
    report_file: bool = True,
    partial: bool = False,
) -> RebuiltOutputs:
    """One report and one results file, in manifest order, from the journals of the shards
    of one manifest (``ibimport report J1 J2 ...``): what a single run would have written.

    By default beside the manifest, named after it (without the shard), when that is in
    one of the journals' folders (``journal_outputs``' rules). Journals that are not a
    whole wave raise ``ConfigError`` saying what is missing; with ``partial`` they are
    merged, and the report says so (``partial``) and ``gaps`` names what is missing.
    """
    if len(journal_paths) == 1:
        return rebuild_outputs(
            journal_paths[0],
            report_path=report_path,
            results_path=results_path,
            report_file=report_file,
        )
    stores: list[SqliteJournal] = []
    try:
        for path in journal_paths:
            stores.append(SqliteJournal.open_readonly(path))
        manifests = {store.header.manifest_path for store in stores}
        if len(manifests) > 1:
            raise ConfigError(
                "the journals are of different manifests (" + ", ".join(sorted(manifests)) + ")"
                "; merge the shards of one manifest"
            )
        gaps = wave_gaps(
            [
                (path, store.header.settings)
                for path, store in zip(journal_paths, stores, strict=True)
            ]
        )
        if gaps and not partial:
            raise ConfigError(
                "the journals are not a whole wave: " + "; ".join(gaps) + "; give every "
                "shard's journal, or pass --partial to report these alone as partial"
            )
        report_path, results_path = _checked_outputs(
            stores,
            journal_paths,
            report_path=report_path,
            results_path=results_path,
            report_file=report_file,
            recorded=False,
        )
        return _write_outputs(
            stores,
            report_path=report_path,
            results_path=results_path,
            report_file=report_file,
            gaps=tuple(gaps),
        )
    finally:
        for store in stores:
            store.close()


def _checked_outputs(
    stores: Sequence[SqliteJournal],
    journal_paths: Sequence[Path],
    *,
    report_path: Path | None,
    results_path: Path | None,
    report_file: bool,
    recorded: bool = True,
) -> tuple[Path, Path]:
    """The outputs' paths (named, else recorded, else beside the manifest), checked."""
    header = stores[0].header
    manifest = Path(header.manifest_path) if header.manifest_path else None
    beside = _beside(manifest, journal_paths[0]) if manifest is not None else journal_paths[0]
    _, default_report, default_results = default_output_paths(beside)
    folders = [path.parent for path in journal_paths]
    chosen: dict[str, Path] = {}
    for option, named, key, default in (
        ("--report", report_path, "report", default_report),
        ("--results", results_path, "results", default_results),
    ):
        if named is not None:
            chosen[option] = named
            continue
        path = (_recorded_path(header.settings, key) if recorded else None) or default
        if not any(inside_folder(path, folder) for folder in folders):
            raise ConfigError(
                f"the journal {journal_paths[0]} puts its {option[2:]} at {path}, outside the "
                f"journal's folder; a journal is data, so ibimport writes there only when told: "
                f"pass {option} {path} (or another path)"
            )
        chosen[option] = path
    inputs = {
        (f"journal {i + 1}" if len(journal_paths) > 1 else "the journal"): path
        for i, path in enumerate(journal_paths)
    }
    if manifest is not None and manifest.is_absolute():
        inputs["the manifest"] = manifest
    outputs = {"--results": chosen["--results"]}
    if report_file:
        outputs = {"--report": chosen["--report"], **outputs}
    check_paths(inputs=inputs, outputs=outputs)
    return chosen["--report"], chosen["--results"]


def _write_outputs(
    stores: Sequence[SqliteJournal],
    *,
    report_path: Path,
    results_path: Path,
    report_file: bool,
    gaps: tuple[str, ...] = (),
) -> RebuiltOutputs:
    """The results (every journal's rows, in row order) and the report, from journals."""
    with contextlib.ExitStack() as held:
        if all(held.enter_context(idle(store.path)) for store in stores):
            for path in (report_path, results_path):  # a killed writer's, no live run's
                remove_leftovers(path)
    try:
        with ResultsWriter(results_path) as writer:
            stats = journal_results(stores, writer)
        runs = [run for store in stores for run in store.runs()]
        partial = PartialWave(journals=len(stores), missing=gaps) if gaps else None
        report = stats.to_report(earlier_runs=runs, partial=partial)
        stats.adopt_batch_figures(report)
        if report_file:
            write_report(report_path, report.to_json())
    except OSError as error:  # reading the spool back; the writers name their own path
        raise output_error(results_path, error) from None
    return RebuiltOutputs(
        stats=stats, report=report, report_path=report_path, results_path=results_path, gaps=gaps
    )


def journal_results(stores: Sequence[SqliteJournal], writer: ResultsWriter) -> RunStats:
    """Every journal's rows in row order, each with its image's state as a wait learnt it,
    written to ``writer``; their figures (the totals, the images by state) returned."""
    stats = RunStats()
    followups = {key: value for store in stores for key, value in store.followups().items()}
    entries = heapq.merge(*(store.entries() for store in stores), key=lambda e: e.row)
    for entry in entries:
        result = entry.to_result()
        learnt = followups.get((entry.name, entry.semantic_version))
        if learnt is not None:
            result.image_status = learnt.image_status
            result.image_status_reason = learnt.image_reason
        stats.on_row_done(result)
        writer.write(result)
    return stats


def wave_gaps(journals: Sequence[tuple[Path, Mapping[str, object]]]) -> list[str]:
    """What keeps these journals (path, header settings) from being one whole wave.

    A whole wave is one unsharded journal, or the shards ``0/N`` .. ``N-1/N``, each once.
    """
    if len(journals) < 2:
        return []
    gaps: list[str] = []
    by_count: dict[int, dict[int, list[Path]]] = {}
    unsharded: list[Path] = []
    for path, settings in journals:
        if "shard" not in settings:
            gaps.append(f"{path} does not record its shard (written by an older ibimport)")
            continue
        shard = settings["shard"]
        if not isinstance(shard, str):
            unsharded.append(path)
            continue
        index, count = (int(part) for part in shard.split("/"))
        by_count.setdefault(count, {}).setdefault(index, []).append(path)
    if unsharded:
        names = ", ".join(str(p) for p in unsharded)
        gaps.append(f"{names}: a run of every row (no --shard), merged with other journals")
    if len(by_count) > 1:
        counts = ", ".join(f"{n} shards" for n in sorted(by_count))
        gaps.append(f"shards of different waves ({counts})")
    for count, shards in sorted(by_count.items()):
        missing = [f"{k}/{count}" for k in range(count) if k not in shards]
        if missing:
            gaps.append(f"missing shard{'s' if len(missing) > 1 else ''} " + ", ".join(missing))
        for index, paths in sorted(shards.items()):
            if len(paths) > 1:
                gaps.append(
                    f"shard {index}/{count} given {len(paths)} times ("
                    + ", ".join(str(p) for p in paths)
                    + ")"
                )
    return gaps


def _beside(manifest: Path, journal: Path) -> Path:
    """Outputs go beside the manifest; beside the journal when its folder is gone (a
    manifest read from stdin was a temporary file)."""
    return manifest if manifest.is_absolute() and manifest.parent.is_dir() else journal


def _recorded_path(settings: Mapping[str, object], key: str) -> Path | None:
    value = settings.get(key)
    return Path(value) if isinstance(value, str) and value else None
