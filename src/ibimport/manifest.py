"""Reading and validating import manifests (CSV, JSON, JSON Lines) as a stream of rows.

A manifest can hold a million tasks, so rows are read, decoded and validated one at a
time and handed out as :class:`ManifestRow`; only a compact digest of each row's
identity (name + semanticVersion) is kept, to find repeats. A row that breaks a rule
becomes an invalid row naming the field and the rule; only a file that cannot be read
at all (not UTF-8, broken JSON structure, unknown format) raises ``ManifestError``.
The rules are the ImportVmImage constraints of :mod:`ibimport.apimodel`.

Absent means absent everywhere: an empty CSV cell, a missing JSON key, a JSON ``null``
and a JSON ``""`` are the same thing, so a task reads the same from every format.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import json
import os
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from ibimport.apimodel import (
    REQUEST_FIELDS,
    VERSION_NODE_MAX,
    StringRule,
    import_vm_image_rules,
)
from ibimport.errors import ConfigError, ManifestError
from ibimport.tokens import nfc

__all__ = [
    "ROW_FIELD",
    "FieldError",
    "ImportTask",
    "ManifestFormat",
    "ManifestRow",
    "detect_format",
    "manifest_fingerprint",
    "parse_tag_option",
    "read_manifest",
]

_RULES: Final = import_vm_image_rules()

#: The ``field`` of an error about a row as a whole (unreadable, ragged, too large).
ROW_FIELD: Final = "(row)"

#: A row (a JSON Lines line, a CSV record, a JSON array element) larger than this is
#: refused; the largest valid task is well under 100 KiB.
MAX_ROW_BYTES: Final = 1 << 20
#: csv.field_size_limit while reading; the largest valid cell (a full tags column) is ~20 KiB.
MAX_CSV_FIELD: Final = 128 * 1024
_CHUNK: Final = 64 * 1024
_SHORT: Final = 60

#: The manifest's field names: the API's own, with logGroupName lifted out of loggingConfiguration.
FIELDS: Final = tuple(
    "logGroupName" if name == "loggingConfiguration" else name for name in REQUEST_FIELDS
)
_STRING_RULES: Final[dict[str, StringRule]] = {
    **_RULES.fields,
    "logGroupName": _RULES.log_group_name,
}


class ManifestFormat(StrEnum):
    """The manifest file formats, named as ``--format`` spells them."""

    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


# --- the model ---------------------------------------------------------------------


def _pattern(rule: StringRule) -> str | None:
    """The rule's pattern (or enum) as a whole-value Python regex."""
    if rule.enum:
        return "^(?:" + "|".join(re.escape(value) for value in rule.enum) + r")\Z"
    if rule.pattern is None:
        return None
    # The service matches the whole value; Python's `$` would also accept a final "\n".
    if rule.pattern.endswith("$") and not rule.pattern.endswith("\\$"):
        return rule.pattern[:-1] + r"\Z"
    return rule.pattern


def _constraints(rule: StringRule) -> StringConstraints:
    return StringConstraints(
        min_length=rule.min_len, max_length=rule.max_len, pattern=_pattern(rule)
    )


_NODE_DIGITS: Final = len(str(VERSION_NODE_MAX))
_LONG_NODE: Final = re.compile(f"[0-9]{{{_NODE_DIGITS}}}")
_NODE_RULE: Final = f"each version node must be between 0 and {VERSION_NODE_MAX}"


def _check_version_nodes(value: str) -> str:
    """Each node at most VERSION_NODE_MAX, compared as text: int() refuses >4300 digits."""
    if _LONG_NODE.search(value) is None:
        return value
    for node in value.split("."):
        digits = node.lstrip("0")
        if len(digits) > _NODE_DIGITS or (
            len(digits) == _NODE_DIGITS and digits > str(VERSION_NODE_MAX)
        ):
            raise PydanticCustomError("version_node", _NODE_RULE)
    return value


_F = _RULES.fields
_Name = Annotated[str, _constraints(_F["name"])]
_Version = Annotated[str, _constraints(_F["semanticVersion"]), AfterValidator(_check_version_nodes)]
_Description = Annotated[str, _constraints(_F["description"])]
_Platform = Annotated[str, _constraints(_F["platform"])]
_OsVersion = Annotated[str, _constraints(_F["osVersion"])]
_TaskId = Annotated[str, _constraints(_F["vmImportTaskId"])]
_Token = Annotated[str, _constraints(_F["clientToken"])]
_LogGroup = Annotated[str, _constraints(_RULES.log_group_name)]
_TagKey = Annotated[str, _constraints(_RULES.tag_key)]
_TagValue = Annotated[str, _constraints(_RULES.tag_value)]
_Tags = Annotated[dict[_TagKey, _TagValue], Field(max_length=_RULES.tags_max)]

