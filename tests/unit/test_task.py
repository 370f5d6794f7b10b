"""ImageRequest, the request it sends, and the NFC text form it is built from."""

from __future__ import annotations

import unicodedata
from typing import Any

from ibimport.domain.request import FIELDS, ImageRequest, nfc

VALID: dict[str, Any] = {
    "name": "web-frontend-03",
    "semanticVersion": "1.0.0",
    "platform": "Linux",
    "vmImportTaskId": "import-ami-0abc1234def567890",
}


def test_api_params_omit_absent_fields_empty_tags_and_the_token() -> None:
    task = ImageRequest(**VALID, clientToken="t")
    assert task.api_params() == VALID
    tagged = ImageRequest(**VALID, tags={"Env": "prod"})
    assert tagged.api_params()["tags"] == {"Env": "prod"}


def test_fields_are_the_tasks_own_in_api_order() -> None:
    assert tuple(ImageRequest.model_fields) == FIELDS
    assert FIELDS[-2:] == ("region", "profile")
    assert FIELDS.index("logGroupName") < FIELDS.index("diskImage") < FIELDS.index("roleName")


def test_nfc_composes_strings_mapping_keys_and_lists_and_leaves_other_values() -> None:
    decomposed = unicodedata.normalize("NFD", "Zoë")
    assert nfc(decomposed) == "Zoë"
    assert nfc({decomposed: {decomposed: decomposed}, "n": 1}) == {"Zoë": {"Zoë": "Zoë"}, "n": 1}
    assert nfc([decomposed, {decomposed: 2}]) == ["Zoë", {"Zoë": 2}]  # diskContainers
