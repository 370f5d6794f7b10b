"""The ``ibimport`` command line: parse, build a config, call the library, map to an exit code.

One module per command group; each imports only ``ibimport``'s public API and the
presentation modules (``progress``, ``rendering``, ``emulator.cli``).
"""

from __future__ import annotations

from ibimport.cli._common import app, main
from ibimport.emulator.cli import emulator_command

# isort: off
# Importing a command module registers its commands, in the order --help lists them.
from ibimport.cli import _validate  # noqa: F401
from ibimport.cli import _preflight  # noqa: F401
from ibimport.cli import _run  # noqa: F401
from ibimport.cli import _wait  # noqa: F401
from ibimport.cli import _cancel  # noqa: F401
from ibimport.cli import _journals  # noqa: F401

# isort: on

app.command("emulator")(emulator_command)

__all__ = ["app", "main"]
