"""The package layout reads as the pipeline, and imports only run down it.

Every module's imports are read from its source (``ast``): top-level imports, imports inside functions (lazy ones)
and ``TYPE_CHECKING`` imports alike, since each is a dependency of the importer on the imported package. A test
failure names the importing module, its line and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevision"

#: Layers, bottom first. A module may import its own layer or any layer below it, never one above. Packages
#: that share a layer are siblings: either may import the other, as long as that makes no cycle.
LAYERS: list[set[str]] = [
    # the values and rules everything shares
    {
        "",  # edgevision/__init__.py, __main__ excluded below
        "results",
        "errors",
        "config",
        "config_load",
        "config_messages",
        "safe_read",
        "paths",
        "fsutil",
        "writable",
        "redact",
        "naming",
        "render",
    },
    {"capture"},
    {"inference"},
    {
        "catalog",
        "config_check",
    },  # which model files exist, where they come from, whether the config fits them
    {"detection"},
    {"pipeline"},  # the frame loop: drives stages and sinks through the results protocols
    {"face"},
    {"scheduler"},
    {"events", "distill"},
    {"recorder"},
    {"service"},
    {"publish"},
    {"app", "cli", "__main__"},  # the composition root and the commands
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_of(module: str) -> str:
    """``edgevision.recorder.index`` -> ``recorder``; ``edgevision.config`` -> ``config``; ``edgevision`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, package: Path = PACKAGE) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports, with the line (relative imports resolved)."""
    mod = module_name(path, package)
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join([*base, name] if name else base)
            yield name, node.lineno


def edges() -> list[tuple[str, str, str, int]]:
    """(importer package, imported package, importer module, line) for every cross-package import."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = module_name(path)
        for target, line in imports(path):
            if target != "edgevision" and not target.startswith("edgevision."):
                continue
            a, b = package_of(src), package_of(target)
            if a != b:
                out.append((a, b, src, line))
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed path (``[a, b, a]``), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_every_package_has_a_layer() -> None:
    packages = {package_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages - RANK.keys() == set(), "add the new package to LAYERS (and to README's Layout section)"


def test_imports_run_down_the_pipeline() -> None:
    wrong = [
        f"{src}:{line} imports edgevision.{b} ({b} is above {a or 'edgevision'})"
        for a, b, src, line in edges()
        if RANK.get(b, -1) > RANK.get(a, len(LAYERS))
    ]
    assert wrong == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in edges():
        graph.setdefault(a, set()).add(b)
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"x": {"y"}, "y": set(), "a": {"a"}}, ["a", "a"]),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None),  # a diamond is not a cycle
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_the_scan_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "edgevision" / "recorder"
    pkg.mkdir(parents=True)
    src = pkg / "__init__.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import index\n"
        "if TYPE_CHECKING:\n"
        "    from edgevision.publish.web import WebServer\n"
        "def f():\n"
        "    import edgevision.cli.main\n"
        "    from ..service import monitor\n"
    )
    found = {name for name, _ in imports(src, tmp_path / "edgevision")}
    assert found == {
        "typing",
        "edgevision.recorder",
        "edgevision.publish.web",
        "edgevision.cli.main",
        "edgevision.service",
    }
