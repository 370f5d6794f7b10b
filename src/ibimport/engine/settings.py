"""The rules between a batch's settings, checked where the settings are made.

A rule that lives only in the CLI leaves a library caller with no error and no effect
(``wait`` without a journal would silently not wait). Each rule is here once; the
``BatchConfig`` checks itself on construction, and the CLI maps the ``ConfigError`` to
exit 2 like any other usage mistake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ibimport.errors import ConfigError

if TYPE_CHECKING:
    from ibimport.engine.batch import BatchConfig

__all__ = ["check_batch_settings"]


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
