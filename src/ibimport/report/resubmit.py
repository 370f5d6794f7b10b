"""The resubmit manifest (``--failed-manifest``): the rows that did not end done, in the
manifest's own format and columns, ready to fix and run again."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ibimport._files import atomic_private_file, check_paths
from ibimport.domain.rowstate import ended_done, reported_as
from ibimport.errors import ConfigError, ManifestError
from ibimport.journal import SqliteJournal
from ibimport.manifest import ManifestFormat, detect_format
from ibimport.manifest.resubmit import copy_rows

__all__ = ["FailedManifest", "write_failed_manifest"]


@dataclass(frozen=True, slots=True)
class FailedManifest:
    """Where the resubmit manifest went and how many rows it holds."""

    path: Path
    rows: int


def write_failed_manifest(path: Path, journals: Sequence[Path]) -> FailedManifest:
    """Copy the rows of the journals' manifest that did not end done to ``path`` (0600).

    Every row counts once, whichever shard's journal holds it. ``ConfigError`` if the
    manifest is gone (a manifest read from stdin was a temporary file), was edited since
    the run, or ``path`` would overwrite an input.
    """
    with ExitStack() as stack:
        stores = []
        for journal in journals:
            store = SqliteJournal.open_readonly(journal)
            stack.callback(store.close)
            stores.append(store)
        manifests = {store.header.manifest_path for store in stores}
        if len(manifests) != 1:
            raise ConfigError("the journals are of different manifests; give one manifest's")
        manifest = Path(manifests.pop())
        if not manifest.is_file():
            raise ConfigError(
                f"--failed-manifest: the manifest {manifest} is gone (was it read from "
                "stdin?); the rows cannot be copied from it"
            )
        inputs = {
            "the manifest": manifest,
            **{f"journal {i + 1}": p for i, p in enumerate(journals)},
        }
        check_paths(inputs=inputs, outputs={"--failed-manifest": path})
        followups = {key: value for store in stores for key, value in store.followups().items()}
        wanted: dict[int, tuple[str, str]] = {}
        for entry in heapq.merge(*(s.entries() for s in stores), key=lambda e: e.row):
            learnt = followups.get((entry.name, entry.semantic_version))
            if not ended_done(reported_as(entry.state), learnt.image_status if learnt else ""):
                wanted[entry.row] = (entry.name, entry.semantic_version)
    try:
        with open(manifest, "rb") as source, atomic_private_file(path) as out:
            copied = copy_rows(source, out, fmt=_format(manifest), rows=wanted, label=str(manifest))
    except ManifestError as error:
        raise ConfigError(f"--failed-manifest: {error}") from None
    except OSError as error:
        raise ConfigError(f"--failed-manifest: cannot write {path}: {error.strerror}") from None
    return FailedManifest(path=path, rows=copied)


def _format(manifest: Path) -> ManifestFormat:
    """The manifest's format from its name, else from its first character (--format runs)."""
    try:
        return detect_format(manifest)
    except ManifestError:
        pass
    with open(manifest, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return ManifestFormat.JSON
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0]
        return ManifestFormat.JSONL if first.rstrip().endswith(b"}") else ManifestFormat.JSON
    return ManifestFormat.CSV
