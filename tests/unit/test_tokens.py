"""Deterministic clientTokens: golden values, and sameness across formats and row order."""

from __future__ import annotations

import json
import random
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest

from ibimport.domain.tokens import NAMESPACE, canonical_request, client_token
from ibimport.manifest import ImageRequest, read_manifest

# model_construct: the golden values pin the token derivation over tasks that were valid
# when they were written (the current model since refused "a", "café-東京" and log groups
# outside /aws/imagebuilder/), so they are built without today's validation.
FULL = ImageRequest.model_construct(
    name="web-frontend-03",
    semanticVersion="1.2.3",
    description="Front end, wave 3",
    platform="Linux",
    osVersion="Ubuntu 22.04",
    vmImportTaskId="import-ami-0abc1234def567890",
    tags={"Wave": "3", "Env": "prod"},
    logGroupName="/ibimport/migration",
)
MINIMAL = ImageRequest.model_construct(
    name="a", semanticVersion="0.0.1", platform="Windows", vmImportTaskId="import-ami-1"
)
UNICODE = ImageRequest.model_construct(
    name="café-東京",
    semanticVersion="10.0.0",
    platform="macOS",
    vmImportTaskId="import-ami-2",
    tags={"Owner": "Zoë"},
)

# Golden values. If one of these fails, canonicalisation changed and every token with
# it: a re-run would import every image again. Change them only on purpose, with a
# release note that tells users to expect new imports.


def test_namespace_is_frozen() -> None:
    assert str(NAMESPACE) == "502b806a-4c93-5804-9da4-c0f0b20e41b0"


def test_golden_canonical_form() -> None:
    assert canonical_request(FULL) == (
        b'{"description":"Front end, wave 3",'
        b'"loggingConfiguration":{"logGroupName":"/ibimport/migration"},'
        b'"name":"web-frontend-03","osVersion":"Ubuntu 22.04","platform":"Linux",'
        b'"semanticVersion":"1.2.3","tags":{"Env":"prod","Wave":"3"},'
        b'"vmImportTaskId":"import-ami-0abc1234def567890"}'
    )
    assert canonical_request(MINIMAL) == (
        b'{"name":"a","platform":"Windows","semanticVersion":"0.0.1",'
        b'"vmImportTaskId":"import-ami-1"}'
    )
    # ensure_ascii=False: UTF-8 bytes, not \u escapes
    assert (
        canonical_request(UNICODE)
        == (
            '{"name":"café-東京","platform":"macOS","semanticVersion":"10.0.0",'
            '"tags":{"Owner":"Zoë"},"vmImportTaskId":"import-ami-2"}'
        ).encode()
    )


@pytest.mark.parametrize(
    ("task", "token"),
    [
        (FULL, "87885652-b1ad-59f6-91a3-0e36b59051bd"),
        (MINIMAL, "e82459c5-3db7-5323-9d73-6d67f31d349e"),
        (UNICODE, "c11f922f-f050-5b61-8c6f-4926b276d37a"),
    ],
)
def test_golden_tokens(task: ImageRequest, token: str) -> None:
    assert client_token(task) == token


def test_golden_salted_token() -> None:
    assert client_token(FULL, salt="wave-2") == "8e13a61d-16a0-55e9-a67e-85f424643a2a"


def test_token_is_a_standard_uuid5_of_the_canonical_request() -> None:
    token = client_token(UNICODE)
    assert len(token) == 36
    assert uuid.UUID(token).version == 5
    assert token == str(uuid.uuid5(NAMESPACE, canonical_request(UNICODE).decode("utf-8")))


def test_salt_starts_a_new_generation() -> None:
    plain = client_token(FULL)
    assert client_token(FULL, salt="") == plain
    salted = {client_token(FULL, salt=s) for s in ("a", "b", "wave-2")}
    assert len(salted) == 3
    assert plain not in salted


def test_given_client_token_wins_even_with_a_salt() -> None:
    task = FULL.model_copy(update={"clientToken": "my-own-token"})
    assert client_token(task) == "my-own-token"
    assert client_token(task, salt="x") == "my-own-token"


def test_the_given_token_is_not_part_of_the_canonical_request() -> None:
    task = FULL.model_copy(update={"clientToken": "my-own-token"})
    assert canonical_request(task) == canonical_request(FULL)


