"""The JSON formats: an array of tasks, an object with defaults, and JSON Lines.

A JSON manifest is read as a stream (a private scanner decodes one task at a time from
a chunked buffer), so a million-task array never sits in memory. JSON Lines is the fast
path: one line, one C-scanner call. Duplicate keys are kept visible (JSON itself would
silently keep the last), and ``null`` and ``""`` mean absent, as an empty CSV cell does.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Final

from ibimport.domain.request import FIELDS
from ibimport.errors import ManifestError
from ibimport.manifest._lines import (
    CHUNK,
    MAX_ROW_BYTES,
    Lines,
    RowTooLarge,
    not_utf8,
    start_of_file,
)
from ibimport.manifest._validate import (
    ROW_FIELD,
    Checker,
    FieldError,
    ManifestRow,
    invalid,
    oversize,
    shorten,
    unknown_rule,
)

# --- decoding ------------------------------------------------------------------------------


class DupKeys(dict[str, Any]):
    """A JSON object in which some key appeared more than once (the last value kept)."""

    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    dup = DupKeys(obj)
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    dup.duplicates = tuple(dict.fromkeys(repeated))
    return dup


#: Decodes objects with repeated keys as ``DupKeys`` (the CSV ``tags`` cell uses it too).
DECODER: Final = json.JSONDecoder(object_pairs_hook=_pairs_hook)
#: The decoder's C scanner: one value at an index, StopIteration when none starts there.
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = DECODER.scan_once  # type: ignore[attr-defined]


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return f"invalid JSON: {_value_error(exc)}"


def _value_error(exc: ValueError) -> str:
    """A decoding ValueError in the user's terms (not Python's int-conversion advice)."""
    if "integer string conversion" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(exc)


def json_row(
    checker: Checker,
    row: int,
    obj: object,
    *,
    defaults: dict[str, Any] | None = None,
    ascii_source: bool = False,
) -> ManifestRow:
    """A decoded JSON task: duplicate keys, null/"" as absent, defaults merged under it."""
    if not isinstance(obj, dict):
        return invalid(row, ROW_FIELD, "must be a JSON object (a task)", shorten(obj))
    errors: list[FieldError] = []
    if type(obj) is DupKeys:
        errors.extend(
            FieldError(shorten(k, 40), "is given more than once", "") for k in obj.duplicates
        )
        obj = dict(obj)
    values = obj.values()
    if None in values or "" in values:
        obj = {k: v for k, v in obj.items() if v is not None and v != ""}
    tags = obj.get("tags")
    if type(tags) is DupKeys:
        errors.extend(
            FieldError(f"tag:{shorten(k, 40)}", "is given more than once", "")
            for k in tags.duplicates
        )
    if defaults:
        merged = {**defaults, **obj}
        base_tags = defaults.get("tags")
        if isinstance(tags, dict) and base_tags:
            merged["tags"] = {**base_tags, **tags}
        obj = merged
    return checker.check(row, obj, errors, ascii_source=ascii_source and not defaults)


# --- JSON Lines ----------------------------------------------------------------------------


def read_jsonl(f: BinaryIO, checker: Checker, label: str) -> Iterator[ManifestRow]:
    """One task per line; a broken line is an invalid row and the rest is still read."""
    lines = Lines(f, label)
    next_line = lines.__next__
    scan = _SCAN
    row = 0
    while True:
        try:
            text = next_line()
        except StopIteration:
            return
        except RowTooLarge:
            row += 1
            yield oversize(row)
            continue
        if not text or text.isspace():
            continue
        row += 1
        if checker.skips(row):
            continue  # another partition's row: not decoded
        try:
            try:  # the common case, a line that starts with "{", without decode()'s overhead
                obj, end = scan(text, 0)
                if end != len(text) and not text[end:].isspace():
                    raise StopIteration
            except StopIteration:
                obj = DECODER.decode(text)  # for its whitespace handling and error messages
        except RecursionError:
            rule = f"invalid JSON: nested too deeply (line {lines.lineno})"
            yield invalid(row, ROW_FIELD, rule, "")
            continue
        except ValueError as exc:
            rule = f"{_json_error(exc)} (line {lines.lineno})"
            yield invalid(row, ROW_FIELD, rule, shorten(text.strip()))
            continue
        # ASCII text without \u escapes decodes to ASCII strings: already NFC.
        yield json_row(checker, row, obj, ascii_source=text.isascii() and "\\u" not in text)


# --- a JSON document, streamed -------------------------------------------------------------

_WS: Final = re.compile(r"[ \t\n\r]*")


class _JsonText:
    """A UTF-8 JSON document decoded chunk by chunk, so a huge array is never read whole."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self._f = f
        self.label = label
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._read = 0  # bytes read so far
        self._newlines_read = 0
        self._lines_dropped = 0  # newlines in text already dropped from buf
        self._column_dropped = 0  # characters of the current line already dropped from buf

    def _fill(self, size: int = CHUNK) -> bool:
        """Read and decode more; False at end of file."""
        if self.eof:
            return False
        data = self._f.read(size)
        skip = start_of_file(data, self.label) if self._read == 0 and data else 0
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(data[skip:] if skip else data, final=not data)
        except UnicodeDecodeError as exc:
            raise not_utf8(
                self.label, exc, offset=self._read + skip - pending, line=self._newlines_read + 1
            ) from None
        self._read += len(data)
        self._newlines_read += data.count(b"\n")
        if not data:
            self.eof = True
        if self.pos:
            self._lines_dropped += self.buf.count("\n", 0, self.pos)
            newline = self.buf.rfind("\n", 0, self.pos)
            if newline >= 0:
                self._column_dropped = self.pos - newline - 1
            else:
                self._column_dropped += self.pos
            self.buf = self.buf[self.pos :] + text
            self.pos = 0
        else:
            self.buf += text
        return True

    def line(self, pos: int | None = None) -> int:
        """The line number of a position in buf (default: the current one)."""
        return self._lines_dropped + self.buf.count("\n", 0, self.pos if pos is None else pos) + 1

    def column(self, pos: int | None = None) -> int:
        """The column (in characters, from 1) of a position in buf."""
        at = self.pos if pos is None else pos
        newline = self.buf.rfind("\n", 0, at)
        return at - newline if newline >= 0 else self._column_dropped + at + 1

    def error(self, message: str, pos: int | None = None) -> ManifestError:
        where = f"line {self.line(pos)}, column {self.column(pos)}"
        return ManifestError(f"{self.label}: {message} ({where})")

    def expected(self, what: str) -> ManifestError:
        """``expected ...`` where something else stands, or the file ends too early."""
        if self.peek() == "":
            return self.error(f"invalid JSON: the file ends where {what} should be (truncated?)")
        return self.error(f"expected {what}")

    def peek(self) -> str:
        """The next character that is not whitespace ("" at end of file)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def value(self, what: str) -> Any:
        """Decode the JSON value at pos, reading more of the file as it needs."""
        while True:
            try:
                obj, end = DECODER.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    break  # else a number or literal may go on in the next chunk
            except RecursionError:
                raise self.error(f"{what} is nested too deeply") from None
            except json.JSONDecodeError as exc:
                incomplete = exc.pos >= len(self.buf) - 16 or exc.msg.startswith("Unterminated")
                if self.eof or not incomplete:
                    raise self.error(f"invalid JSON in {what}: {exc.msg}", exc.pos) from None
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                raise self.error(f"invalid JSON in {what}: {_value_error(exc)}") from None
            if len(self.buf) - self.pos > MAX_ROW_BYTES:
                raise self.error(f"{what} is larger than {MAX_ROW_BYTES // (1 << 20)} MiB")
            self._fill(max(CHUNK, len(self.buf) - self.pos))
        if end - self.pos > MAX_ROW_BYTES:
            raise self.error(f"{what} is larger than {MAX_ROW_BYTES // (1 << 20)} MiB")
        self.pos = end
        return obj


def read_json(f: BinaryIO, checker: Checker, label: str) -> Iterator[ManifestRow]:
    """An array of tasks, or {"defaults": {...}, "tasks": [...]}, streamed element by element."""
    js = _JsonText(f, label)
    first = js.peek()
    if first == "[":
        js.pos += 1
        yield from _json_tasks(js, checker, None)
    elif first == "{":
        js.pos += 1
        yield from _json_object(js, checker)
    else:
        raise js.error(
            "expected a JSON array of tasks or an object with 'defaults' and 'tasks'"
            + (" (the file is empty)" if not first else "")
        )
    if js.peek():
        raise js.error("unexpected data after the end of the JSON document")


def _json_object(js: _JsonText, checker: Checker) -> Iterator[ManifestRow]:
    defaults: dict[str, Any] | None = None
    seen: set[str] = set()
    #: An unknown key is reported once the object is known to be valid JSON: a truncated
    #: file is said to be truncated, not to have a wrong key.
    unknown: tuple[str, int] | None = None
    char = js.peek()
    while char != "}":
        if char != '"':
            raise js.expected("a key ('defaults' or 'tasks') in the top-level object")
        key_at = js.pos
        key = js.value("a key")
        if key in seen and unknown is None:
            raise js.error(f"top-level key {shorten(key)!r} appears more than once")
        seen.add(key)
        if js.peek() != ":":
            raise js.expected("':' after a key")
        js.pos += 1
        char = js.peek()
        if key == "defaults":
            if "tasks" in seen:
                raise js.error("'defaults' must come before 'tasks' (the file is read as a stream)")
            value = js.value("defaults")
            defaults = _check_defaults(value, js)
        elif key == "tasks":
            if char != "[":
                raise js.error("'tasks' must be an array of tasks")
            js.pos += 1
            yield from _json_tasks(js, checker, defaults)
        else:
            if unknown is None:
                unknown = (key, js.line(key_at))
            js.value(f"the value of {shorten(key)!r}")
        char = js.peek()
        if char == ",":
            js.pos += 1
            char = js.peek()
            if char == "}":
                raise js.error("trailing comma in the top-level object")
        elif char != "}":
            raise js.expected("',' or '}' in the top-level object")
    js.pos += 1
    if unknown is not None:
        key, line = unknown
        raise ManifestError(
            f"{js.label}: unknown top-level key {shorten(key)!r} (line {line}); expected "
            "'defaults' and 'tasks' (a list of tasks is an array: [{...}, {...}])"
        )
    if "tasks" not in seen:
        raise js.error("the top-level object has no 'tasks' array")


def _check_defaults(value: object, js: _JsonText) -> dict[str, Any]:
    """Defaults apply to every task, so a bad one is a whole-file problem."""
    if not isinstance(value, dict):
        raise js.error("'defaults' must be an object of task fields")
    if type(value) is DupKeys:
        raise js.error(f"'defaults' gives {shorten(value.duplicates[0])!r} more than once")
    for key in value:
        if key not in FIELDS:
            raise js.error(f"'defaults': {shorten(key, 40)}: {unknown_rule(key)}")
        if key == "clientToken":
            raise js.error("'defaults' cannot set clientToken: each task needs its own")
    tags = value.get("tags")
    if tags is not None and not isinstance(tags, dict):
        raise js.error("'defaults': tags must be an object of tag keys to values")
    if type(tags) is DupKeys:
        raise js.error(f"'defaults': tag {shorten(tags.duplicates[0])!r} is given more than once")
    return {k: v for k, v in value.items() if v is not None and v != ""}


def _json_tasks(
    js: _JsonText, checker: Checker, defaults: dict[str, Any] | None
) -> Iterator[ManifestRow]:
    row = 0
    char = js.peek()
    if char == "]":
        js.pos += 1
        return
    while True:
        row += 1
        obj = js.value(f"task {row}")
        yield json_row(checker, row, obj, defaults=defaults)
        char = js.peek()
        if char == "]":
            js.pos += 1
            return
        if char != ",":
            raise js.expected(f"',' or ']' after task {row}")
        js.pos += 1
        if js.peek() == "]":
            raise js.error(f"trailing comma after task {row}")
