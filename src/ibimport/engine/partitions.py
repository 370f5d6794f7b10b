"""Where rows are imported, and which rows are this process's.

Image Builder's quotas apply per account and Region, so a batch runs one client, one
limiter and one runner per partition: one partition's throttling never slows another, and
a partition that cannot work (no credentials, access denied, unreachable) stops only its
own rows. A row names its partition by ``region`` and ``profile`` (the command line's,
then the AWS config's, by default): its ``Place``; the places whose credentials reach the
same account and Region share one partition.

A wave too big or too spread out for one machine is split into shards (``--shard K/N``):
each row belongs to one shard, by a stable hash of its place and its image identity, so
N processes on N machines (a Kubernetes Indexed Job, an AWS Batch array job) import each
row exactly once between them, each with its own journal.
"""

from __future__ import annotations

import hashlib
import os
import re
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ibimport.domain.apimodel import REGION_PATTERN, image_identity
from ibimport.domain.request import ImageRequest
from ibimport.errors import ConfigError

__all__ = ["Place", "RateSpec", "RowPlan", "Shard", "parse_rates", "place_of", "told_rate"]

#: Environment variables that carry a worker's index on the engines people run shards on.
SHARD_INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


@dataclass(frozen=True, order=True, slots=True)
class Place:
    """Where a row asks to be imported: a config profile (None: the default credential
    chain) and a Region (None: the default Region)."""

    profile: str | None
    region: str | None

    def resolved(self, default: Place) -> Place:
        return Place(self.profile or default.profile, self.region or default.region)

    @property
    def label(self) -> str:
        return f"{self.profile or 'default'}/{self.region or 'default'}"


def place_of(task: ImageRequest) -> Place:
    return Place(task.profile, task.region)


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(
                f"shard {self.index}/{self.count}: the index must be 0 to {self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N``, as ``--shard`` takes it."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ConfigError(f"--shard {text!r}: expected K/N, such as 0/4")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_environment(cls, count: int, environ: Mapping[str, str] = os.environ) -> Shard:
        """``--shard-count N``: the index from the engine running this process."""
        for variable in SHARD_INDEX_VARIABLES:
            value = environ.get(variable)
            if value is not None:
                # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
                if re.fullmatch(r"\s*[0-9]+\s*", value) is None:
                    raise ConfigError(f"{variable}={value!r} is not a shard index")
                return cls(int(value), count)
        raise ConfigError(
            f"--shard-count {count}: none of {', '.join(SHARD_INDEX_VARIABLES)} is set "
            "(run as a Kubernetes Indexed Job or an AWS Batch array job, or pass --shard K/N)"
        )

    def owns(self, place: Place, task: ImageRequest) -> bool:
        """Whether this shard imports ``task``: a stable hash of its place and identity."""
        identity = image_identity(task.name, task.semanticVersion)
        key = "\0".join((place.profile or "", place.region or "", *identity))
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return int.from_bytes(digest) % self.count == self.index

    def owns_invalid(self, row: int) -> bool:
        """An invalid row (no identity to hash) is reported by one shard, by its number."""
        return row % self.count == self.index

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


@dataclass(frozen=True, slots=True)
class RateSpec:
    """``--rate``: one told rate for every partition, and rates per Region."""

    default: float | None = None
    per_region: Mapping[str, float] | None = None

    def for_region(self, region: str, *, shards: int = 1) -> float | None:
        """The rate a partition in ``region`` is told; shards share a told rate evenly."""
        rate = (self.per_region or {}).get(region, self.default)
        return None if rate is None else rate / shards


def told_rate(
    region: str, *, rates: RateSpec | None, rate: float | None, shard: Shard | None
) -> float | None:
    """A partition's told rate: ``rates`` for its Region, else ``rate`` for all, shared
    evenly among the shards (each takes R/N)."""
    spec = rates or RateSpec()
    if spec.default is None:  # ``rates`` told no default: ``rate`` is the one for all
        spec = RateSpec(rate, spec.per_region)
    return spec.for_region(region, shards=shard.count if shard is not None else 1)


def parse_rates(values: Sequence[str]) -> RateSpec:
    """``["20"]`` or ``["us-east-1=20", "eu-west-1=10"]`` (both may mix: a bare rate is the
    default for Regions not named)."""
    default: float | None = None
    per_region: dict[str, float] = {}
    for text in values:
        region, _, number = text.rpartition("=")
        try:
            rate = float(number)
        except ValueError:
            raise ConfigError(f"--rate {text!r}: expected R or REGION=R, such as 20") from None
        if not rate > 0:
            raise ConfigError(f"--rate {text!r}: the rate must be above 0")
        if not region:
            default = rate
        elif re.fullmatch(REGION_PATTERN, region):
            per_region[region] = rate
        else:
            raise ConfigError(f"--rate {text!r}: {region!r} is not a Region's name")
    return RateSpec(default, per_region or None)


class RowPlan:
    """Which place each manifest row of this shard is imported to, as preflight read it.

    Two bytes a row (a million rows: 2 MB). The run reads the manifest once per partition,
    each read validating only its own rows (``rows_in``), so a slow partition never holds
    the others back; the rows preflight found to repeat an earlier one (``duplicates``) are
    handed to those reads, which see only their partition's rows.
    """

    _NOT_OURS = 0

    def __init__(self) -> None:
        self.places: list[Place] = []
        self._index: dict[Place, int] = {}
        self._rows = array("H")
        self.duplicates: dict[int, int] = {}
        self._last: list[int] = []
        self._counts: list[int] = []  # rows per place

    def add(self, row: int, place: Place | None) -> None:
        """Row ``row`` goes to ``place`` (None: not this shard's row)."""
        while len(self._rows) < row - 1:
            self._rows.append(self._NOT_OURS)
        if place is None:
            self._rows.append(self._NOT_OURS)
            return
        index = self._index.get(place)
        if index is None:
            if len(self.places) >= 0xFFFE:
                raise ConfigError("a manifest may name at most 65,534 places")
            index = self._index[place] = len(self.places)
            self.places.append(place)
            self._last.append(0)
            self._counts.append(0)
        self._rows.append(index + 1)
        self._last[index] = row
        self._counts[index] += 1

    def place_index(self, place: Place) -> int:
        """The index of ``place``, added (with no rows) if the plan has not seen it."""
        index = self._index.get(place)
        if index is None:
            index = self._index[place] = len(self.places)
            self.places.append(place)
            self._last.append(0)
            self._counts.append(0)
        return index

    def place_index_of(self, row: int) -> int | None:
        """The index of row ``row``'s place (None: not this shard's row)."""
        if not 0 < row <= len(self._rows):
            return None
        index = self._rows[row - 1]
        return None if index == self._NOT_OURS else index - 1

    def rows_in(self, indexes: frozenset[int]) -> Callable[[int], bool]:
        """Whether row ``n`` is one of the places ``indexes``'."""
        wanted = frozenset(i + 1 for i in indexes)
        rows = self._rows

        def belongs(row: int) -> bool:
            return 0 < row <= len(rows) and rows[row - 1] in wanted

        return belongs

    def last_row_in(self, indexes: frozenset[int]) -> int:
        return max((self._last[i] for i in indexes), default=0)

    def count_in(self, indexes: frozenset[int]) -> int:
        """How many rows the places ``indexes`` hold."""
        return sum(self._counts[i] for i in indexes if i < len(self._counts))
