"""A local EC2 Image Builder that boto3, aioboto3 and the AWS CLI cannot tell from the service.

Laid out like moto: ``models`` holds state and behaviour, ``responses`` the wire format,
``server`` the aiohttp server and its knobs. Start one in-process with
``EmulatorServer(EmulatorConfig(...))`` or in a child process with ``EmulatorProcess``.
"""

from ibimport.emulator.server import EmulatorConfig, EmulatorProcess, EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorProcess", "EmulatorServer"]
