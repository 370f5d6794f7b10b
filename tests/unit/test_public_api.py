"""The public surface is exactly ``ibimport.__all__``, and the CLI stays on it."""

from __future__ import annotations

import ast
from pathlib import Path

import ibimport

SRC = Path(ibimport.__file__).parent


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's order for ``__all__`` (RUF022): CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(ibimport.__all__, key=_isort_key) == list(ibimport.__all__)
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
    # The AWS seam, and the model the rules come from.
    offenders = []
    for path in SRC.rglob("*.py"):
        if "aws" in path.parts or path.name == "apimodel.py" or "emulator" in path.parts:
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
    """Only the CLI (and the emulator's own command) talks to a terminal."""
    engine = [
        path
        for path in SRC.rglob("*.py")
        if "cli" not in path.parts and "emulator" not in path.parts
    ]
    assert len(engine) > 40
    for path in engine:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
        ]
        assert calls == [], f"{path} prints"


def test_the_cli_uses_only_the_public_api_and_its_presentation_modules() -> None:
    # The CLI composes the program: --local starts the emulator (its public package).
    presentation = {
        "ibimport.cli.progress",
        "ibimport.cli.rendering",
        "ibimport.emulator",
        "ibimport.emulator.cli",
    }
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


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ibimport modules a file imports, type-only imports included (``from pkg import
    submodule`` counts as the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ibimport"):
            module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in modules else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ibimport"))
    return found


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    names = set(modules)
    return {
        name: {m for m in _imports_of(path, names) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_no_module_imports_itself_back_through_others() -> None:
    """No import cycle among the modules, type-only imports included (issue 18)."""
    graph = _module_graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_only_the_emulator_and_the_cli_import_the_emulator() -> None:
    """The engine has no test double in it: ``--local`` is wired where the program is
    composed (the CLI)."""
    offenders = {
        name
        for name, imports in _module_graph().items()
        if any(m.startswith("ibimport.emulator") for m in imports)
        and not name.startswith(("ibimport.emulator", "ibimport.cli"))
    }
    assert offenders == set()
