"""The single place the version lives (the package, the CLI and the User-Agent read it)."""

__version__ = "0.1.0"
