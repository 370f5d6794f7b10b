"""The names of the stages a row moves through, in their order: the one list of them.

The journal records each row's stages by these names (start, end, attempts, outcome), and
the reports read them back; ``ibimport.stages`` holds what each stage does.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Stage"]


class Stage(StrEnum):
    """A stage of a row's walk, in the order a row meets them."""

    #: EC2 ImportImage: the VM import task started (the wave issue's stage).
    TASK_START = "task_start"
    #: The row's EC2 import task checked (DescribeImportImageTasks, in batches).
    TASK_CHECK = "task_check"
    #: The partition's listing of existing builds (a row found there is ``exists``).
    EXISTING = "existing"
    #: ImportVmImage, with its retries.
    IMPORT = "import"
    #: The imported image followed to a final state (AVAILABLE, FAILED, ...).
    IMAGE_WAIT = "image_wait"
