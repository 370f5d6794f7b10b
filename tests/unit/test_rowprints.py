"""RowPrints holds the run's second read of the manifest to what preflight read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ibimport.domain.tokens import client_token
from ibimport.engine.rowprints import RowPrints
from ibimport.errors import FatalBatchError, ManifestError
from ibimport.manifest import ImageRequest, ManifestRow


def _row(i: int, *, task_id: str | None = None, valid: bool = True) -> ManifestRow:
    task = ImageRequest(
        name=f"vm-{i:03d}",
        semanticVersion="1.0.0",
        platform="Linux",
        vmImportTaskId=task_id or f"import-ami-{i:08x}",
    )
    return ManifestRow(i, task if valid else None, (), f"vm-{i:03d}", "1.0.0")


def _prints(rows: list[ManifestRow]) -> RowPrints:
    prints = RowPrints()
    for r in rows:
        prints.add(r.row, client_token(r.task, salt="") if r.task else None)
    return prints


def test_the_same_rows_pass_through() -> None:
    rows = [_row(1), _row(2, valid=False), _row(3)]
    assert list(_prints(rows).checked(iter(rows), salt="")) == rows


@pytest.mark.parametrize(
    ("second", "says"),
    [
        ([_row(1), _row(2, task_id="import-ami-ffffffff")], "row 2 is not the row"),
        ([_row(1), _row(2, valid=False)], "row 2 is not the row"),
        ([_row(1), _row(2), _row(3), _row(4)], "row 4 was not there"),
        ([_row(1)], "it now ends after row 1 of 3"),
    ],
    ids=["changed", "now invalid", "appended", "truncated"],
)
def test_a_difference_stops_before_the_row_is_handed_out(
    second: list[ManifestRow], says: str
) -> None:
    prints = _prints([_row(1), _row(2), _row(3)])
    seen: list[int] = []
    with pytest.raises(FatalBatchError, match="the manifest changed under the run") as stop:
        seen.extend(r.row for r in prints.checked(iter(second), salt=""))
    assert says in str(stop.value)
    assert all(row < 2 for row in seen) or says.startswith(("row 4", "it now"))


def test_a_manifest_error_mid_read_becomes_the_same_stop() -> None:
    def read() -> Iterator[ManifestRow]:
        yield _row(1)
        raise ManifestError("m.csv: not UTF-8: byte 0xFF at byte offset 9 (line 2)")

    prints = _prints([_row(1), _row(2)])
    with pytest.raises(FatalBatchError, match=r"changed under the run: m\.csv: not UTF-8"):
        list(prints.checked(read(), salt=""))
