"""The checks every format shares: a raw row (a dict of fields) to a valid or invalid row.

Each format reader turns its syntax into a raw dict and hands it to :class:`Checker`,
which normalises the text, merges ``--tag`` values, validates an :class:`ImageRequest`,
finds repeated identities, and translates pydantic's errors into the rule texts of
:mod:`ibimport.domain.apimodel`, so ``ibimport validate`` and the emulator word a broken rule
alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from ibimport.domain.apimodel import StringRule, image_identity, import_vm_image_rules
from ibimport.domain.diskimport import DISK_FIELDS, IMPORT_OPTION_FIELDS, import_problems
from ibimport.domain.request import FIELDS, ImageRequest, Tags, nfc
from ibimport.manifest._lines import MAX_ROW_BYTES

_RULES: Final = import_vm_image_rules()

#: The ``field`` of an error about a row as a whole (unreadable, ragged, too large).
ROW_FIELD: Final = "(row)"

_SHORT: Final = 60

_STRING_RULES: Final[dict[str, StringRule]] = {
    **_RULES.fields,
    "logGroupName": _RULES.log_group_name,
}

_TAGS_ADAPTER: Final = TypeAdapter(Tags, config=ConfigDict(strict=True, regex_engine="python-re"))


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: which field, which rule, and the offending value shortened for display."""

    field: str
    rule: str
    value: str


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One task of the manifest: valid (``task`` set) or invalid (``errors`` say why).

    ``client_token``: the row's token when the read that handed it out already derived it
    (the run's read, held to the selection pass, derives it to compare): the runner takes
    it instead of deriving it again. Empty: not derived yet.
    """

    row: int
    task: ImageRequest | None
    errors: tuple[FieldError, ...]
    name: str
    semantic_version: str
    client_token: str = dataclasses.field(default="", compare=False)

    def describe(self) -> list[str]:
        """One line per error, as ``ibimport validate`` prints them."""
        return [
            f"row {self.row}: {e.field}: {e.rule}" + (f" ({e.value})" if e.value else "")
            for e in self.errors
        ]


def invalid(row: int, field: str, rule: str, value: str) -> ManifestRow:
    """A row refused for one reason before any field was read (syntax, size, shape)."""
    return ManifestRow(row, None, (FieldError(field, rule, value),), "", "")


def oversize(row: int) -> ManifestRow:
    return invalid(row, ROW_FIELD, f"is larger than {MAX_ROW_BYTES // (1 << 20)} MiB", "")


def shorten(value: object, limit: int = _SHORT) -> str:
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


def unknown_rule(name: str) -> str:
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


# --- pydantic's errors in the user's terms ------------------------------------------------


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
        return str(err["msg"])  # apimodel's rule text, raised by the task's version check
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
    field = f"tag:{shorten(key, 40)}"
    if len(loc) >= 2 and loc[1] == "[key]":
        if key.startswith("aws:"):
            return FieldError(field, "key must not start with aws: (reserved)", shorten(key))
        return FieldError(field, "key " + _string_rule(err, _RULES.tag_key), shorten(key))
    return FieldError(
        field, "value " + _string_rule(err, _RULES.tag_value), shorten(err.get("input"))
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
            out.append(FieldError(shorten(top, 40), unknown_rule(top), shorten(err["input"])))
        elif top == "tags":
            if kind == "too_long":
                rule = f"must have at most {_RULES.tags_max} tags"
            elif kind == "dict_type":
                rule = "must be an object of tag keys to string values"
            else:
                rule = str(err["msg"])
            out.append(FieldError("tags", rule, shorten(err["input"])))
        else:
            rule = _string_rule(err, _STRING_RULES.get(top))
            out.append(FieldError(top, rule, shorten(err["input"])))
    return out


def check_tags(tags: Mapping[str, str]) -> list[str]:
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


# --- identities and text ---------------------------------------------------------------------


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
        elif (type(value) is dict and not _ascii_mapping(value)) or type(value) is list:
            break
    else:
        return raw
    normal: dict[str, Any] = nfc(raw)
    for key, value in raw.items():
        if type(value) is dict and len(normal[nfc(key)]) < len(value):
            # two keys were one text, composed and decomposed
            written = Counter(nfc(k) for k in value)
            errors.extend(
                FieldError(f"tag:{shorten(k, 40)}", _TWICE_NORMALISED, shorten(k))
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


# --- the checker ---------------------------------------------------------------------------


def _lift_logging(raw: dict[str, Any], errors: list[FieldError]) -> None:
    """Accept the API's own nesting, ``loggingConfiguration: {"logGroupName": ...}``.

    It becomes the flat ``logGroupName`` the task holds, so the same task written either
    way is the same request and gets the same clientToken.
    """
    nested = raw.pop("loggingConfiguration")
    if nested is None or nested == {}:
        return
    if not isinstance(nested, dict):
        errors.append(
            FieldError(
                "loggingConfiguration",
                'must be an object like {"logGroupName": "/my/group"}',
                shorten(nested),
            )
        )
        return
    for key in nested:
        if key != "logGroupName":
            errors.append(
                FieldError(
                    f"loggingConfiguration.{shorten(key, 40)}",
                    "unknown field (expected logGroupName)",
                    shorten(nested[key]),
                )
            )
    if "logGroupName" not in nested:
        return
    flat = raw.get("logGroupName")
    if flat is not None and flat != nested["logGroupName"]:
        errors.append(
            FieldError(
                "logGroupName",
                "is given twice, differently (flat and in loggingConfiguration)",
                shorten(flat),
            )
        )
        return
    raw["logGroupName"] = nested["logGroupName"]


#: What ``Checker.check`` answers for a row it was told to leave out (never yielded).
SKIPPED_ROW: Final = ManifestRow(0, None, (), "", "")

#: Why two rows are one image (``apimodel.image_identity``): the service's rule, said plainly.
SAME_IMAGE: Final = (
    "(the same image: same semanticVersion, and names that differ only in case, "
    "spaces or underscores are one image)"
)


#: The fields that name where a row's image comes from, and ImportImage's options.
_IMPORT_FIELDS: Final = frozenset({"vmImportTaskId", *DISK_FIELDS, *IMPORT_OPTION_FIELDS})


def _decode_import_cells(raw: dict[str, Any], errors: list[FieldError]) -> None:
    """A CSV cell's text as the value it stands for: ``diskContainers`` JSON, ``encrypted``
    true/false (a JSON manifest gives both as they are)."""
    cell = raw.get("diskContainers")
    if isinstance(cell, str):
        try:
            raw["diskContainers"] = json.loads(cell)
        except (ValueError, RecursionError):
            del raw["diskContainers"]
            errors.append(
                FieldError(
                    "diskContainers",
                    'must be a JSON list of disk containers, like [{"Url": "s3://b/disk.vmdk"}]',
                    shorten(cell),
                )
            )
    flag = raw.get("encrypted")
    if isinstance(flag, str):
        if flag.lower() in ("true", "false"):
            raw["encrypted"] = flag.lower() == "true"
        else:
            del raw["encrypted"]
            errors.append(FieldError("encrypted", "must be true or false", shorten(flag)))


_VALIDATE: Final[Callable[[dict[str, Any]], ImageRequest]] = (
    ImageRequest.__pydantic_validator__.validate_python
)


class Checker:
    """Validates raw rows into ManifestRows and remembers identities to find repeats."""

    def __init__(
        self,
        extra_tags: dict[str, str],
        *,
        only: Callable[[int], bool] | None = None,
        duplicates: dict[int, int] | None = None,
        import_defaults: Mapping[str, object] | None = None,
    ) -> None:
        self._extra: dict[str, str] = nfc(extra_tags)  # merged into rows already composed
        self._import_defaults = dict(nfc(dict(import_defaults or {})))
        self._seen = _Identities()
        self._only = only
        # Filled as repeats are found (row -> first row with the same identity, or the
        # first row's number negated for the same explicit clientToken); given filled, a
        # read of some rows (``only``) knows the repeats of rows it does not see.
        self._duplicates = duplicates
        self._known = dict(duplicates) if duplicates and only is not None else {}
        self._tokens: _Identities | None = None  # explicit clientTokens, made on first need
        self._disks = _Identities()  # disk objects of rows with disks, to their first row

    def check(
        self, row: int, raw: dict[str, Any], errors: list[FieldError], *, ascii_source: bool = False
    ) -> ManifestRow:
        """``errors``: what the reader already found; ``ascii_source``: the row's text is
        known to be ASCII (so already NFC). A row ``only`` leaves out is not validated."""
        if self._only is not None and not self._only(row):
            return SKIPPED_ROW
        if not ascii_source:
            raw = _nfc_text(raw, errors)  # first: --tag conflicts compare composed text
        if "loggingConfiguration" in raw:
            _lift_logging(raw, errors)
        if self._extra:
            self._merge_extra(raw, errors)
        if self._import_defaults and ("diskImage" in raw or "diskContainers" in raw):
            raw = {**self._import_defaults, **raw}
        if "diskContainers" in raw or "encrypted" in raw:
            _decode_import_cells(raw, errors)
        task: ImageRequest | None = None
        try:
            task = _VALIDATE(raw)  # ImageRequest.model_validate without its wrapper's cost
        except ValidationError as exc:
            errors.extend(_field_errors(exc))
        if "vmImportTaskId" not in raw or len(raw.keys() & _IMPORT_FIELDS) > 1:
            # A row with disks, or one that mixes: ImportImage's rules (domain.diskimport).
            broken = {e.field for e in errors}
            if broken & _IMPORT_FIELDS:
                broken.add("vmImportTaskId")  # a source was given, but broken
            errors.extend(
                FieldError(field, rule, shorten(raw[field]) if field in raw else "")
                for field, rule in import_problems(raw)
                if field not in broken
            )
            if task is not None and task.has_disks and not errors:
                self._check_disks(row, task, errors)
        name = raw.get("name")
        version = raw.get("semanticVersion")
        known = self._known.get(row, 0)
        if type(name) is str and type(version) is str and known >= 0:
            first = known or self._seen.first(*image_identity(name, version), row)
            if first != row:
                if self._duplicates is not None and not self._known:
                    self._duplicates[row] = first
                errors.append(
                    FieldError(
                        "name",
                        f"duplicate of row {first} {SAME_IMAGE}",
                        shorten(f"{name} {version}"),
                    )
                )
                known = first
        token = raw.get("clientToken")
        if (type(token) is str and token and not known) or known < 0:
            self._check_token(row, token, -known, errors)
        if task is not None and not errors:
            return ManifestRow(row, task, (), task.name, task.semanticVersion)
        return ManifestRow(row, None, tuple(errors), _display(name), _display(version))

    def _check_disks(self, row: int, task: ImageRequest, errors: list[FieldError]) -> None:
        """Two rows importing one disk object are one VM imported twice: the second is
        invalid (EC2 would run two tasks, and Image Builder build the VM twice)."""
        field = "diskImage" if task.diskImage is not None else "diskContainers"
        for disk in task.disks():
            first = self._disks.first(disk.ref, "", row)
            if first != row:
                errors.append(
                    FieldError(
                        field,
                        f"names the disk object of row {first} (one VM, one import)",
                        shorten(disk.ref),
                    )
                )
                return

    def _check_token(self, row: int, token: object, known: int, errors: list[FieldError]) -> None:
        """Two rows with one explicit clientToken are two requests the service takes for
        one: it refuses the second (IdempotentParameterMismatch), so the second is invalid.

        A repeat is kept in ``duplicates`` as the first row's number negated.
        """
        if self._tokens is None:
            self._tokens = _Identities()
        first = known or self._tokens.first(str(token), "", row)
        if first == row:
            return
        if self._duplicates is not None and not self._known:
            self._duplicates[row] = -first
        errors.append(
            FieldError(
                "clientToken",
                f"the same as row {first}'s: the service would refuse one of the two "
                "(IdempotentParameterMismatch); give each row its own, or none",
                shorten(token),
            )
        )

    @property
    def filtered(self) -> bool:
        """Whether only some rows are wanted (rows the readers reject early come through)."""
        return self._only is not None

    def skips(self, row: int) -> bool:
        """Whether row ``row`` is left out (readers skip it before building it)."""
        return self._only is not None and not self._only(row)

    def wants(self, row: ManifestRow) -> bool:
        return row is not SKIPPED_ROW and (self._only is None or self._only(row.row))

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
                            f"tag:{shorten(key, 40)}",
                            f"conflicts with --tag {shorten(key, 40)}={shorten(value)}",
                            shorten(mine),
                        )
                    )
            raw["tags"] = {**tags, **self._extra}
