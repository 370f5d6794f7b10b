"""``python -m ibimport.emulator``: the emulator alone, as benchmarks and subprocesses start it."""

from ibimport.emulator.cli import app

if __name__ == "__main__":
    app()
