"""Every knob of ``EmulatorConfig`` reaches both commands and a child's argv, and back."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ibimport.cli import app as main_app
from ibimport.emulator import EmulatorConfig
from ibimport.emulator.cli import config_command, emulator_command, local_emulator_options
from ibimport.emulator.config import knobs
from ibimport.emulator.process import cli_args, cli_env
from ibimport.errors import ConfigError


def test_the_command_offers_every_knob() -> None:
    knobs = set(inspect.signature(emulator_command).parameters)
    assert {
        "host", "port", "region", "account_id", "rate", "burst", "latency_ms", "jitter_ms",
        "fault_rate", "seed", "token_ttl", "available_after_s", "state",
    } <= knobs  # fmt: skip


def test_the_command_help_names_the_knobs() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "ibimport.emulator", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": ""},
        check=True,
    ).stdout
    for knob in (
        "--verify-signatures",
        "--access-key-id",
        "--secret-access-key",
        "--drop-before-share",
        "--truncate-share",
        "--slow-share",
        "--slow-ms",
    ):
        assert knob in shown  # fmt: skip


def _every_knob_changed(tmp_path: Path) -> EmulatorConfig:
    """A config in which every knob differs from its default, whatever its type.

    Every text knob gets its own twelve digits, which is also a valid account id; every
    number 0.5 or 3, inside every knob's range. A new knob of another type fails here.
    """
    values: dict[str, Any] = {}
    value: Any
    # Knobs with a grammar of their own get a value that follows it.
    grammar: dict[str, Any] = {
        "regions": ("eu-west-1", "ap-south-1"),
        "rate_per_region": ("eu-west-1=3", "us-west-2=0.5"),
        "task_mix": "completed=0.5,missing=0.5",
        "deny": ("AKIDDENIED=ImportVmImage,ec2:*", "arn:aws:iam::222222222222:role/ro=*"),
    }
    for index, item in enumerate(knobs()):
        kind = item.type
        if item.name in grammar:
            value = grammar[item.name]
        elif kind is bool:
            value = not item.default
        elif kind is str:
            value = str(210987654300 + index)
        elif kind in (int, int | None):
            value = 3
        elif kind in (float, float | None):
            value = 0.5
        elif kind == Path | None:
            value = tmp_path / "state.json"
        else:
            raise AssertionError(f"no test value for {item.name}: {kind}")
        assert value != item.default, item.name
        values[item.name] = value
    return EmulatorConfig(**values)


def _parsed(args: list[str], env: dict[str, str]) -> EmulatorConfig:
    """What ``ibimport emulator``'s options make of ``args``, without serving."""
    seen: list[EmulatorConfig] = []
    app = typer.Typer()
    app.command()(config_command(seen.append))
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    [config] = seen
    return config


def test_every_knob_is_an_emulator_option() -> None:
    shown = CliRunner().invoke(main_app, ["emulator", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    for item in knobs():
        assert item.flag.replace("-", "_") in inspect.signature(emulator_command).parameters
        assert f"--{item.flag}" in shown.output, item.name


def test_every_knob_round_trips_through_cli_args(tmp_path: Path) -> None:
    config = _every_knob_changed(tmp_path)
    args, env = cli_args(config), cli_env(config)
    for item in knobs():
        assert f"--{item.flag}" in args or item.knob.envvar in env, item.name
    assert config.secret_access_key not in args
    assert _parsed(args, env) == config


def test_the_defaults_round_trip_through_cli_args() -> None:
    config = EmulatorConfig()
    assert _parsed(cli_args(config), cli_env(config)) == config


def test_the_command_defaults_are_the_config_defaults_but_the_port() -> None:
    assert _parsed([], {}) == EmulatorConfig(port=8787)


def test_a_bad_knob_is_a_usage_error_naming_it() -> None:
    app = typer.Typer()
    app.command()(config_command(lambda config: None))
    result = CliRunner().invoke(app, ["--slow-share", "1.5"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "slow_share must be between 0 and 1, got 1.5" in result.output


def test_with_several_bad_knobs_the_same_one_is_reported_first() -> None:
    with pytest.raises(ConfigError, match=r"^rate must be positive"):
        EmulatorConfig(latency_ms=-1, fault_rate=2, rate=0)
    with pytest.raises(ConfigError, match=r"^fault_rate must be between 0 and 1"):
        EmulatorConfig(latency_ms=-1, fault_rate=2, account_id="x")
    with pytest.raises(ConfigError, match=r"^latency_ms must not be negative"):
        EmulatorConfig(latency_ms=-1, account_id="x")


def test_run_local_options_hand_the_command_one_config() -> None:
    seen: list[EmulatorConfig | None] = []

    def run_like(*, local: bool = False, emulator: EmulatorConfig | None = None) -> None:
        """Stands in for ``ibimport run``: a --local flag and the emulator it asks for."""
        seen.append(emulator)

    app = typer.Typer()
    app.command()(local_emulator_options(run_like))
    runner = CliRunner()
    assert runner.invoke(app, ["--emulator-rate", "5"]).exit_code == 0
    assert runner.invoke(app, ["--local"]).exit_code == 0
    options = ["--local", "--emulator-rate", "5", "--emulator-burst", "2"]
    options += ["--emulator-latency-ms", "7", "--emulator-fault-rate", "0.25"]
    assert runner.invoke(app, options).exit_code == 0
    assert seen == [
        None,
        EmulatorConfig(),
        EmulatorConfig(rate=5, burst=2, latency_ms=7, fault_rate=0.25),
    ]


def test_run_offers_the_knobs_it_always_offered() -> None:
    shown = CliRunner().invoke(main_app, ["run", "--help"], env={"COLUMNS": "200"}).output
    offered = {item.flag for item in knobs() if item.knob.run_help is not None}
    assert offered == {
        "latency-ms", "rate", "burst", "fault-rate", "available-after-s", "task-mix",
    }  # fmt: skip
    for flag in offered:
        assert f"--emulator-{flag}" in shown
    assert "--local" in shown
