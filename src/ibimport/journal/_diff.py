"""The comparison of a resumed manifest with its journal: rows changed, added, removed.

Streamed through a temporary table, so memory stays bounded whatever the manifest's size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import islice

from ibimport.journal._model import DiffRow, ManifestDiff

__all__ = ["manifest_diff"]


def manifest_diff(
    conn: sqlite3.Connection, rows: Iterable[tuple[int, str, str, str]], *, keep: int
) -> ManifestDiff:
    """``rows`` (``row, name, version, token``) against the journal's rows on ``conn``.

    Same identity with another token is *changed*; unknown to the journal is *added*;
    journalled but not in ``rows`` is *removed*; at most ``keep`` of each are listed.
    """
    conn.execute("DROP TABLE IF EXISTS temp.manifest")
    conn.execute(
        "CREATE TEMP TABLE manifest (row INTEGER NOT NULL, name TEXT NOT NULL, "
        "semantic_version TEXT NOT NULL, client_token TEXT NOT NULL, "
        "PRIMARY KEY (name, semantic_version))"
    )
    try:
        iterator = iter(rows)
        while chunk := list(islice(iterator, 5000)):
            # A duplicate identity keeps its first row; the manifest reports it.
            conn.executemany("INSERT OR IGNORE INTO temp.manifest VALUES (?, ?, ?, ?)", chunk)
        changed = "FROM temp.manifest m JOIN main.rows r USING (name, semantic_version) "
        changed += "WHERE m.client_token <> r.client_token"
        added = "FROM temp.manifest m LEFT JOIN main.rows r USING (name, semantic_version) "
        added += "WHERE r.name IS NULL"
        removed = "FROM main.rows m LEFT JOIN temp.manifest t "
        removed += "USING (name, semantic_version) WHERE t.name IS NULL"
        lists: list[list[DiffRow]] = []
        totals: list[int] = []
        for where in (changed, added, removed):
            (total,) = conn.execute(f"SELECT COUNT(*) {where}").fetchone()
            found = conn.execute(
                f"SELECT m.row, m.name, m.semantic_version {where} "
                "ORDER BY m.row, m.name, m.semantic_version LIMIT ?",
                (keep,),
            ).fetchall()
            totals.append(total)
            lists.append([(r, n, v) for r, n, v in found])
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.manifest")
    return ManifestDiff(
        changed=lists[0],
        added=lists[1],
        removed=lists[2],
        n_changed=totals[0],
        n_added=totals[1],
        n_removed=totals[2],
    )
