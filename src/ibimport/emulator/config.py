"""``EmulatorConfig``: every knob of the emulator, each defined once.

A knob is a dataclass field whose metadata (``Knob``) carries what the command lines need:
its help text, its flag, its check, and whether ``run --local`` offers it as
``--emulator-<flag>``. The ``ibimport emulator`` options, ``run --local``'s options and
the argv of a child emulator (``process.cli_args``) are all generated from these fields,
so adding a knob is adding a field. Importable without aiohttp: ``run`` builds one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibimport.emulator.defaults import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, SECRET_ENV
from ibimport.errors import ConfigError

__all__ = ["EmulatorConfig", "Knob", "KnobField", "is_account_id", "knobs"]

_ACCOUNT_ID = re.compile(r"^[0-9]{12}$")


def is_account_id(text: str) -> bool:
    """Twelve digits: an AWS account id (and what an access key must be to name one)."""
    return _ACCOUNT_ID.match(text) is not None


class Check:
    """One kind of validation: which values pass, and how a failure is worded.

    (This and ``KnobField`` are plain classes: every ``ibimport`` start loads this module,
    and a dataclass costs half a millisecond to create.)
    """

    __slots__ = ("message", "passes")

    def __init__(self, passes: Callable[[Any], bool], message: str) -> None:
        self.passes = passes
        self.message = message  # str.format'ed with the field's name and value


_POSITIVE = Check(lambda v: v is None or v > 0, "{name} must be positive, got {value}")
_AT_LEAST_ONE = Check(lambda v: v is None or v >= 1, "{name} must be at least 1, got {value}")
_SHARE = Check(lambda v: 0.0 <= v <= 1.0, "{name} must be between 0 and 1, got {value}")
_NOT_NEGATIVE = Check(lambda v: v >= 0, "{name} must not be negative, got {value}")
_PORT = Check(lambda v: 0 <= v <= 65535, "{name} must be 0-65535 (0 takes a free one), got {value}")
_TWELVE_DIGITS = Check(is_account_id, "{name} must be 12 digits, got {value!r}")
#: What ``--task-mix`` may name: EC2's three task statuses and a task that does not exist.
TASK_MIX_STATUSES = ("completed", "active", "deleted", "missing")
_REGION_RATES = Check(
    lambda v: all(_region_rate(item) is not None for item in v),
    "{name} takes REGION=R with R a positive number of calls/s, got {value!r}",
)
_TASK_MIX = Check(
    lambda v: v is None or _task_mix(v) is not None,
    "{name} takes STATUS=SHARE,... with STATUS one of "
    + ", ".join(TASK_MIX_STATUSES)
    + " and shares that add up to 1, got {value!r}",
)
_DENY = Check(
    lambda v: all(_deny_rule(item) is not None for item in v),
    "{name} takes ACCESS_KEY_OR_ROLE=Action[,Action...], got {value!r}",
)
# Kinds are checked in this order, and each kind in field order, so that a config with
# several bad values reports the same one first as it always has.
_CHECK_ORDER = (
    *(_POSITIVE, _AT_LEAST_ONE, _SHARE, _NOT_NEGATIVE, _TWELVE_DIGITS, _PORT),
    *(_REGION_RATES, _TASK_MIX, _DENY),
)


def _region_rate(item: str) -> tuple[str, float] | None:
    """``us-east-1=20`` as (region, rate), or None if it is not that shape."""
    region, equals, rate = item.partition("=")
    try:
        value = float(rate)
    except ValueError:
        return None
    if not (region and equals) or not math.isfinite(value) or value <= 0:
        return None
    return region, value


def _deny_rule(item: str) -> tuple[str, frozenset[str]] | None:
    """``AKID=ImportVmImage,ec2:DescribeImportImageTasks`` as (who, actions), or None."""
    who, equals, actions = item.partition("=")
    names = frozenset(a.strip() for a in actions.split(",") if a.strip())
    if not (who.strip() and equals and names):
        return None
    return who.strip(), names


def _task_mix(text: str) -> dict[str, float] | None:
    """``completed=0.9,active=0.1`` as {status: share}, or None if it is not one."""
    shares: dict[str, float] = {}
    for item in text.split(","):
        status, equals, share = item.strip().partition("=")
        try:
            value = float(share)
        except ValueError:
            return None
        if not equals or status not in TASK_MIX_STATUSES or status in shares or value < 0:
            return None
        shares[status] = value
    return shares if math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6) else None


_AS_CONFIG: Any = object()  # a command default that is the config's own


@dataclass(frozen=True, slots=True, kw_only=True)
class Knob:
    """What the command lines know about one field of ``EmulatorConfig``."""

    help: str
    #: The option's name without ``--`` (default: the field's name, dashed).
    flag: str | None = None
    check: Check | None = None
    #: ``ibimport emulator``'s default when it is not the config's (``--port``).
    command_default: Any = _AS_CONFIG
    #: Offered by ``run --local`` as ``--emulator-<flag>``, with this help.
    run_help: str | None = None
    #: Read from this environment variable too.
    envvar: str | None = None
    #: The value's name in --help (default: typer's, from the type).
    metavar: str | None = None
    #: Never on a command line (a child gets it in ``envvar``), its default never shown.
    secret: bool = False


def knob(default: Any, **meta: Any) -> Any:
    """A field with a default and its ``Knob``."""
    return dataclasses.field(
        default=default, repr=not meta.get("secret", False), metadata={"knob": Knob(**meta)}
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    """Everything that shapes one emulator: where it listens and how it misbehaves.

    ``rate``/``burst`` meter each operation with a token bucket (None: unlimited);
    ``fault_rate`` is the share of calls that fail with 500/503, of which ``drop_share``
    instead lose their answer (the connection closes after the call took effect).
    The network faults of the fault matrix, each an independent share of the calls that
    pass the meter: ``drop_before_share`` closes the connection before the call takes
    effect, ``truncate_share`` sends the headers and half the body of a call that took
    effect and closes, ``slow_share`` answers a call that took effect ``slow_ms`` late.
    ``verify_signatures`` checks SigV4 against ``access_key_id``/``secret_access_key``
    (by default the throwaway pair ``ibimport run --local`` signs with), the signing time
    against the clock and the credential's region against ``served_regions``.
    Partitions (issue 13): the region is the credential scope's, the account the access
    key's (``accounts``, a 12-digit key, else ``account_id``); quotas are per (account,
    region, operation), ``rate_per_region`` overriding ``rate``. EC2's import tasks
    (issue 12) come from ``import_tasks`` or ``task_mix``; without either none exists,
    as for an ID AWS never issued (issue 21). ``deny`` refuses operations to access keys
    or roles; ``short_pages`` and ``list_delay_s`` make the lists as unkind as the model
    allows.
    """

    host: str = knob("127.0.0.1", help="Address to listen on.")
    port: int = knob(
        0, help="Port to listen on; 0 picks a free one.", command_default=8787, check=_PORT
    )
    region: str = knob(
        "us-east-1",
        help="Region served: --verify-signatures refuses a call signed for another "
        "(without it any region is answered; state is kept per region a call is signed for).",
    )
    regions: tuple[str, ...] = knob(
        (),
        help="Another region --verify-signatures serves (repeatable); so does every "
        "--rate-per-region region.",
        flag="regions",
    )
    account_id: str = knob(
        "123456789012",
        help="Account of callers whose access key is not 12 digits and not in --accounts.",
        check=_TWELVE_DIGITS,
    )
    accounts: Path | None = knob(  # noqa: RUF009 (knob is dataclasses.field)
        None,
        help="JSON object mapping access key id to account id (12 digits), and IAM role "
        'ARN to {"MaxSessionDuration": S} (3600-43200, default 3600): the only roles '
        "AssumeRole grants; with --verify-signatures the keys sign with "
        "--secret-access-key too.",
    )
    rate: float | None = knob(
        None,
        help="Calls per second per operation before HTTP 429.",
        check=_POSITIVE,
        run_help="--local: service quota, calls/s.",
    )
    burst: int | None = knob(
        None,
        help="Token bucket size (default: one second of --rate).",
        check=_AT_LEAST_ONE,
        run_help="--local: service burst.",
    )
    rate_per_region: tuple[str, ...] = knob(
        (),
        help="REGION=R: that region's quota, calls/s per operation (repeatable; "
        "--rate for the others).",
        check=_REGION_RATES,
    )
    ec2_rate: float | None = knob(
        None,
        help="EC2 DescribeImportImageTasks calls/s before HTTP 503 RequestLimitExceeded "
        "(bucket: --burst, or one second of this rate).",
        check=_POSITIVE,
    )
    latency_ms: float = knob(
        0.0,
        help="Delay added to every answer.",
        check=_NOT_NEGATIVE,
        run_help="--local: answer latency.",
    )
    jitter_ms: float = knob(
        0.0, help="Extra random delay, uniform in [0, jitter].", check=_NOT_NEGATIVE
    )
    fault_rate: float = knob(
        0.0,
        help="Share of calls answered 500/503 or dropped without an answer.",
        check=_SHARE,
        run_help="--local: share of 5xx faults.",
    )
    drop_share: float = knob(
        0.1,
        help="Share of faults that drop the connection after the call took effect.",
        check=_SHARE,
    )
    seed: int | None = knob(None, help="Seed for faults and jitter (repeatable runs).")
    token_ttl_s: float = knob(
        86400.0, help="Seconds a clientToken is remembered.", flag="token-ttl", check=_NOT_NEGATIVE
    )
    available_after_s: float = knob(
        0.0,
        help="Seconds an image takes from PENDING to AVAILABLE once its import task completed.",
        check=_NOT_NEGATIVE,
        run_help="--local: s to AVAILABLE.",
    )
    import_tasks: Path | None = knob(  # noqa: RUF009 (knob is dataclasses.field)
        None,
        help='JSON list of EC2 import tasks ({"ImportTaskId", "Status": completed | active | '
        'deleted, "StatusMessage", "Progress", "CompletesAfterS"}); other IDs do not exist, '
        "and their images FAIL.",
    )
    task_mix: str | None = knob(
        None,
        help="Tasks made up on first sight, e.g. completed=0.9,active=0.05,deleted=0.03,"
        "missing=0.02 (seeded by --seed); completed=1: every task exists and is done. "
        "Without this or --import-tasks no task exists and every image FAILS, as on AWS.",
        check=_TASK_MIX,
        run_help="--local: tasks, e.g. completed=0.9,active=0.1.",
        metavar="MIX",
    )
    deny: tuple[str, ...] = knob(
        (),
        help="ACCESS_KEY_OR_ROLE=Action[,Action...]: that access key, or the sessions of "
        "that role (its ARN or name), is refused those operations (ImportVmImage, "
        "imagebuilder:GetImage, DescribeImportImageTasks, AssumeRole, * for all) with the "
        "service's own access-denied error (repeatable).",
        check=_DENY,
        metavar="WHO=ACTIONS",
    )
    short_pages: float = knob(
        0.0,
        help="Share of Image Builder list pages cut short, still with a nextToken (the "
        "current model says a page may hold fewer items than asked).",
        check=_SHARE,
    )
    list_delay_s: float = knob(
        0.0,
        help="Seconds before a new build appears in ListImages / ListImageBuildVersions "
        "(GetImage finds it at once).",
        check=_NOT_NEGATIVE,
    )
    task_active_s: float = knob(
        60.0,
        help="Seconds an active --task-mix task takes to complete from first sight.",
        check=_NOT_NEGATIVE,
    )
    state_file: Path | None = knob(  # noqa: RUF009 (knob is dataclasses.field)
        None,
        help="JSON file to load at start and save on stop; an answer that changed the "
        "state (an image created) is sent only once the file holds the change, so a "
        "SIGKILL loses nothing a client was told.",
        flag="state",
    )
    state_save_interval_s: float = knob(
        0.05,
        help="Seconds at least between --state writes (changes meanwhile share one write; "
        "an answer waits up to this plus one write).",
        check=_NOT_NEGATIVE,
    )
    drop_before_share: float = knob(
        0.0,
        help="Share of calls whose connection resets before the call takes effect.",
        check=_SHARE,
    )
    truncate_share: float = knob(
        0.0,
        help="Share of calls that take effect and whose answer is cut off mid-body.",
        check=_SHARE,
    )
    slow_share: float = knob(
        0.0,
        help="Share of calls that take effect and are answered --slow-ms late.",
        check=_SHARE,
    )
    slow_ms: float = knob(
        0.0,
        help="Delay of a --slow-share answer (beyond the read timeout).",
        check=_NOT_NEGATIVE,
    )
    verify_signatures: bool = knob(
        False,
        help="Check SigV4 signatures against --access-key-id/--secret-access-key "
        "(403 UnrecognizedClientException / InvalidSignatureException, as AWS answers).",
    )
    access_key_id: str = knob(
        LOCAL_ACCESS_KEY_ID, help="The access key id --verify-signatures accepts."
    )
    secret_access_key: str = knob(
        LOCAL_SECRET_ACCESS_KEY,
        help="Its secret (better given in the environment variable); "
        "default: the throwaway pair `ibimport run --local` uses.",
        envvar=SECRET_ENV,
        secret=True,
    )

    def __post_init__(self) -> None:
        for item in knobs():  # a repeatable option arrives as a list
            value = getattr(self, item.name)
            if isinstance(value, list):
                object.__setattr__(self, item.name, tuple(value))
        for check in _CHECK_ORDER:
            for item in knobs():
                value = getattr(self, item.name)
                if item.knob.check is check and not check.passes(value):
                    raise ConfigError(check.message.format(name=item.name, value=value))
        if self.verify_signatures and not (self.access_key_id and self.secret_access_key):
            raise ConfigError("verify_signatures needs an access key id and a secret access key")

    @property
    def region_rates(self) -> dict[str, float]:
        """``--rate-per-region`` as {region: calls/s}; the last one given for a region wins."""
        return dict(rate for item in self.rate_per_region if (rate := _region_rate(item)))

    def rate_for(self, region: str) -> float | None:
        """The Image Builder quota of ``region``: its own, else ``rate``."""
        return self.region_rates.get(region, self.rate)

    @property
    def served_regions(self) -> frozenset[str]:
        """The regions ``--verify-signatures`` accepts a credential scope for."""
        return frozenset((self.region, *self.regions, *self.region_rates))

    @property
    def denials(self) -> dict[str, frozenset[str]]:
        """``--deny`` as {access key or role: the actions refused to it}."""
        rules: dict[str, frozenset[str]] = {}
        for item in self.deny:
            rule = _deny_rule(item)
            if rule is not None:
                rules[rule[0]] = rules.get(rule[0], frozenset()) | rule[1]
        return rules

    @property
    def task_shares(self) -> dict[str, float] | None:
        """``--task-mix`` as {status: share}, or None without it."""
        return None if self.task_mix is None else _task_mix(self.task_mix)

    @property
    def effective_burst(self) -> int:
        """The bucket size: ``burst``, or one second's worth of ``rate``."""
        return self.burst_for(self.rate)

    def burst_for(self, rate: float | None) -> int:
        """The bucket size of a bucket filled at ``rate``: ``burst``, or one second of it."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(rate or 1))


class KnobField:
    """One knob as the command-line generators see it."""

    __slots__ = ("default", "knob", "name", "type")

    def __init__(self, name: str, type: Any, default: Any, knob: Knob) -> None:
        self.name = name
        self.type = type
        self.default = default
        self.knob = knob

    @property
    def flag(self) -> str:
        """The option's name without ``--``."""
        return self.knob.flag or self.name.replace("_", "-")

    @property
    def command_default(self) -> Any:
        """The default ``ibimport emulator`` shows and uses."""
        if self.knob.command_default is _AS_CONFIG:
            return self.default
        return self.knob.command_default


@functools.cache
def knobs() -> tuple[KnobField, ...]:
    """Every knob of ``EmulatorConfig``, in field order."""
    hints = typing.get_type_hints(EmulatorConfig)
    return tuple(
        KnobField(f.name, hints[f.name], f.default, f.metadata["knob"])
        for f in dataclasses.fields(EmulatorConfig)
    )
