"""The durable ``--state``: the emulator's images, tokens and tasks kept across a restart.

Loaded once before serving, saved after every change before the answer that tells of it
(``StateSaver``: a SIGKILL never loses an image a client was told about), and once more
on the way out. A ``--state`` the first save could not write is refused before serving.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from ibimport._files import atomic_private_file
from ibimport.emulator.imagebuilder.models import ImageBuilderBackend
from ibimport.errors import ConfigError

__all__ = ["StateSaver", "check_state_path", "load_state", "write_state"]


def load_state(backend: ImageBuilderBackend, path: Path) -> None:
    """Take back what ``path`` holds, if it exists; a file that cannot be read is refused."""
    if not path.exists():
        return
    try:
        backend.load_state(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load emulator state from {path}: {exc}") from exc


def check_state_path(path: Path) -> None:
    """Refuse, before serving, a ``--state`` that the first save could not write: a folder,
    a file in a folder that does not exist (never created: a typo would make one), or a
    place this process cannot create files in."""
    if path.is_dir():
        raise ConfigError(f"--state {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"--state {path}: the folder {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--state {path}: cannot write in {folder}: {exc.strerror or exc}"
        ) from None


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    with atomic_private_file(path) as handle:
        json.dump(data, handle, separators=(",", ":"))


class StateSaver:
    """Makes ``--state`` durable: no answer tells of a change the file does not hold yet.

    An answer that changed the state (an image created, a token remembered) waits in
    ``saved()`` for a write that began after the change, so a SIGKILL of the emulator
    never loses an image a client was told about. Changes arriving while a write is under
    way share the next one (group commit); writes start at most every ``interval_s``, so a
    creating call's answer is delayed by up to ``interval_s`` plus one write.
    """

    def __init__(self, backend: ImageBuilderBackend, path: Path, *, interval_s: float) -> None:
        self._backend = backend
        self._path = path
        self._interval_s = max(0.0, interval_s)
        self._wanted = asyncio.Event()
        self._next: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[None] | None = None

    async def saved(self) -> None:
        """Return once the state as it is now is in the file."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        self._wanted.set()
        await asyncio.shield(self._next)

    async def run(self) -> None:
        """Write whenever asked, until cancelled; a last write then releases any waiter."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                waiting = self._writing = self._next
                self._next = None
                self._backend.dirty = False
                state = self._backend.to_state()  # snapshot on the loop: consistent
                try:
                    await loop.run_in_executor(None, write_state, self._path, state)
                except OSError as exc:
                    if waiting is not None:
                        waiting.set_exception(exc)
                        waiting.exception()  # retrieved: a waiter may have gone
                else:
                    if waiting is not None:
                        waiting.set_result(None)
                await asyncio.sleep(self._interval_s)
        finally:
            pending = [f for f in (self._writing, self._next) if f is not None and not f.done()]
            self._next = None
            if pending:
                write_state(self._path, self._backend.to_state())
                for waiting in pending:
                    waiting.set_result(None)
