"""What a journal remembers of the command line that wrote it, and how a new one differs.

A batch is resumed, waited on, reported and inspected by later commands, often by
another person or on another machine. They take what they need from the journal's header
(``settings``): where the service was (Region, profile, endpoint), what decided each
row's clientToken (tags, salt, format, shard), so that ``ibimport wait JOURNAL`` needs
no flags, ``status`` can print the command that resumes the batch, and a resume told
other options is explained option by option instead of as thousands of changed rows.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibimport.engine.partitions import Shard
from ibimport.report.outputs import default_output_paths

if TYPE_CHECKING:
    from ibimport.engine.settings import BatchConfig

__all__ = ["RecordedRun", "changed_options"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordedRun:
    """The options of the ``run`` that wrote a journal (None: not given, or not recorded).

    ``known`` is False for a journal written before these were recorded: nothing can be
    said of its options then.
    """

    known: bool = True
    manifest: str = ""
    fmt: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    token_salt: str = ""
    shard: str | None = None
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    local: bool = False
    preflight: bool = False
    report: str | None = None
    results: str | None = None
    #: Where the partitions were (several: ``ibimport wait`` follows each with its client).
    partitions: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, config: BatchConfig, *, report: Path, results: Path) -> RecordedRun:
        return cls(
            manifest=str(config.manifest.resolve()),
            fmt=config.fmt.value if config.fmt is not None else None,
            tags=dict(sorted(config.extra_tags.items())),
            token_salt=config.run.token_salt,
            shard=f"{config.shard.index}/{config.shard.count}"
            if config.shard is not None
            else None,
            region=config.client.region,
            profile=config.client.profile,
            # --local's emulator listened on a port of its own process, gone with it.
            endpoint_url=None if config.in_process_service else config.client.endpoint_url,
            local=config.in_process_service,
            preflight=config.preflight,
            report=str(report.resolve()),
            results=str(results.resolve()),
        )

    def settings(self) -> dict[str, Any]:
        """The journal header's ``settings`` entries (``report`` and ``results`` as before)."""
        return {
            "token_salt": self.token_salt,
            "report": self.report,
            "results": self.results,
            # Which share of the wave (``K/N``, None: every row): a merge checks it is whole.
            "shard": self.shard,
            "command": {
                "format": self.fmt,
                "tags": dict(self.tags),
                "shard": self.shard,
                "region": self.region,
                "profile": self.profile,
                "endpoint_url": self.endpoint_url,
                "local": self.local,
                "preflight": self.preflight,
            },
        }

    @classmethod
    def from_header(cls, manifest: str, settings: Mapping[str, Any]) -> RecordedRun:
        """What a journal's header says; ``known`` is False if it predates ``command``."""
        command = settings.get("command")
        partitions = settings.get("partitions")
        shared: dict[str, Any] = {
            "manifest": manifest,
            "token_salt": str(settings.get("token_salt") or ""),
            "report": _text(settings.get("report")),
            "results": _text(settings.get("results")),
            "partitions": tuple(p for p in partitions if isinstance(p, dict))
            if isinstance(partitions, list)
            else (),
        }
        if not isinstance(command, dict):
            return cls(known=False, **shared)
        tags = command.get("tags")
        return cls(
            fmt=_text(command.get("format")),
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
            shard=_text(command.get("shard")),
            region=_text(command.get("region")),
            profile=_text(command.get("profile")),
            endpoint_url=_text(command.get("endpoint_url")),
            local=command.get("local") is True,
            preflight=command.get("preflight") is True,
            **shared,
        )

    def resume_command(self, journal: Path) -> str:
        """The ``ibimport run`` command line that resumes this batch, quoted for a shell."""
        words = ["ibimport", "run", self.manifest, "--journal", str(journal)]
        if self.fmt:
            words += ["--format", self.fmt]
        for key, value in self.tags.items():
            words += ["--tag", f"{key}={value}"]
        if self.token_salt:
            words += ["--token-salt", self.token_salt]
        if self.shard:
            words += ["--shard", self.shard]
        for flag, given in (
            ("--region", self.region),
            ("--profile", self.profile),
            ("--endpoint-url", self.endpoint_url),
        ):
            if given:
                words += [flag, given]
        if self.local:
            words.append("--local")
        if self.preflight:
            words.append("--preflight")
        shard = Shard.parse(self.shard) if self.shard else None
        _, report, results = default_output_paths(Path(self.manifest), shard=shard)
        if self.report and Path(self.report) != report:
            words += ["--report", self.report]
        if self.results and Path(self.results) != results:
            words += ["--results", self.results]
        return shlex.join(words)

    def wait_command(self, journal: Path) -> str:
        """``ibimport wait JOURNAL``: everything else comes from the journal."""
        return shlex.join(["ibimport", "wait", str(journal)])


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def changed_options(recorded: RecordedRun, now: RecordedRun) -> list[str]:
    """Why a batch fingerprint differs, option by option (empty: the manifest's bytes did).

    Each line names the option as it was given when the journal was written and as it
    is given now, because every row's clientToken depends on it.
    """
    if not recorded.known:
        return []
    lines: list[str] = []
    for key in sorted({*recorded.tags, *now.tags}):
        was, is_now = recorded.tags.get(key), now.tags.get(key)
        if was == is_now:
            continue
        if is_now is None:
            lines.append(
                f"--tag {key}={was} was given when the journal was written and is missing now"
            )
        elif was is None:
            lines.append(f"--tag {key}={is_now} is new: the journal was written without it")
        else:
            lines.append(
                f"--tag {key}={is_now} is given now; the journal was written with --tag {key}={was}"
            )
    for flag, was_value, now_value in (
        ("--token-salt", recorded.token_salt or None, now.token_salt or None),
        ("--format", recorded.fmt, now.fmt),
        ("--shard", recorded.shard, now.shard),
    ):
        if was_value == now_value:
            continue
        if now_value is None:
            lines.append(
                f"{flag} {was_value} was given when the journal was written and is missing now"
            )
        elif was_value is None:
            lines.append(f"{flag} {now_value} is new: the journal was written without it")
        else:
            lines.append(
                f"{flag} {now_value} is given now; the journal was written with {flag} {was_value}"
            )
    return lines
