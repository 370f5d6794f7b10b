"""The public surface is exactly ``ibimport.__all__``, and the CLI stays on it."""

from __future__ import annotations

import ast
from pathlib import Path

import ibimport

SRC = Path(ibimport.__file__).parent


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(ibimport.__all__) == list(ibimport.__all__)
    missing = [name for name in ibimport.__all__ if not hasattr(ibimport, name)]
    assert missing == []


def test_public_names_are_exported_nowhere_else_by_accident() -> None:
    public = {
        name
        for name in vars(ibimport)
        if not name.startswith("_")
        and name not in {"annotations"}
        and not isinstance(getattr(ibimport, name), type(ibimport))
    }
    assert public == set(ibimport.__all__) - {"__version__"}


def test_only_the_client_boundary_imports_aioboto3_or_botocore() -> None:
    # client.py, the botocore extension it installs, and the model the rules come from.
    allowed = {"client.py", "signing.py", "apimodel.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name in allowed or "emulator" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(
                n.split(".")[0] in {"aioboto3", "aiobotocore", "botocore", "boto3"} for n in names
            ):
                offenders.append(path.name)
    assert offenders == []


def test_the_engine_never_prints() -> None:
    engine = [
        "runner.py",
        "limiter.py",
        "retry.py",
        *(f"journal/{p.name}" for p in (SRC / "journal").glob("*.py")),
        "clock.py",
        *(f"manifest/{p.name}" for p in (SRC / "manifest").glob("*.py")),
        "task.py",
        "tokens.py",
        "client.py",
        "signing.py",
    ]
    for name in engine:
        tree = ast.parse((SRC / name).read_text(encoding="utf-8"))
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
        ]
        assert calls == [], f"{name} prints"


def test_the_cli_uses_only_the_public_api_and_its_presentation_modules() -> None:
    presentation = {"ibimport.progress", "ibimport.rendering", "ibimport.emulator.cli"}
    own = {f"ibimport.cli.{p.stem}" for p in (SRC / "cli").glob("*.py")} | {"ibimport.cli"}
    off_api = []
    nodes = [
        node
        for path in sorted((SRC / "cli").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    ]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ibimport"):
            if node.module == "ibimport":
                off_api += [a.name for a in node.names if a.name not in ibimport.__all__]
            elif node.module not in presentation | own:
                off_api.append(node.module or "")
        elif isinstance(node, ast.Import):
            off_api += [a.name for a in node.names if a.name.startswith("ibimport")]
    assert off_api == []