_MODEL_CONFIG: Final = ConfigDict(
    strict=True, extra="forbid", frozen=True, regex_engine="python-re"
)


class ImportTask(BaseModel):
    """One valid ImportVmImage request as the manifest gives it; field names are the API's.

    Strict: a number where a string belongs is an error, not silently converted.
    """

    model_config = _MODEL_CONFIG

    name: _Name
    semanticVersion: _Version
    description: _Description | None = None
    platform: _Platform
    osVersion: _OsVersion | None = None
    vmImportTaskId: _TaskId
    tags: _Tags = Field(default_factory=dict)
    clientToken: _Token | None = None
    logGroupName: _LogGroup | None = None

    def api_params(self) -> dict[str, Any]:
        """The ImportVmImage request members except clientToken (the caller adds it)."""
        params: dict[str, Any] = {"name": self.name, "semanticVersion": self.semanticVersion}
        if self.description is not None:
            params["description"] = self.description
        params["platform"] = self.platform
        if self.osVersion is not None:
            params["osVersion"] = self.osVersion
        params["vmImportTaskId"] = self.vmImportTaskId
        if self.tags:
            params["tags"] = dict(self.tags)
        if self.logGroupName is not None:
            params["loggingConfiguration"] = {"logGroupName": self.logGroupName}
        return params


_TAGS_ADAPTER: Final = TypeAdapter(_Tags, config=ConfigDict(strict=True, regex_engine="python-re"))


# --- rows and errors -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: which field, which rule, and the offending value shortened for display."""

    field: str
    rule: str
    value: str


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One task of the manifest: valid (``task`` set) or invalid (``errors`` say why)."""

    row: int
    task: ImportTask | None
    errors: tuple[FieldError, ...]
    name: str
    semantic_version: str

    def describe(self) -> list[str]:
        """One line per error, as ``ibimport validate`` prints them."""
        return [
            f"row {self.row}: {e.field}: {e.rule}" + (f" ({e.value})" if e.value else "")
            for e in self.errors
        ]


def _shorten(value: object, limit: int = _SHORT) -> str:
    """A value as safe, short display text: control characters escaped, long text cut."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool):
        text = json.dumps(value)
    elif isinstance(value, int | float):
        try:
            text = repr(value)
        except ValueError:  # an int too long to print
            text = "<number>"
    elif isinstance(value, dict):
        text = "{…}"
    elif isinstance(value, list):
        text = "[…]"
    else:
        text = type(value).__name__
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
        )
    return text


def _unknown_rule(name: str) -> str:
    """ "unknown field", with the field it most likely misspells."""
    guess: list[str] = []
    if len(name) <= 64:
        folded = {field.casefold(): field for field in FIELDS}
        if name.casefold() in folded:
            guess = [folded[name.casefold()]]
        else:
            guess = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
    if guess:
        return f"unknown field (did you mean {guess[0]}?)"
    return f"unknown field (expected one of {', '.join(FIELDS)})"


