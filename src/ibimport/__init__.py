"""ibimport: import fleets of VM images into EC2 Image Builder, fast, safely and exactly once.

The public API is what this module exports; everything else is internal and may change.
"""

from ibimport._version import __version__
from ibimport.batch import BatchConfig, BatchResult, LocalEmulator, execute, preflight
from ibimport.client import ClientSettings, ImageBuilderClient, ImportResult, open_client
from ibimport.errors import (
    ApiError,
    CallError,
    ConfigError,
    FatalBatchError,
    IbimportError,
    JournalError,
    ManifestError,
    TransportError,
)
from ibimport.events import BaseListener, CallEvent, CallOutcome, RunListener
from ibimport.journal import Journal, NullJournal, SqliteJournal
from ibimport.limiter import AdaptiveLimiter, FixedRateLimiter, build_limiter
from ibimport.manifest import ImportTask, ManifestFormat, ManifestRow, read_manifest
from ibimport.results import RowResult, RowStatus
from ibimport.runner import Runner, RunOutcome, RunSettings
from ibimport.tokens import client_token

__all__ = [
    "AdaptiveLimiter",
    "ApiError",
    "BaseListener",
    "BatchConfig",
    "BatchResult",
    "CallError",
    "CallEvent",
    "CallOutcome",
    "ClientSettings",
    "ConfigError",
    "FatalBatchError",
    "FixedRateLimiter",
    "IbimportError",
    "ImageBuilderClient",
    "ImportResult",
    "ImportTask",
    "Journal",
    "JournalError",
    "LocalEmulator",
    "ManifestError",
    "ManifestFormat",
    "ManifestRow",
    "NullJournal",
    "RowResult",
    "RowStatus",
    "RunListener",
    "RunOutcome",
    "RunSettings",
    "Runner",
    "SqliteJournal",
    "TransportError",
    "__version__",
    "build_limiter",
    "client_token",
    "execute",
    "open_client",
    "preflight",
    "read_manifest",
]
