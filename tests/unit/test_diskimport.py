"""A row's disks and ImportImage options (``domain.diskimport``), through the manifest."""

from __future__ import annotations

import json
from pathlib import Path

from ibimport.domain.tokens import client_token, task_client_token
from ibimport.manifest import read_manifest


def _rows(tmp_path: Path, rows: list[dict[str, object]], **kw: object) -> list[object]:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return list(read_manifest(path, **kw))  # type: ignore[arg-type]


BASE = {"semanticVersion": "1.0.0", "platform": "Linux"}


def test_each_rule_names_its_row_and_field(tmp_path: Path) -> None:
    rows = _rows(
        tmp_path,
        [
            {**BASE, "name": "a-1", "diskImage": "s3://b-1/a.qcow2"},
            {**BASE, "name": "a-2", "diskImage": "https://example.com/a.vmdk"},
            {**BASE, "name": "a-3", "diskImage": "s3://b-1/a3.ova", "bootMode": "uefi-preferred"},
            {**BASE, "name": "a-4", "diskImage": "s3://b-1/a4.ova", "kmsKeyId": "k"},
            {**BASE, "name": "a-5", "diskContainers": [{"Url": "s3://b-1/x.vhd"}] * 22},
            {**BASE, "name": "a-6", "diskImage": "s3://b-1/a6.vmdk", "licenseType": "GPL"},
            {**BASE, "name": "a-7"},
        ],
    )
    lines = [line for r in rows for line in r.describe()]  # type: ignore[attr-defined]
    assert any("row 1: diskImage: its format is not known" in x for x in lines)
    assert any("row 2: diskImage: must be an s3://bucket/key URL" in x for x in lines)
    assert any("row 3: bootMode: uefi-preferred is not supported for imports" in x for x in lines)
    assert any("row 4: kmsKeyId: needs encrypted = true" in x for x in lines)
    assert any("row 5: diskContainers: must have at most 21 disks" in x for x in lines)
    assert any("row 6: licenseType: must be one of AWS, BYOL" in x for x in lines)
    assert any(
        "row 7: vmImportTaskId: is required (or diskImage, or diskContainers)" in x for x in lines
    )


def test_two_rows_with_one_disk_object_are_flagged(tmp_path: Path) -> None:
    rows = _rows(
        tmp_path,
        [
            {**BASE, "name": "b-1", "diskImage": "s3://b-1/same.vmdk"},
            {
                **BASE,
                "name": "b-2",
                "diskContainers": [{"UserBucket": {"S3Bucket": "b-1", "S3Key": "same.vmdk"}}],
            },
        ],
    )
    assert rows[0].task is not None  # type: ignore[attr-defined]
    assert "names the disk object of row 1" in rows[1].describe()[0]  # type: ignore[attr-defined]


def test_the_task_token_is_deterministic_short_and_not_the_import_token(tmp_path: Path) -> None:
    (row,) = _rows(tmp_path, [{**BASE, "name": "c-1", "diskImage": "s3://b-1/c.vmdk"}])
    request = row.task  # type: ignore[attr-defined]
    token = task_client_token(request)
    assert len(token) <= 36
    assert token == task_client_token(request)
    assert token != client_token(request)
    assert task_client_token(request, generation=1) != token
    assert request.import_image_params()["DiskContainers"] == [
        {"Url": "s3://b-1/c.vmdk", "Format": "VMDK"}
    ]


def test_command_line_defaults_fill_rows_with_disks_only(tmp_path: Path) -> None:
    rows = _rows(
        tmp_path,
        [
            {**BASE, "name": "d-1", "diskImage": "s3://b-1/d.vmdk", "roleName": "mine"},
            {**BASE, "name": "d-2", "diskImage": "s3://b-1/d2.vmdk"},
            {**BASE, "name": "d-3", "vmImportTaskId": "import-ami-0123456789abcdef0"},
        ],
        import_defaults={"roleName": "wave-role", "bootMode": "uefi"},
    )
    tasks = [r.task for r in rows]  # type: ignore[attr-defined]
    assert tasks[0].import_image_params()["RoleName"] == "mine"
    assert tasks[1].import_image_params()["RoleName"] == "wave-role"
    assert tasks[1].bootMode == "uefi"
    assert tasks[2] is not None
    assert tasks[2].bootMode is None
