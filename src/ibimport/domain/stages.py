"""The stages a row moves through, by name: the one list the pipeline, the journal's
stage records and the reports share.

A wave row: its EC2 import task started (``task_start``), then checked or waited for
(``task_check``), its image looked for among the builds that already exist
(``existing``), imported (``import``: ImportVmImage), and followed to a final state
(``image_wait``). A row that names its ``vmImportTaskId`` starts at ``task_check``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Metering", "StageName"]


class StageName(StrEnum):
    """One stage of a row's walk, in pipeline order."""

    TASK_START = "task_start"
    TASK_CHECK = "task_check"
    EXISTING = "existing"
    IMPORT = "import"
    IMAGE_WAIT = "image_wait"


class Metering(StrEnum):
    """How a stage's calls are metered."""

    RATE = "rate"  # calls per second (and in flight) under the partition's quota
    CONCURRENCY = "concurrency"  # calls in flight only
    SLOTS = "slots"  # a slot held for as long as the work lasts (an EC2 import task: hours)
