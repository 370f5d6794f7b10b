"""A batch's settings (``BatchConfig``) and the rules between them, checked where the
settings are made.

A rule that lives only in the CLI leaves a library caller with no error and no effect
(``wait`` without a journal would silently not wait). Each rule is here once; the
``BatchConfig`` checks itself on construction, and the CLI maps the ``ConfigError`` to
exit 2 like any other usage mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ibimport.aws.client import ClientSettings
from ibimport.engine.partitions import RateSpec, Shard
from ibimport.engine.pipeline import RunSettings
from ibimport.engine.wave import TaskWave
from ibimport.errors import ConfigError
from ibimport.manifest import ManifestFormat
from ibimport.stages.imagewait import WaitSettings
from ibimport.stages.taskgate import TaskWait

__all__ = ["BatchConfig", "check_batch_settings"]


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """Everything one ``ibimport run`` needs, already parsed."""

    manifest: Path
    fmt: ManifestFormat | None = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    #: ImportImage options for every row with disks that gives none of its own
    #: (``--import-option KEY=VALUE``; ``domain.diskimport.IMPORT_OPTION_FIELDS``).
    import_defaults: Mapping[str, str | bool] = field(default_factory=dict)
    run: RunSettings = field(default_factory=RunSettings)
    #: A told rate for every partition (``rates`` may tell one per Region instead).
    rate: float | None = None
    rates: RateSpec | None = None
    #: This process's share of the manifest (``--shard K/N``); None: every row.
    shard: Shard | None = None
    client: ClientSettings = field(default_factory=ClientSettings)
    #: The service runs in this process (``--local``'s emulator): the client's CPU share
    #: of the run is not measured (it would count the service's work too).
    in_process_service: bool = False
    journal_path: Path | None = None
    report_path: Path | None = None
    results_path: Path | None = None
    skip_invalid: bool = False
    force: bool = False
    #: False: the JSON report is only returned (``BatchResult.report``), not written to a
    #: file (``--report -`` prints it on stdout).
    report_file: bool = True
    #: List what already exists before a batch with a new journal sends anything
    #: (``ibimport.stages.existing``); off only for an account known to have no images.
    reconcile: bool = True
    #: ``run --wait``: after the import, follow every imported image to its final state
    #: (``ibimport.stages.imagewait``; needs a journal, which records the states).
    wait: WaitSettings | None = None
    #: ``run --preflight``: every row's EC2 import task is checked first (in batches) and
    #: only ready rows are sent; the others are recorded ``blocked`` (``ibimport.stages.taskgate``).
    preflight: bool = False
    #: ``--wait-for-tasks``: with ``preflight``, rows whose task is still converting wait
    #: for it (until ``TaskWait.timeout_s``) and are sent as it completes.
    task_wait: TaskWait | None = None
    #: Rows with disks (issue 19): their EC2 import tasks' slots, pipelining and limits.
    tasks: TaskWave = field(default_factory=lambda: TaskWave())

    def __post_init__(self) -> None:
        # The option rules hold for every caller, the CLI (exit 2) and a library's alike.
        check_batch_settings(self)


def check_batch_settings(config: BatchConfig) -> None:
    """Refuse settings that contradict each other (``ConfigError``, in the options' words)."""
    if config.task_wait is not None and not config.preflight:
        raise ConfigError(
            "--wait-for-tasks needs --preflight (task_wait waits for the tasks the "
            "preflight check found pending)"
        )
    if config.wait is not None and config.journal_path is None:
        raise ConfigError("--wait needs the journal (it records each image's state)")
    if config.rate is not None and not config.rate > 0:
        raise ConfigError(f"--rate {config.rate}: the rate must be above 0")
    if config.run.concurrency < 1:
        raise ConfigError(f"--concurrency {config.run.concurrency}: at least 1 call in flight")
    if config.run.max_attempts < 1:
        raise ConfigError(f"--max-attempts {config.run.max_attempts}: at least 1 attempt")