def _generic_rule(err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind in ("string_type", "str_type"):
        return "must be a string"
    if kind == "string_unicode":
        return "must be valid Unicode (it holds a lone surrogate escape)"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    return str(err["msg"])


def _string_rule(err: ErrorDetails, rule: StringRule | None) -> str:
    """The rule text for a string error, worded as apimodel words it (as the emulator does)."""
    value = err.get("input")
    if err["type"] == "version_node":
        return _NODE_RULE
    if rule is not None and isinstance(value, str) and err["type"] == "string_pattern_mismatch":
        violation = rule.check(value)
        if violation is not None:
            return violation.rule
        if err["type"] == "string_pattern_mismatch" and rule.pattern is not None:
            return f"must match {rule.pattern}"  # as apimodel states it, not our \Z form
    return _generic_rule(err)


def _tag_errors(loc: tuple[int | str, ...], err: ErrorDetails) -> FieldError:
    """An error inside a tags mapping; ``loc`` starts at the tag key."""
    key = str(loc[0])
    field = f"tag:{_shorten(key, 40)}"
    if len(loc) >= 2 and loc[1] == "[key]":
        if key.startswith("aws:"):
            return FieldError(field, "key must not start with aws: (reserved)", _shorten(key))
        return FieldError(field, "key " + _string_rule(err, _RULES.tag_key), _shorten(key))
    return FieldError(
        field, "value " + _string_rule(err, _RULES.tag_value), _shorten(err.get("input"))
    )


def _field_errors(exc: ValidationError) -> list[FieldError]:
    """Translate pydantic's errors into (field, rule, value) for users."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False, include_context=True):
        loc = err["loc"]
        top = str(loc[0]) if loc else ROW_FIELD
        kind = err["type"]
        if top == "tags" and len(loc) >= 2:
            out.append(_tag_errors(loc[1:], err))
        elif kind == "missing":
            out.append(FieldError(top, "is required", ""))
        elif kind == "extra_forbidden":
            out.append(FieldError(_shorten(top, 40), _unknown_rule(top), _shorten(err["input"])))
        elif top == "tags":
            if kind == "too_long":
                rule = f"must have at most {_RULES.tags_max} tags"
            elif kind == "dict_type":
                rule = "must be an object of tag keys to string values"
            else:
                rule = str(err["msg"])
            out.append(FieldError("tags", rule, _shorten(err["input"])))
        else:
            rule = _string_rule(err, _STRING_RULES.get(top))
            out.append(FieldError(top, rule, _shorten(err["input"])))
    return out


def _check_tags(tags: Mapping[str, str]) -> list[str]:
    """Problems with a tags mapping as ``"<key>: <rule>"`` lines (for --tag)."""
    try:
        _TAGS_ADAPTER.validate_python(dict(tags))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            if err["loc"]:
                error = _tag_errors(err["loc"], err)
                problems.append(f"{error.field}: {error.rule}")
            else:
                problems.append(f"tags: must have at most {_RULES.tags_max} tags")
        return problems
    return []


def parse_tag_option(text: str) -> tuple[str, str]:
    """Parse one ``--tag KEY=VALUE``; ValueError says what is wrong with it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--tag expects KEY=VALUE, got {_shorten(text)!r}")
    problems = _check_tags({key: value})
    if problems:
        raise ValueError(f"--tag {_shorten(text)!r}: {problems[0]}")
    return key, value


# --- JSON decoding -------------------------------------------------------------------


class _DupKeys(dict[str, Any]):
    """A JSON object in which some key appeared more than once (the last value kept)."""

    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    dup = _DupKeys(obj)
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    dup.duplicates = tuple(dict.fromkeys(repeated))
    return dup


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_pairs_hook)
#: The decoder's C scanner: one value at an index, StopIteration when none starts there.
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return f"invalid JSON: {_value_error(exc)}"


def _value_error(exc: ValueError) -> str:
    """A decoding ValueError in the user's terms (not Python's int-conversion advice)."""
    if "integer string conversion" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(exc)


def _csv_error(exc: csv.Error) -> str:
    """csv's message, with the case of a bare CR explained in the user's terms."""
    if "new-line character seen in unquoted field" in str(exc):
        return "a carriage return (CR) inside an unquoted cell (lines ended by CR alone?)"
    if "field larger than field limit" in str(exc):
        return f"a cell is larger than {MAX_CSV_FIELD // 1024} KiB"
    return str(exc)


def _has_bad_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _display(value: object) -> str:
    """Identity text that is safe to write anywhere (no lone surrogates)."""
    if not isinstance(value, str):
        return ""
    if _has_bad_unicode(value):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


# --- validation shared by every format -------------------------------------------------


_MASK64: Final = (1 << 64) - 1


class _Identities:
    """Digests of (name, semanticVersion) mapped to the first row that had them.

    An open-addressing hash table (linear probing, load at most 1/2) in two flat
    arrays: about 24 bytes per row at worst, where a dict of ints takes ~120, so a
    million-row manifest needs ~25 MB for this. The digest is Python's 64-bit hash
    of the pair (SipHash over each string, salted per process; the table never leaves
    the process), 0 marking an empty slot; two different identities share a digest
    with odds ~n²/2^64, about 1e-7 for a million rows.
    """

    def __init__(self) -> None:
        self._keys = array("Q", [0]) * (1 << 12)
        self._rows = array("L", [0]) * (1 << 12)
        self._mask = (1 << 12) - 1
        self._count = 0

    def first(self, name: str, version: str, row: int) -> int:
        """The first row with this identity; records ``row`` when it is the first."""
        key = (hash((name, version)) & _MASK64) | 1
        keys = self._keys
        mask = self._mask
        i = key & mask
        while (k := keys[i]) != 0:
            if k == key:
                return int(self._rows[i])
            i = (i + 1) & mask
        keys[i] = key
        self._rows[i] = row
        self._count += 1
        if self._count * 2 > mask:
            self._grow()
        return row

    def _grow(self) -> None:
        size = 2 * len(self._keys)
        mask = size - 1
        keys = array("Q", [0]) * size
        rows = array("L", [0]) * size
        for key, row in zip(self._keys, self._rows, strict=True):
            if key:
                i = key & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = key
                rows[i] = row
        self._keys, self._rows, self._mask = keys, rows, mask


