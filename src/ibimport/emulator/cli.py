"""``ibimport emulator`` and ``run --local``'s options, both generated from ``EmulatorConfig``.

Typer reads a command's options from ``inspect.signature``, so the options here are
built from the config's knobs and set as the command's ``__signature__``: a knob added
to ``EmulatorConfig`` shows up in both commands and in ``process.cli_args`` with no other
edit. The lead's main app registers ``emulator_command`` and decorates ``run`` with
``local_emulator_options``; ``app`` here is a one-command typer app so that
``python -m ibimport.emulator`` works without the rest of the CLI.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

import typer

from ibimport.emulator.config import EmulatorConfig, KnobField, knobs
from ibimport.errors import ConfigError

__all__ = ["app", "config_command", "emulator_command", "local_emulator_options", "start_line"]

_RUN_PREFIX = "emulator_"
F = TypeVar("F", bound=Callable[..., Any])


def _option(
    item: KnobField,
    *,
    name: str,
    default: Any,
    help: str,
    kind: inspect._ParameterKind = inspect.Parameter.KEYWORD_ONLY,
) -> inspect.Parameter:
    """One knob as a typer option named ``name`` (typer dashes it into the flag)."""
    option = typer.Option(
        help=help,
        envvar=item.knob.envvar,
        show_default=not item.knob.secret,
        metavar=item.knob.metavar,
    )
    # A repeatable knob is a tuple in the (frozen) config; typer repeats a list option.
    kind_of_value = list[str] if item.type == tuple[str, ...] else item.type
    annotation = Annotated[kind_of_value, option]  # type: ignore[valid-type]
    return inspect.Parameter(name, kind, default=default, annotation=annotation)


def _config(values: Iterable[tuple[KnobField, Any]]) -> EmulatorConfig:
    """The config the options ask for; a bad value is a usage error, as for any option."""
    try:
        return EmulatorConfig(**{item.name: value for item, value in values})
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _with_signature(command: F, parameters: list[inspect.Parameter]) -> F:
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def config_command(serve: Callable[[EmulatorConfig], None]) -> Callable[..., None]:
    """A typer command with one option per knob, which hands ``serve`` their config."""
    items = {item.flag.replace("-", "_"): item for item in knobs()}

    @functools.wraps(serve)
    def command(**options: Any) -> None:
        serve(_config((items[name], value) for name, value in options.items()))

    parameters = [
        _option(item, name=name, default=item.command_default, help=item.knob.help)
        for name, item in items.items()
    ]
    return _with_signature(command, parameters)


def local_emulator_options(command: F) -> F:
    """Give ``command`` the ``--emulator-*`` options of the knobs ``run --local`` offers.

    ``command`` has a ``local`` flag and an ``emulator`` parameter; the options take the
    place of ``emulator``, which receives their ``EmulatorConfig``, or None without --local.
    """
    items = {
        _RUN_PREFIX + item.flag.replace("-", "_"): item
        for item in knobs()
        if item.knob.run_help is not None
    }
    original = inspect.signature(command, eval_str=True)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = [(item, kwargs.pop(name)) for name, item in items.items()]
        kwargs["emulator"] = _config(values) if kwargs["local"] else None
        return command(*args, **kwargs)

    if "local" not in original.parameters or "emulator" not in original.parameters:
        raise TypeError(f"{command.__name__} needs a local flag and an emulator parameter")
    parameters: list[inspect.Parameter] = []
    for parameter in original.parameters.values():
        if parameter.name != "emulator":
            parameters.append(parameter)
            continue
        for name, item in items.items():
            help = item.knob.run_help or item.knob.help
            parameters.append(
                _option(item, name=name, default=item.default, help=help, kind=parameter.kind)
            )
    return _with_signature(wrapper, parameters)  # type: ignore[return-value]


@config_command
def emulator_command(config: EmulatorConfig) -> None:
    """Serve a local EC2 Image Builder for rehearsals, tests and benchmarks."""
    # Here, not at the top: `ibimport run` loads this module but never needs aiohttp.web.
    from ibimport.emulator.running import run_until_signalled

    def announce(url: str) -> None:
        print(start_line(config, url), flush=True)

    try:
        asyncio.run(run_until_signalled(config, on_ready=announce))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:  # the port is taken, or the address is not this machine's
        typer.echo(
            f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}; "
            "pick another --port (0 takes a free one)",
            err=True,
        )
        raise typer.Exit(2) from None


def start_line(config: EmulatorConfig, url: str) -> str:
    """What ``ibimport emulator`` prints once listening: the URL (first, on the first line:
    ``process`` reads it there), the knobs that differ from their defaults, and the line
    to paste into the shell that runs ibimport."""
    told = []
    for item in knobs():
        value = getattr(config, item.name)
        if item.knob.secret or item.name in ("host", "port") or value == item.default:
            continue
        if isinstance(value, bool):
            told.append(f"--{item.flag}" if value else f"--no-{item.flag}")
        else:
            told += [
                f"--{item.flag} {each}"
                for each in (value if isinstance(value, tuple) else (value,))
            ]
    knobs_told = " ".join(told) if told else "the default knobs"
    return f"ibimport emulator listening on {url} with {knobs_told}\nexport AWS_ENDPOINT_URL={url}"


app = typer.Typer(add_completion=False)
app.command()(emulator_command)
