"""``ibimport emulator``: serve a local Image Builder until SIGINT or SIGTERM.

The lead's main app registers ``emulator_command``; ``app`` here is a one-command typer
app so that ``python -m ibimport.emulator`` works without the rest of the CLI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from ibimport.emulator.defaults import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, SECRET_ENV
from ibimport.errors import ConfigError


def emulator_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8787,
    region: Annotated[
        str, typer.Option(help="Home region; state is kept per region a call is signed for.")
    ] = "us-east-1",
    account_id: Annotated[
        str, typer.Option(help="Account of callers whose access key is not 12 digits.")
    ] = "123456789012",
    rate: Annotated[
        float | None, typer.Option(help="Calls per second per operation before HTTP 429.")
    ] = None,
    burst: Annotated[
        int | None, typer.Option(help="Token bucket size (default: one second of --rate).")
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="Delay added to every answer.")] = 0.0,
    jitter_ms: Annotated[
        float, typer.Option(help="Extra random delay, uniform in [0, jitter].")
    ] = 0.0,
    fault_rate: Annotated[
        float, typer.Option(help="Share of calls answered 500/503 or dropped without an answer.")
    ] = 0.0,
    drop_share: Annotated[
        float,
        typer.Option(help="Share of faults that drop the connection after the call took effect."),
    ] = 0.1,
    seed: Annotated[
        int | None, typer.Option(help="Seed for faults and jitter (repeatable runs).")
    ] = None,
    token_ttl: Annotated[
        float, typer.Option(help="Seconds a clientToken is remembered.")
    ] = 86400.0,
    available_after_s: Annotated[
        float, typer.Option(help="Seconds an image takes from PENDING to AVAILABLE.")
    ] = 0.0,
    state: Annotated[
        Path | None,
        typer.Option(help="JSON file to load at start and save on stop (and every few seconds)."),
    ] = None,
    state_save_interval_s: Annotated[
        float, typer.Option(help="Seconds between state saves.")
    ] = 5.0,
    drop_before_share: Annotated[
        float,
        typer.Option(help="Share of calls whose connection resets before the call takes effect."),
    ] = 0.0,
    truncate_share: Annotated[
        float,
        typer.Option(help="Share of calls that take effect and whose answer is cut off mid-body."),
    ] = 0.0,
    slow_share: Annotated[
        float,
        typer.Option(help="Share of calls that take effect and are answered --slow-ms late."),
    ] = 0.0,
    slow_ms: Annotated[
        float, typer.Option(help="Delay of a --slow-share answer (beyond the read timeout).")
    ] = 0.0,
    verify_signatures: Annotated[
        bool,
        typer.Option(
            help="Check SigV4 signatures against --access-key-id/--secret-access-key "
            "(403 UnrecognizedClientException / InvalidSignatureException, as AWS answers)."
        ),
    ] = False,
    access_key_id: Annotated[
        str, typer.Option(help="The access key id --verify-signatures accepts.")
    ] = LOCAL_ACCESS_KEY_ID,
    secret_access_key: Annotated[
        str,
        typer.Option(
            envvar=SECRET_ENV,
            show_default=False,
            help="Its secret (better given in the environment variable); "
            "default: the throwaway pair `ibimport run --local` uses.",
        ),
    ] = LOCAL_SECRET_ACCESS_KEY,
) -> None:
    """Serve a local EC2 Image Builder for rehearsals, tests and benchmarks."""
    # Here, not at the top: `ibimport run` loads this module but never needs aiohttp.web.
    from ibimport.emulator.server import EmulatorConfig, run_until_signalled

    try:
        config = EmulatorConfig(
            host=host,
            port=port,
            region=region,
            account_id=account_id,
            rate=rate,
            burst=burst,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            fault_rate=fault_rate,
            drop_share=drop_share,
            seed=seed,
            token_ttl_s=token_ttl,
            available_after_s=available_after_s,
            state_file=state,
            state_save_interval_s=state_save_interval_s,
            drop_before_share=drop_before_share,
            truncate_share=truncate_share,
            slow_share=slow_share,
            slow_ms=slow_ms,
            verify_signatures=verify_signatures,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc

    def announce(url: str) -> None:
        print(f"ibimport emulator listening on {url}", flush=True)

    try:
        asyncio.run(run_until_signalled(config, on_ready=announce))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


app = typer.Typer(add_completion=False)
app.command()(emulator_command)