def _nfc_text(raw: dict[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    """The row with its text in Unicode NFC (composed), as it is validated, sent and keyed.

    The clientToken is derived from the NFC form, so the same task saved composed or
    decomposed (macOS file names, some editors) must also be the same request: the service
    refuses a token it has seen with different parameters. ASCII rows pass untouched.
    """
    for value in raw.values():  # the common case, ASCII only, in as few calls as it takes
        if type(value) is str:
            if not value.isascii():
                break
        elif type(value) is dict and not _ascii_mapping(value):
            break
    else:
        return raw
    normal: dict[str, Any] = nfc(raw)
    for key, value in raw.items():
        if type(value) is dict and len(normal[nfc(key)]) < len(value):
            # two keys were one text, composed and decomposed
            written = Counter(nfc(k) for k in value)
            errors.extend(
                FieldError(f"tag:{_shorten(k, 40)}", _TWICE_NORMALISED, _shorten(k))
                for k, count in written.items()
                if count > 1
            )
    return normal


_TWICE_NORMALISED: Final = "is given twice: composed and decomposed forms of the same text"


def _ascii_mapping(tags: dict[Any, Any]) -> bool:
    return all(
        (type(k) is not str or k.isascii()) and (type(v) is not str or v.isascii())
        for k, v in tags.items()
    )


class _Checker:
    """Validates raw rows into ManifestRows and remembers identities to find repeats."""

    def __init__(self, extra_tags: dict[str, str]) -> None:
        self._extra: dict[str, str] = nfc(extra_tags)  # merged into rows already composed
        self._seen = _Identities()

    def check(
        self, row: int, raw: dict[str, Any], errors: list[FieldError], *, ascii_source: bool = False
    ) -> ManifestRow:
        """``ascii_source``: the row's text is known to be ASCII (so already NFC)."""
        if not ascii_source:
            raw = _nfc_text(raw, errors)  # first: --tag conflicts compare composed text
        if self._extra:
            self._merge_extra(raw, errors)
        task: ImportTask | None = None
        try:
            task = ImportTask.model_validate(raw)
        except ValidationError as exc:
            errors.extend(_field_errors(exc))
        name = raw.get("name")
        version = raw.get("semanticVersion")
        if type(name) is str and type(version) is str:
            first = self._seen.first(name, version, row)
            if first != row:
                errors.append(
                    FieldError(
                        "name",
                        f"duplicate of row {first} (same name and semanticVersion)",
                        _shorten(f"{name} {version}"),
                    )
                )
        if task is not None and not errors:
            return ManifestRow(row, task, (), task.name, task.semanticVersion)
        return ManifestRow(row, None, tuple(errors), _display(name), _display(version))

    def _merge_extra(self, raw: dict[str, Any], errors: list[FieldError]) -> None:
        tags = raw.get("tags")
        if tags is None:
            raw["tags"] = dict(self._extra)
        elif isinstance(tags, dict):
            for key, value in self._extra.items():
                mine = tags.get(key)
                if mine is not None and mine != value:
                    errors.append(
                        FieldError(
                            f"tag:{_shorten(key, 40)}",
                            f"conflicts with --tag {_shorten(key, 40)}={_shorten(value)}",
                            _shorten(mine),
                        )
                    )
            raw["tags"] = {**tags, **self._extra}

    def check_json(
        self,
        row: int,
        obj: object,
        *,
        defaults: dict[str, Any] | None = None,
        ascii_source: bool = False,
    ) -> ManifestRow:
        """A decoded JSON task: duplicate keys, null/"" as absent, defaults merged under it."""
        if not isinstance(obj, dict):
            return _invalid(row, ROW_FIELD, "must be a JSON object (a task)", _shorten(obj))
        errors: list[FieldError] = []
        if type(obj) is _DupKeys:
            errors.extend(
                FieldError(_shorten(k, 40), "is given more than once", "") for k in obj.duplicates
            )
            obj = dict(obj)
        values = obj.values()
        if None in values or "" in values:
            obj = {k: v for k, v in obj.items() if v is not None and v != ""}
        tags = obj.get("tags")
        if type(tags) is _DupKeys:
            errors.extend(
                FieldError(f"tag:{_shorten(k, 40)}", "is given more than once", "")
                for k in tags.duplicates
            )
        if defaults:
            merged = {**defaults, **obj}
            base_tags = defaults.get("tags")
            if isinstance(tags, dict) and base_tags:
                merged["tags"] = {**base_tags, **tags}
            obj = merged
        return self.check(row, obj, errors, ascii_source=ascii_source and not defaults)


def _invalid(row: int, field: str, rule: str, value: str) -> ManifestRow:
    return ManifestRow(row, None, (FieldError(field, rule, value),), "", "")


def _oversize(row: int) -> ManifestRow:
    return _invalid(row, ROW_FIELD, f"is larger than {MAX_ROW_BYTES // (1 << 20)} MiB", "")


# --- bytes to text ---------------------------------------------------------------------


def _start_of_file(data: bytes, label: str) -> int:
    """Length of a UTF-8 BOM to skip; ManifestError for UTF-16/32 and other non-UTF-8 starts."""
    if data.startswith(codecs.BOM_UTF8):
        return len(codecs.BOM_UTF8)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ManifestError(
            f"{label}: not UTF-8: the file starts with a UTF-16 byte-order mark; save it as UTF-8"
        )
    line = data.split(b"\n", 1)[0]
    nul = line.find(b"\x00")
    if nul >= 0:
        raise ManifestError(
            f"{label}: not UTF-8: NUL byte at byte offset {nul} (line 1); "
            "is it UTF-16? save it as UTF-8"
        )
    return 0


def _not_utf8(label: str, exc: UnicodeDecodeError, *, offset: int, line: int) -> ManifestError:
    """``offset``: the file offset of ``exc.object[0]``; ``line``: its line number."""
    bad = exc.object[exc.start : exc.start + 1].hex().upper()
    line += exc.object[: exc.start].count(b"\n")
    return ManifestError(
        f"{label}: not UTF-8: byte 0x{bad} at byte offset {offset + exc.start} (line {line}); "
        "save the file as UTF-8"
    )


class _Oversize(Exception):
    """A CSV record grew past MAX_ROW_BYTES; its remaining line was skipped."""


class _Lines:
    """A CSV file's lines as text for csv.reader, each record bounded to MAX_ROW_BYTES."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self._f = f
        self._label = label
        self.lineno = 0
        self._offset = 0
        self.record_bytes = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = self._f.readline(MAX_ROW_BYTES + 1)
        if not data:
            raise StopIteration
        self.lineno += 1
        start = self._offset
        self._offset += len(data)
        self.record_bytes += len(data)
        if self.record_bytes > MAX_ROW_BYTES:
            while not data.endswith(b"\n"):
                data = self._f.readline(_CHUNK)
                if not data:
                    break
                self._offset += len(data)
            raise _Oversize(f"line {self.lineno} is larger than {MAX_ROW_BYTES // (1 << 20)} MiB")
        skip = _start_of_file(data, self._label) if self.lineno == 1 else 0
        try:
            return data[skip:].decode("utf-8") if skip else data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(self._label, exc, offset=start + skip, line=self.lineno) from None


# --- the readers ---------------------------------------------------------------------------


def _read_jsonl(f: BinaryIO, checker: _Checker, label: str) -> Iterator[ManifestRow]:
    """One task per line; a broken line is an invalid row and the rest is still read."""
    readline = f.readline
    scan = _SCAN
    check_json = checker.check_json
    row = 0
    lineno = 0
    offset = 0
    while True:
        data = readline(MAX_ROW_BYTES + 1)
        if not data:
            return
        lineno += 1
        start = offset
        offset += len(data)
        if len(data) > MAX_ROW_BYTES and not data.endswith(b"\n"):
            while not data.endswith(b"\n"):
                data = readline(_CHUNK)
                if not data:
                    break
                offset += len(data)
            row += 1
            yield _oversize(row)
            continue
        skip = _start_of_file(data, label) if lineno == 1 else 0
        try:
            text = data[skip:].decode("utf-8") if skip else data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(label, exc, offset=start + skip, line=lineno) from None
        if not text or text.isspace():
            continue
        row += 1
        try:
            try:  # the common case, a line that starts with "{", without decode()'s overhead
                obj, end = scan(text, 0)
                if end != len(text) and not text[end:].isspace():
                    raise StopIteration
            except StopIteration:
                obj = _DECODER.decode(text)  # for its whitespace handling and error messages
        except RecursionError:
            yield _invalid(row, ROW_FIELD, f"invalid JSON: nested too deeply (line {lineno})", "")
            continue
        except ValueError as exc:
            rule = f"{_json_error(exc)} (line {lineno})"
            yield _invalid(row, ROW_FIELD, rule, _shorten(text.strip()))
            continue
        # ASCII text without \u escapes decodes to ASCII strings: already NFC.
        yield check_json(row, obj, ascii_source=text.isascii() and "\\u" not in text)


def _read_csv(f: BinaryIO, checker: _Checker, label: str) -> Iterator[ManifestRow]:
    """A header row, then one task per record; tags from a ``tags`` cell and ``tag:`` columns."""
    csv.field_size_limit(MAX_CSV_FIELD)
    lines = _Lines(f, label)
    reader = csv.reader(lines)
    while True:
        try:
            header = next(reader)
        except StopIteration:
            raise ManifestError(f"{label}: empty: no header row") from None
        except _Oversize as exc:
            raise ManifestError(f"{label}: the header row cannot be read: {exc}") from None
        except csv.Error as exc:
            raise ManifestError(
                f"{label}: the header row cannot be read: {_csv_error(exc)}"
            ) from None
        if any(cell.strip() for cell in header):
            break
    columns = _csv_columns(header, label)
    width = len(columns)
    row = 0
    while True:
        lines.record_bytes = 0
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _Oversize:
            row += 1
            yield _oversize(row)
            continue
        except csv.Error as exc:
            row += 1
            rule = f"unreadable CSV: {_csv_error(exc)} (line {lines.lineno})"
            yield _invalid(row, ROW_FIELD, rule, "")
            continue
        if not any(cells):
            continue  # a blank line, or a spreadsheet's empty row of commas
        row += 1
        if len(cells) != width:
            if len(cells) > width and not any(cells[width:]):
                cells = cells[:width]
            else:
                rule = f"has {len(cells)} cells but the header has {width} (line {lines.lineno})"
                yield ManifestRow(row, None, (FieldError(ROW_FIELD, rule, ""),), "", "")
                continue
        yield _csv_row(row, columns, cells, checker)


_TAGS_CELL_RULE: Final = 'must be a JSON object of tag keys to values, like {"Env": "prod"}'


def _csv_row(
    row: int, columns: list[tuple[str, str]], cells: list[str], checker: _Checker
) -> ManifestRow:
    raw: dict[str, Any] = {}
    errors: list[FieldError] = []
    tag_cols: dict[str, str] | None = None
    tag_json: dict[str, Any] | None = None
    for (kind, key), cell in zip(columns, cells, strict=True):
        if not cell:
            continue
        if "\x00" in cell:
            field = f"tag:{key}" if kind == "tag" else key or ROW_FIELD
            errors.append(FieldError(field, "must not contain NUL characters", _shorten(cell)))
        elif kind == "field":
            raw[key] = cell
        elif kind == "tag":
            if tag_cols is None:
                tag_cols = {}
            tag_cols[key] = cell
        elif kind == "tags":
            tag_json = _tags_cell(cell, errors)
        elif kind == "unknown":
            errors.append(FieldError(_shorten(key, 40), _unknown_rule(key), _shorten(cell)))
        else:
            errors.append(FieldError(key, "has a value but no column header", _shorten(cell)))
    if tag_json is not None and tag_cols:
        for key, value in tag_cols.items():
            other = tag_json.get(key)
            if other is not None and other != value:
                errors.append(
                    FieldError(
                        f"tag:{_shorten(key, 40)}",
                        "differs between the tags column and its tag: column",
                        _shorten(value),
                    )
                )
        raw["tags"] = {**tag_json, **tag_cols}
    elif tag_json is not None:
        raw["tags"] = tag_json
    elif tag_cols:
        raw["tags"] = tag_cols
    return checker.check(row, raw, errors)


def _tags_cell(cell: str, errors: list[FieldError]) -> dict[str, Any] | None:
    try:
        tags = _DECODER.decode(cell)
    except (ValueError, RecursionError):
        errors.append(FieldError("tags", _TAGS_CELL_RULE, _shorten(cell)))
        return None
    if not isinstance(tags, dict):
        errors.append(FieldError("tags", _TAGS_CELL_RULE, _shorten(cell)))
        return None
    if type(tags) is _DupKeys:
        errors.extend(
            FieldError(f"tag:{_shorten(k, 40)}", "is given more than once", "")
            for k in tags.duplicates
        )
        tags = dict(tags)
    return tags


def _csv_columns(header: list[str], label: str) -> list[tuple[str, str]]:
    """Classify each header cell: ("field", name), ("tag", key), ("tags", ""), ("unknown", text)
    or ("blank", "column N"); repeated columns make the file ambiguous, so ManifestError."""
    columns: list[tuple[str, str]] = []
    for index, cell in enumerate(header, start=1):
        text = cell.strip()
        if "\x00" in text:
            raise ManifestError(f"{label}: the header has a NUL character in column {index}")
        if text == "tags":
            column = ("tags", "")
        elif text in FIELDS:
            column = ("field", text)
        elif text.startswith("tag:"):
            if not text[4:]:
                raise ManifestError(
                    f"{label}: column {index}: 'tag:' needs a tag key, like tag:Env"
                )
            column = ("tag", text[4:])
        elif text:
            column = ("unknown", text)
        else:
            column = ("blank", f"column {index}")
        if column[0] != "blank" and column in columns:
            raise ManifestError(f"{label}: column {_shorten(text)!r} appears more than once")
        columns.append(column)
    return columns


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

    def _fill(self, size: int = _CHUNK) -> bool:
        """Read and decode more; False at end of file."""
        if self.eof:
            return False
        data = self._f.read(size)
        skip = _start_of_file(data, self.label) if self._read == 0 and data else 0
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(data[skip:] if skip else data, final=not data)
        except UnicodeDecodeError as exc:
            raise _not_utf8(
                self.label, exc, offset=self._read + skip - pending, line=self._newlines_read + 1
            ) from None
        self._read += len(data)
        self._newlines_read += data.count(b"\n")
        if not data:
            self.eof = True
        if self.pos:
            self._lines_dropped += self.buf.count("\n", 0, self.pos)
            self.buf = self.buf[self.pos :] + text
            self.pos = 0
        else:
            self.buf += text
        return True

    def line(self, pos: int | None = None) -> int:
        """The line number of a position in buf (default: the current one)."""
        return self._lines_dropped + self.buf.count("\n", 0, self.pos if pos is None else pos) + 1

    def error(self, message: str, pos: int | None = None) -> ManifestError:
        return ManifestError(f"{self.label}: {message} (line {self.line(pos)})")

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
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
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
            self._fill(max(_CHUNK, len(self.buf) - self.pos))
        if end - self.pos > MAX_ROW_BYTES:
            raise self.error(f"{what} is larger than {MAX_ROW_BYTES // (1 << 20)} MiB")
        self.pos = end
        return obj


_WS: Final = re.compile(r"[ \t\n\r]*")


def _read_json(f: BinaryIO, checker: _Checker, label: str) -> Iterator[ManifestRow]:
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


def _json_object(js: _JsonText, checker: _Checker) -> Iterator[ManifestRow]:
    defaults: dict[str, Any] | None = None
    seen: set[str] = set()
    char = js.peek()
    while char != "}":
        if char != '"':
            raise js.error("expected a key ('defaults' or 'tasks') in the top-level object")
        key = js.value("a key")
        if key in seen:
            raise js.error(f"top-level key {_shorten(key)!r} appears more than once")
        seen.add(key)
        if js.peek() != ":":
            raise js.error("expected ':' after a key")
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
            raise js.error(
                f"unknown top-level key {_shorten(key)!r}; expected 'defaults' and 'tasks'"
            )
        char = js.peek()
        if char == ",":
            js.pos += 1
            char = js.peek()
            if char == "}":
                raise js.error("trailing comma in the top-level object")
        elif char != "}":
            raise js.error("expected ',' or '}' in the top-level object")
    js.pos += 1
    if "tasks" not in seen:
        raise js.error("the top-level object has no 'tasks' array")


def _check_defaults(value: object, js: _JsonText) -> dict[str, Any]:
    """Defaults apply to every task, so a bad one is a whole-file problem."""
    if not isinstance(value, dict):
        raise js.error("'defaults' must be an object of task fields")
    if type(value) is _DupKeys:
        raise js.error(f"'defaults' gives {_shorten(value.duplicates[0])!r} more than once")
    for key in value:
        if key not in FIELDS:
            raise js.error(f"'defaults': {_shorten(key, 40)}: {_unknown_rule(key)}")
        if key == "clientToken":
            raise js.error("'defaults' cannot set clientToken: each task needs its own")
    tags = value.get("tags")
    if tags is not None and not isinstance(tags, dict):
        raise js.error("'defaults': tags must be an object of tag keys to values")
    if type(tags) is _DupKeys:
        raise js.error(f"'defaults': tag {_shorten(tags.duplicates[0])!r} is given more than once")
    return {k: v for k, v in value.items() if v is not None and v != ""}


def _json_tasks(
    js: _JsonText, checker: _Checker, defaults: dict[str, Any] | None
) -> Iterator[ManifestRow]:
    row = 0
    char = js.peek()
    if char == "]":
        js.pos += 1
        return
    while True:
        row += 1
        obj = js.value(f"task {row}")
        yield checker.check_json(row, obj, defaults=defaults)
        char = js.peek()
        if char == "]":
            js.pos += 1
            return
        if char != ",":
            raise js.error(f"expected ',' or ']' after task {row}")
        js.pos += 1
        if js.peek() == "]":
            raise js.error(f"trailing comma after task {row}")


# --- entry points ----------------------------------------------------------------------

_EXTENSIONS: Final = {
    ".csv": ManifestFormat.CSV,
    ".json": ManifestFormat.JSON,
    ".jsonl": ManifestFormat.JSONL,
    ".ndjson": ManifestFormat.JSONL,
}

_READERS: Final = {
    ManifestFormat.CSV: _read_csv,
    ManifestFormat.JSON: _read_json,
    ManifestFormat.JSONL: _read_jsonl,
}


def detect_format(path: str | Path) -> ManifestFormat:
    """The format a manifest's extension names (.csv, .json, .jsonl or .ndjson)."""
    suffix = Path(path).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        raise ManifestError(
            f"{path}: cannot tell the format from the extension {suffix!r}; "
            "use .csv, .json, .jsonl or .ndjson, or give --format"
        ) from None


def _is_stdin(source: str | Path) -> bool:
    return isinstance(source, str) and source == "-"


def read_manifest(
    source: str | Path,
    *,
    fmt: ManifestFormat | None = None,
    extra_tags: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
) -> Iterator[ManifestRow]:
    """Stream a manifest's rows, validated, one at a time ("-" reads stdin; fmt required).

    Problems of a source as a whole (format, missing file, bad --tag) raise here;
    problems found while reading (not UTF-8, broken JSON structure) raise
    ManifestError from the iterator; a bad row is an invalid ManifestRow.
    """
    tags = dict(extra_tags or {})
    problems = _check_tags(tags)
    if problems:
        raise ConfigError(f"--tag: {problems[0]}")
    if _is_stdin(source):
        if fmt is None:
            raise ManifestError("reading a manifest from stdin (-) needs its format (--format)")
        label = "<stdin>"
    else:
        fmt = ManifestFormat(fmt) if fmt is not None else detect_format(source)
        label = str(source)
        try:
            if Path(source).is_dir():
                raise ManifestError(f"{label}: is a directory, not a manifest")
            os.stat(source)
        except OSError as exc:
            raise ManifestError(f"{label}: cannot read: {exc.strerror}") from None
    return _rows(source, fmt, tags, stdin, label)


def _rows(
    source: str | Path,
    fmt: ManifestFormat,
    extra_tags: dict[str, str],
    stdin: BinaryIO | None,
    label: str,
) -> Iterator[ManifestRow]:
    reader = _READERS[fmt]
    checker = _Checker(extra_tags)
    if _is_stdin(source):
        yield from reader(stdin if stdin is not None else sys.stdin.buffer, checker, label)
        return
    try:
        f = open(source, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise ManifestError(f"{label}: cannot read: {exc.strerror}") from None
    with f:
        try:
            yield from reader(f, checker, label)
        except OSError as exc:
            raise ManifestError(f"{label}: read failed: {exc.strerror or exc}") from None


def manifest_fingerprint(source: str | Path) -> str:
    """SHA-256 (hex) of the manifest's bytes, so a resumed run can tell the file changed."""
    if _is_stdin(source):
        raise ManifestError("a manifest read from stdin has no fingerprint; give a file")
    try:
        with open(source, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read: {exc.strerror}") from None
