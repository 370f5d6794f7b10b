"""ibimport: import fleets of VM images into EC2 Image Builder, fast, safely and exactly once.

The public API is what this module exports; everything else is internal and may change.
"""

from ibimport._files import check_paths
from ibimport._version import __version__
from ibimport.aws.client import ClientSettings, ImportResult, PartitionClient, open_client
from ibimport.aws.regions import check_endpoint_url, check_region, known_regions
from ibimport.domain.diskimport import parse_import_options
from ibimport.domain.results import RowResult
from ibimport.domain.rowstate import ImageStatus, RerunPlan, RowStatus, reported_as
from ibimport.domain.tokens import client_token
from ibimport.engine.batch import Batch, BatchResult, open_batch, run_batch
from ibimport.engine.cancel import CancelOutcome, CancelResult, TaskCancel, cancel_tasks
from ibimport.engine.control import BatchControl
from ibimport.engine.dryrun import BatchPlan, plan_batch
from ibimport.engine.events import BaseListener, CallEvent, CallOutcome, RunListener
from ibimport.engine.followup import WaitResult, preflight_tasks, wait_for_images
from ibimport.engine.partitions import RateSpec, Shard, parse_rates
from ibimport.engine.pipeline import Pipeline, RunOutcome, RunSettings, import_pipeline
from ibimport.engine.recorded import RecordedRun
from ibimport.engine.settings import BatchConfig
from ibimport.engine.wave import TaskSlotSpec, TaskWave, parse_task_slots
from ibimport.errors import (
    ApiError,
    BatchRefused,
    CallError,
    ConfigError,
    FatalBatchError,
    IbimportError,
    InvalidManifest,
    JournalBusy,
    JournalError,
    ManifestChanged,
    ManifestError,
    TransportError,
)
from ibimport.flow.limiter import AdaptiveLimiter, FixedRateLimiter, build_limiter
from ibimport.journal import Journal, NullJournal, SqliteJournal, TaskStatus
from ibimport.manifest import (
    ImageRequest,
    ManifestFormat,
    ManifestRow,
    SourceKind,
    detect_format,
    parse_tag_option,
    read_manifest,
    source_kind,
)
from ibimport.manifest.spool import spooled_stdin
from ibimport.report import FINAL_STATUSES, RunStats
from ibimport.report.documents import (
    DryRunDocument,
    PartialWave,
    PlannedRow,
    PlannedStatus,
    RowProblem,
    RunReport,
    TaskPreflight,
    TaskRow,
    ValidationReport,
    validate_rows,
)
from ibimport.report.html import write_html_report
from ibimport.report.outputs import (
    RebuiltOutputs,
    default_output_paths,
    merge_outputs,
    rebuild_outputs,
)
from ibimport.report.resubmit import FailedManifest, write_failed_manifest
from ibimport.report.status import BatchStatus, RowNote, batch_status, recorded_run
from ibimport.stages.imagewait import WaitFigures, WaitSettings
from ibimport.stages.polling import Waiting, WaitRound
from ibimport.stages.taskcheck import TaskCheck, TaskState
from ibimport.stages.taskfollow import TaskFollowSettings
from ibimport.stages.taskgate import TaskWait

__all__ = [
    "FINAL_STATUSES",
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
    "CancelOutcome",
    "CancelResult",
    "ClientSettings",
    "ConfigError",
    "DryRunDocument",
    "FailedManifest",
    "FatalBatchError",
    "FixedRateLimiter",
    "IbimportError",
    "ImageRequest",
    "ImageStatus",
    "ImportResult",
    "InvalidManifest",
    "Journal",
    "JournalBusy",
    "JournalError",
    "ManifestChanged",
    "ManifestError",
    "ManifestFormat",
    "ManifestRow",
    "NullJournal",
    "PartialWave",
    "PartitionClient",
    "Pipeline",
    "PlannedRow",
    "PlannedStatus",
    "RateSpec",
    "RebuiltOutputs",
    "RecordedRun",
    "RerunPlan",
    "RowNote",
    "RowProblem",
    "RowResult",
    "RowStatus",
    "RunListener",
    "RunOutcome",
    "RunReport",
    "RunSettings",
    "RunStats",
    "Shard",
    "SourceKind",
    "SqliteJournal",
    "TaskCancel",
    "TaskCheck",
    "TaskFollowSettings",
    "TaskPreflight",
    "TaskRow",
    "TaskSlotSpec",
    "TaskState",
    "TaskStatus",
    "TaskWait",
    "TaskWave",
    "TransportError",
    "ValidationReport",
    "WaitFigures",
    "WaitResult",
    "WaitRound",
    "WaitSettings",
    "Waiting",
    "__version__",
    "batch_status",
    "build_limiter",
    "cancel_tasks",
    "check_endpoint_url",
    "check_paths",
    "check_region",
    "client_token",
    "default_output_paths",
    "detect_format",
    "import_pipeline",
    "known_regions",
    "merge_outputs",
    "open_batch",
    "open_client",
    "parse_import_options",
    "parse_rates",
    "parse_tag_option",
    "parse_task_slots",
    "plan_batch",
    "preflight_tasks",
    "read_manifest",
    "rebuild_outputs",
    "recorded_run",
    "reported_as",
    "run_batch",
    "source_kind",
    "spooled_stdin",
    "validate_rows",
    "wait_for_images",
    "write_failed_manifest",
    "write_html_report",
]
