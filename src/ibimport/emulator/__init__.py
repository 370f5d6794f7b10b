"""A local EC2 Image Builder that boto3, aioboto3 and the AWS CLI cannot tell from the service.

Laid out like moto: ``models`` holds state and behaviour, ``responses`` the wire format,
``server`` the aiohttp server and its knobs. Start one in-process with
``EmulatorServer(EmulatorConfig(...))`` or in a child process with ``EmulatorProcess``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibimport.emulator.server import EmulatorConfig, EmulatorProcess, EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorProcess", "EmulatorServer"]


def __getattr__(name: str) -> Any:
    """Load the server (and aiohttp.web) on first use: ``ibimport run`` never needs it."""
    if name in __all__:
        from ibimport.emulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