def test_unicode_is_normalised_to_nfc() -> None:
    # The Unicode text sits in the description and a tag value: a name can no longer hold it.
    def task(form: Literal["NFC", "NFD"]) -> ImageRequest:
        return ImageRequest(
            name="cafe-tokyo",
            semanticVersion="10.0.0",
            description=unicodedata.normalize(form, "café-東京"),
            platform="macOS",
            vmImportTaskId="import-ami-2",
            tags={"Owner": unicodedata.normalize(form, "Zoë")},
        )

    nfd, composed = task("NFD"), task("NFC")
    assert nfd.description != composed.description
    assert nfd.tags != composed.tags
    assert client_token(nfd) == client_token(composed)
    assert canonical_request(nfd) == canonical_request(composed)
    assert "café-東京".encode() in canonical_request(nfd)


def test_tag_order_does_not_matter() -> None:
    reordered = FULL.model_copy(update={"tags": {"Env": "prod", "Wave": "3"}})
    assert list(reordered.tags) != list(FULL.tags)
    assert client_token(reordered) == client_token(FULL)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "web-frontend-04"),
        ("semanticVersion", "1.2.4"),
        ("description", "Front end, wave 4"),
        ("description", None),
        ("platform", "Windows"),
        ("osVersion", "Ubuntu 24.04"),
        ("vmImportTaskId", "import-ami-0abc1234def567891"),
        ("tags", {"Wave": "4", "Env": "prod"}),
        ("tags", {}),
        ("logGroupName", "/ibimport/other"),
        ("logGroupName", None),
    ],
)
def test_every_sent_field_changes_the_token(field: str, value: Any) -> None:
    changed = FULL.model_copy(update={field: value})
    assert client_token(changed) != client_token(FULL)


def _tokens(path: Path) -> dict[tuple[str, str], str]:
    out = {}
    for row in read_manifest(path):
        assert row.task is not None, row.describe()
        out[(row.name, row.semantic_version)] = client_token(row.task)
    return out


def test_same_tokens_from_csv_jsonl_and_json_in_any_order(tmp_path: Path) -> None:
    tasks: list[dict[str, Any]] = [
        {
            "name": f"web-{i:02d}",
            "semanticVersion": "1.0.0",
            "platform": "Linux",
            "osVersion": "Ubuntu 22.04",
            "vmImportTaskId": f"import-ami-{i:04x}",
            "tags": {"Env": "prod", "Wave": "2"},
        }
        for i in range(12)
    ]
    tasks[3]["description"] = "has a description"
    tasks[5]["logGroupName"] = "/aws/imagebuilder/x"
    tasks[7]["tags"]["Extra"] = "in the tags column"

    header = (
        "name,semanticVersion,description,platform,osVersion,vmImportTaskId,"
        "tag:Env,tag:Wave,tags,logGroupName"
    )
    lines = [header]
    for t in tasks:
        extra = {k: v for k, v in t["tags"].items() if k not in ("Env", "Wave")}
        tags_cell = '"' + json.dumps(extra).replace('"', '""') + '"' if extra else ""
        lines.append(
            f"{t['name']},{t['semanticVersion']},{t.get('description', '')},{t['platform']},"
            f"{t['osVersion']},{t['vmImportTaskId']},prod,2,{tags_cell},{t.get('logGroupName', '')}"
        )
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")

    shuffled = tasks[:]
    random.Random(7).shuffle(shuffled)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(t) + "\n" for t in shuffled))

    # JSON with defaults: platform, osVersion and one tag come from defaults
    json_tasks = []
    for t in reversed(tasks):
        own = {k: v for k, v in t.items() if k not in ("platform", "osVersion")}
        own["tags"] = {k: v for k, v in t["tags"].items() if k != "Env"}
        json_tasks.append(own)
    doc = {
        "defaults": {"platform": "Linux", "osVersion": "Ubuntu 22.04", "tags": {"Env": "prod"}},
        "tasks": json_tasks,
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))

    from_csv = _tokens(tmp_path / "m.csv")
    assert len(from_csv) == 12
    assert _tokens(tmp_path / "m.jsonl") == from_csv
    assert _tokens(tmp_path / "m.json") == from_csv
    assert len(set(from_csv.values())) == 12


def test_example_manifests_agree(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "manifests"
    assert _tokens(root / "example.csv") == _tokens(root / "example.jsonl")
