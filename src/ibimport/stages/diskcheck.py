"""Whether a row with disks can be imported, asked before any task is started: its disk
objects, their buckets' Region, the import role (``preflight``, ``run --preflight``).

ImportImage takes a row whose disk is missing and the task fails minutes later (disk
validation, 403); a bucket in another Region or a missing service role is refused for
every row of the partition alike. So, read-only, under the partition's read limiter, each
distinct thing once however many rows name it:

- S3 HeadObject per disk object: it exists, and its size;
- S3 GetBucketLocation per bucket: it is in the import Region (EC2 reads disks only there);
- IAM GetRole per role name: it exists and trusts ``vmie.amazonaws.com`` (the VM
  Import/Export guide's trust policy).

A check the caller is not permitted to make (``retry.DENIED_CODES``, or S3's bare 403) is
"could not check", never a failure: the import role, not the caller, reads the disks. A
row is ``failed`` (blocked by ``run --preflight``) with the first problem's code:
``ImportRoleMissing``, ``DiskNotLocal``, ``DiskNotFound``; ``unchecked`` when nothing
failed but something could not be asked; else ``ready``, with its disks' size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import anyio

from ibimport.aws.client import PartitionClient, RoleInfo
from ibimport.domain.diskimport import DiskRef
from ibimport.domain.request import ImageRequest
from ibimport.errors import CallError
from ibimport.flow.executor import CallExecutor, first_error
from ibimport.flow.retry import DENIED_CODES
from ibimport.stages.taskcheck import TaskCheck, TaskState

__all__ = ["DiskCheck", "DiskChecker", "disk_size_text"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: The errorCode of a row for each problem, in the order they are reported.
ROLE_MISSING, NOT_LOCAL, NOT_FOUND = "ImportRoleMissing", "DiskNotLocal", "DiskNotFound"
#: S3's and IAM's words for a thing that does not exist (HeadObject's is the bare status).
_MISSING_CODES = frozenset({"404", "NotFound", "NoSuchKey", "NoSuchBucket", "NoSuchEntity"})


@dataclass(frozen=True, slots=True)
class DiskCheck:
    """A row's disks as checked: the row's verdict (``check``) and their size in bytes
    (None when some could not be read)."""

    check: TaskCheck
    size: int | None


@dataclass(frozen=True, slots=True)
class _Seen:
    """One thing asked about: its answer, or that it is missing, or why it was not seen."""

    value: object = None
    missing: bool = False
    unchecked: str = ""


def _denied(error: CallError) -> bool:
    return error.code in DENIED_CODES or error.status == 403


def _missing(error: CallError) -> bool:
    return error.code in _MISSING_CODES or error.status == 404


class DiskChecker:
    """Checks the disks and roles of one partition's rows (see the module's docstring)."""

    def __init__(
        self, client: PartitionClient, calls: CallExecutor, *, region: str, parallel: int = 8
    ) -> None:
        if parallel < 1:
            raise ValueError("DiskChecker needs parallel >= 1")
        self._client = client
        self._calls = calls
        self._region = region
        self._parallel = parallel

    @property
    def calls(self) -> int:
        return self._calls.calls

    async def check(self, rows: Iterable[tuple[K, ImageRequest]]) -> dict[K, DiskCheck]:
        """Every row's disks and role; raises ``CallError`` when a check can neither be
        answered nor refused (the endpoint unreachable, say)."""
        wanted = [(key, request.disks(), _role(request)) for key, request in rows]
        objects = {
            (d.bucket, d.key)
            for _, disks, _ in wanted
            for d in disks
            if d.bucket is not None and d.key is not None
        }
        buckets = {bucket for bucket, _ in objects}
        roles = {role for _, _, role in wanted}
        located = await self._each(sorted(buckets), self._client.bucket_region)
        heads = await self._each(sorted(objects), lambda pair: self._client.head_object(*pair))
        trusted = await self._each(sorted(roles), self._client.get_role)
        return {
            key: self._verdict(disks, role, located=located, heads=heads, roles=trusted)
            for key, disks, role in wanted
        }

    async def _each(
        self, things: Sequence[T], ask: Callable[[T], Awaitable[object]]
    ) -> dict[T, _Seen]:
        """Ask about each thing, ``parallel`` at a time, under the limiter and retries."""
        seen: dict[T, _Seen] = {}
        queue = iter(things)

        async def worker() -> None:
            for thing in queue:
                try:
                    seen[thing] = _Seen(await self._calls.read(partial(ask, thing)))
                except CallError as error:
                    if _missing(error):
                        seen[thing] = _Seen(missing=True)
                    elif _denied(error):
                        seen[thing] = _Seen(unchecked=f"{error.code}: {error.message}")
                    else:
                        raise

        try:
            async with anyio.create_task_group() as group:
                for _ in range(min(self._parallel, len(things))):
                    group.start_soon(worker)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return seen

    def _verdict(
        self,
        disks: Sequence[DiskRef],
        role: str,
        *,
        located: dict[str, _Seen],
        heads: dict[tuple[str, str], _Seen],
        roles: dict[str, _Seen],
    ) -> DiskCheck:
        problems: list[tuple[str, str]] = []
        unchecked: list[str] = []
        role_seen = roles[role]
        if role_seen.missing:
            problems.append((ROLE_MISSING, f"the import role {role} does not exist"))
        elif role_seen.unchecked:
            unchecked.append(f"the import role {role} ({role_seen.unchecked})")
        elif isinstance(role_seen.value, RoleInfo) and not role_seen.value.trusts_vmie:
            problems.append(
                (ROLE_MISSING, f"the import role {role} does not trust vmie.amazonaws.com")
            )
        size: int | None = 0
        for disk in disks:
            if disk.bucket is None or disk.key is None:
                continue  # a snapshot or a URL: nothing in S3 to look at
            where = located[disk.bucket]
            if where.unchecked:
                unchecked.append(f"the Region of bucket {disk.bucket} ({where.unchecked})")
            elif not where.missing and where.value != self._region:
                problems.append(
                    (
                        NOT_LOCAL,
                        f"bucket {disk.bucket} is in {where.value}, not in the import Region "
                        f"{self._region}",
                    )
                )
            head = heads[disk.bucket, disk.key]
            if head.missing or where.missing:
                problems.append((NOT_FOUND, f"{disk.ref} does not exist"))
                size = None
            elif head.unchecked:
                unchecked.append(f"{disk.ref} ({head.unchecked})")
                size = None
            elif size is not None and isinstance(head.value, int):
                size += head.value
        if problems:
            code = min(problems, key=lambda p: _ORDER.index(p[0]))[0]
            message = "; ".join(dict.fromkeys(text for _, text in problems))
            return DiskCheck(TaskCheck("", TaskState.FAILED, message=message, code=code), size)
        if unchecked:
            message = "could not check " + "; ".join(unchecked)
            return DiskCheck(TaskCheck("", TaskState.UNCHECKED, message=message), size)
        return DiskCheck(TaskCheck("", TaskState.READY, message=disk_size_text(size)), size)


_ORDER = (ROLE_MISSING, NOT_LOCAL, NOT_FOUND)


def _role(request: ImageRequest) -> str:
    """The import role ImportImage will name (the row's, else the default)."""
    return str(request.import_image_params()["RoleName"])


def disk_size_text(size: int | None) -> str:
    """``3.2 GiB of disks``: a row's disks' size for people."""
    if size is None:
        return ""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit} of disks" if unit == "B" else f"{value:.1f} {unit} of disks"
