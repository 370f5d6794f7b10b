"""The constraints read from botocore's service model, plus the current service's changes."""

from __future__ import annotations

import pytest

from ibimport.domain.apimodel import VERSION_NODE_MAX, check_version_nodes, import_vm_image_rules


def test_rules_come_from_the_model_with_current_service_overrides() -> None:
    rules = import_vm_image_rules()
    assert {
        "name",
        "semanticVersion",
        "platform",
        "vmImportTaskId",
        "clientToken",
    } <= rules.required
    assert rules.fields["name"].max_len == 1024
    assert rules.fields["platform"].enum == ("Windows", "Linux", "macOS")
    assert rules.fields["clientToken"].max_len == 64, "the current service allows 64, not 36"
    assert rules.tags_max == 50


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.0.0", True),
        (f"{VERSION_NODE_MAX}.0.0", True),
        (f"0.{VERSION_NODE_MAX + 1}.0", False),
        ("1.0", False),
        ("1.0.0\n", False),
        ("1.0." + "9" * 5000, False),
        ("00000000001.0.0", True),
    ],
)
def test_semantic_version_pattern_and_node_range(version: str, ok: bool) -> None:
    assert (import_vm_image_rules().check_semantic_version(version) is None) is ok


def test_tag_keys_may_not_start_with_aws_prefix() -> None:
    rule = import_vm_image_rules().tag_key
    assert rule.check("Owner") is None
    violation = rule.check("aws:createdBy")
    assert violation is not None
    assert "pattern" in violation.aws_constraint


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("999999999.999999999.0", True),
        (f"{VERSION_NODE_MAX}.0.0", True),
        (f"0.0.000{VERSION_NODE_MAX}", True),
        (f"0.{VERSION_NODE_MAX + 1}.0", False),
        ("1.0." + "9" * 5000, False),
    ],
)
def test_version_nodes_alone_for_a_value_that_matched_the_pattern(version: str, ok: bool) -> None:
    violation = check_version_nodes(version)
    assert (violation is None) is ok
    assert violation == import_vm_image_rules().check_semantic_version(version)
