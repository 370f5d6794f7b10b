"""A local EC2 Image Builder that boto3, aioboto3 and the AWS CLI cannot tell from the service.

Laid out like moto, one sub-package per service (``imagebuilder``, ``ec2``, ``sts``,
``s3``, ``iam``, ``servicequotas``), each with ``models`` (state and behaviour) and
``responses`` (the wire format); shared by all: ``config`` (every knob), ``core`` (scope,
clock), ``exceptions`` (the AWS errors), the protocols (``rest``, ``query``, ``awsjson``,
``restxml``), ``auth`` (SigV4), ``faults`` (the misbehaviour), ``server`` (the aiohttp
wiring and the table of services), ``stats`` (the counters), ``statefile`` (the durable
``--state``), ``running`` (serving on a loop, a thread, or until signalled) and
``process`` (the child process). Start one in-process with
``EmulatorServer(EmulatorConfig(...))`` or in a child process with ``EmulatorProcess``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibimport.emulator.config import EmulatorConfig
    from ibimport.emulator.process import EmulatorProcess
    from ibimport.emulator.running import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorProcess", "EmulatorServer"]

# Only the server and what runs it load aiohttp.web, and only when asked for: `ibimport run`
# never is.
_HOMES = {"EmulatorConfig": "config", "EmulatorProcess": "process", "EmulatorServer": "running"}


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
