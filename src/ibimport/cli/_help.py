"""``--help`` for people: options in panels, values named as a person names them.

typer draws each option's panel (``rich_help_panel``) but shows a flag's type
(``<bool>``), an argument's (``<path>``) and a required argument in braces
(``{MANIFEST}``): words of its own, not the user's. ``HelpGroup`` fixes each command
as it is looked up, once, and gives the options of a command that registered panels
(``panels``) their panel by name, so options declared once for several commands (the
AWS ones, ``run --local``'s generated ``--emulator-*``) are grouped too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = [
    "HelpGroup",
    "duration_option",
    "format_duration",
    "panels",
    "parse_duration",
    "positive_duration_option",
]

#: Per command: each option's panel, by parameter name (the rest: "Options").
_PANELS: dict[str, dict[str, str]] = {}
#: Options named with this prefix go to the emulator's panel (``run --local``'s knobs).
_EMULATOR_PREFIX = "emulator_"


def panels(command: str, groups: Mapping[str, Iterable[str]], *, emulator: str = "") -> None:
    """Register ``command``'s panels: ``{panel title: parameter names}``."""
    by_name = {name: title for title, names in groups.items() for name in names}
    if emulator:
        by_name[_EMULATOR_PREFIX] = emulator
    _PANELS[command] = by_name


class _Argument(TyperArgument):
    """An argument shown by its metavar alone: ``MANIFEST``, ``JOURNAL...``."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required else f"[{name}]"


#: A value's word where an option names none (typer would show ``<float>``).
_WORDS = {int: "N", float: "NUMBER", str: "TEXT"}


def _plain(param: Any) -> None:
    """No type names: a flag shows no value, a number ``N``, an argument its metavar."""
    if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
        param.__class__ = _Argument
    if not isinstance(param, TyperOption) or param.metavar is not None:
        return
    if param.is_flag:
        param.metavar = ""  # a flag takes no value: no type to show
    elif not param.type_descriptor.is_choice:
        param.metavar = _WORDS.get(param.type_descriptor.annotation, "VALUE")


def _with_plain_help_option(command: Any) -> None:
    original = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            _plain(option)
        return option

    command.get_help_option = get_help_option


def _fix(command: TyperCommand) -> None:
    by_name = _PANELS.get(command.name or "", {})
    order = list(dict.fromkeys(by_name.values()))
    for param in command.params:
        _plain(param)
        name = param.name or ""
        title = by_name.get(name)
        if title is None and name.startswith(_EMULATOR_PREFIX):
            title = by_name.get(_EMULATOR_PREFIX)
        if isinstance(param, TyperOption) and title is not None and param.rich_help_panel is None:
            param.rich_help_panel = title
    if order:  # typer draws the panels in the order their first option comes

        def rank(param: Any) -> int:
            title = getattr(param, "rich_help_panel", None)
            return order.index(title) if title in order else -1

        command.params.sort(key=rank)
    _with_plain_help_option(command)


class HelpGroup(TyperGroup):
    """The app's group: each command's help fixed as it is looked up (see the module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for param in self.params:
            _plain(param)
        _with_plain_help_option(self)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, TyperCommand) and not getattr(command, "_ibimport_help", False):
            _fix(command)
            command._ibimport_help = True  # type: ignore[attr-defined]
        return command


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``8h``, ``1h30m`` or ``250ms``; ValueError else."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 8h or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """``8h``, ``1h30m``, ``45s``, ``0.5s``: a duration as a person writes it."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def duration_option(value: str | None) -> str | None:
    """typer callback: a duration option's text, refused (exit 2) unless it reads as one
    (an option without a default is None when not given)."""
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return value


def positive_duration_option(value: str) -> str:
    """typer callback: as ``duration_option``, and above zero (a polling interval)."""
    if parse_duration(duration_option(value) or "") <= 0:
        raise typer.BadParameter(f"{value!r}: must be above zero")
    return value
