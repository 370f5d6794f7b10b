"""ibimport: import fleets of VM images into EC2 Image Builder, fast, safely and exactly once.

The public API is what this module exports; everything else is internal and may change.
"""

from ibimport._version import __version__
from ibimport.batch import Batch, BatchConfig, BatchControl, BatchResult, open_batch, run_batch
from ibimport.client import ClientSettings, ImageBuilderClient, ImportResult, open_client
from ibimport.emulator.config import EmulatorConfig
from ibimport.errors import (
    ApiError,
    BatchRefused,
    CallError,
    ConfigError,
    FatalBatchError,
    IbimportError,
    InvalidManifest,
    JournalError,
    ManifestChanged,
    ManifestError,
    TransportError,
)
from ibimport.events import BaseListener, CallEvent, CallOutcome, RunListener
from ibimport.followup import TaskPreflight, TaskRow, WaitResult, preflight_tasks, wait_for_images
from ibimport.importtasks import TaskCheck, TaskState
from ibimport.journal import Journal, NullJournal, SqliteJournal
from ibimport.limiter import AdaptiveLimiter, FixedRateLimiter, build_limiter
from ibimport.manifest import (
    ImportTask,
    ManifestFormat,
    ManifestRow,
    SourceKind,
    detect_format,
    parse_tag_option,
    read_manifest,
    source_kind,
)
from ibimport.outputs import RebuiltOutputs, default_output_paths, merge_outputs, rebuild_outputs
from ibimport.partitions import RateSpec, Shard, parse_rates
from ibimport.plan import BatchPlan, PlannedRow, PlannedStatus, plan_batch
from ibimport.results import RowResult
from ibimport.rowstate import ImageStatus, RerunPlan, RowStatus
from ibimport.runner import Runner, RunOutcome, RunSettings
from ibimport.spool import spooled_stdin
from ibimport.status import BatchStatus, batch_status
from ibimport.taskgate import TaskWait
from ibimport.tokens import client_token
from ibimport.waiter import WaitFigures, WaitSettings

__all__ = [
    "AdaptiveLimiter",
    "ApiError",
    "BaseListener",
    "Batch",
    "BatchConfig",
    "BatchControl",
    "BatchPlan",
    "BatchRefused",
    "BatchResult",
    "BatchStatus",
    "CallError",
    "CallEvent",
    "CallOutcome",
    "ClientSettings",
    "ConfigError",
    "EmulatorConfig",
    "FatalBatchError",
    "FixedRateLimiter",
    "IbimportError",
    "ImageBuilderClient",
    "ImageStatus",
    "ImportResult",
    "ImportTask",
    "InvalidManifest",
    "Journal",
    "JournalError",
    "ManifestChanged",
    "ManifestError",
    "ManifestFormat",
    "ManifestRow",
    "NullJournal",
    "PlannedRow",
    "PlannedStatus",
    "RateSpec",
    "RebuiltOutputs",
    "RerunPlan",
    "RowResult",
    "RowStatus",
    "RunListener",
    "RunOutcome",
    "RunSettings",
    "Runner",
    "Shard",
    "SourceKind",
    "SqliteJournal",
    "TaskCheck",
    "TaskPreflight",
    "TaskRow",
    "TaskState",
    "TaskWait",
    "TransportError",
    "WaitFigures",
    "WaitResult",
    "WaitSettings",
    "__version__",
    "batch_status",
    "build_limiter",
    "client_token",
    "default_output_paths",
    "detect_format",
    "merge_outputs",
    "open_batch",
    "open_client",
    "parse_rates",
    "parse_tag_option",
    "plan_batch",
    "preflight_tasks",
    "read_manifest",
    "rebuild_outputs",
    "run_batch",
    "source_kind",
    "spooled_stdin",
    "wait_for_images",
]
