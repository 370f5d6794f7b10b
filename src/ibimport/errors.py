"""The exceptions ibimport raises, translated at the boundary where they arise.

    IbimportError
    ├── ManifestError        the manifest as a whole cannot be read (encoding, syntax, size)
    ├── JournalError         the journal is corrupt, foreign, newer, or unwritable
    │   └── JournalBusy      another ibimport process holds it (a run still going)
    ├── ConfigError          a setting the user gave is unusable
    ├── OutputError          an output (report, results) could not be written
    ├── BatchRefused         the batch will not start, and nothing was sent:
    │   ├── InvalidManifest  rows broke the service's rules (and --skip-invalid is off)
    │   └── ManifestChanged  the manifest differs from the journal's (and --force is off)
    └── CallError            one Image Builder call failed (raised by ibimport.aws.client only)
        ├── ApiError         the service answered with an error code (4xx/5xx)
        └── TransportError   no usable answer: connection refused or reset, timeout, truncation
    FatalBatchError          a fault that fails every call (credentials, access, endpoint):
                             the batch stops with one message instead of thousands of failures

Code above ibimport.aws.client never sees a botocore or aiohttp exception.
"""

from __future__ import annotations


class IbimportError(Exception):
    """Base class of every error ibimport raises on purpose."""


class ManifestError(IbimportError):
    """The manifest cannot be read at all (as opposed to a row that is invalid)."""


class JournalError(IbimportError):
    """The journal cannot be used; the message says why and what to do."""


class JournalBusy(JournalError):
    """Another ibimport process is writing the journal (its lock is held)."""


class ConfigError(IbimportError):
    """A command-line or library setting is unusable."""


class OutputError(IbimportError):
    """An output file could not be written (disk full, its folder gone, a FIFO nobody reads)."""


class BatchRefused(IbimportError):
    """The batch was refused before its first call; ``lines`` are what a person reads."""

    def __init__(self, message: str, *, lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.lines = lines


class InvalidManifest(BatchRefused):
    """Some rows are invalid: ``lines`` name each (row, field, rule) of the first ``shown_rows``."""

    def __init__(
        self, *, lines: tuple[str, ...], shown_rows: int, invalid_rows: int, total_rows: int
    ) -> None:
        super().__init__(f"{invalid_rows} of {total_rows} rows invalid", lines=lines)
        self.shown_rows = shown_rows
        self.invalid_rows = invalid_rows
        self.total_rows = total_rows


class ManifestChanged(BatchRefused):
    """The manifest is not the one the journal was written for: ``lines`` say how."""

    def __init__(
        self,
        *,
        journal: str,
        lines: tuple[str, ...],
        options: tuple[str, ...] = (),
        resume: str = "",
    ) -> None:
        what = "the options" if options else "the manifest"
        super().__init__(f"{what} changed since the journal {journal} was written", lines=lines)
        self.journal = journal
        #: The options that differ from the journal's, one line each (``--tag wave=3 was
        #: given ... and is missing now``): the rows "changed" because their tokens did.
        self.options = options
        #: The command line that resumes the batch with the journal's own options.
        self.resume = resume


class CallError(IbimportError):
    """One call to Image Builder failed."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ApiError(CallError):
    """The service answered with an error: ``code`` is AWS's error code."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(code, message, status=status)
        self.request_id = request_id


class TransportError(CallError):
    """No usable answer arrived; ``code`` names the kind (ConnectionError, ReadTimeout, ...)."""


class FatalBatchError(IbimportError):
    """Every call would fail the same way, so the batch stops early."""
