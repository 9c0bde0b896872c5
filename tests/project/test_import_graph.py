"""No import circle inside ``tokfuse_rt``: the graph of imports between its modules (read with the stdlib
``ast``: absolute and relative imports, at module level and inside functions; ``from . import x`` goes to
the submodule ``x`` when there is one) has no cycle. Imports under ``if TYPE_CHECKING:`` never run and do
not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tokfuse_rt"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


# installed as tokfuse_rt.kernels, kept in the top-level kernels/ folder of the source tree
MAPPED = {"kernels": ROOT.parent / "kernels"}


def module_files(root: Path = ROOT, package: str = PACKAGE, mapped: dict[str, Path] | None = None) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under ``root`` (packages by their ``__init__.py``), and
    of the folders ``mapped`` in as sub-packages."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = [package, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    for name, folder in (mapped or {}).items():
        out.update(module_files(folder, f"{package}.{name}"))
    return out


def top_level_names(source: str) -> set[str]:
    """The names a module defines at its top level (what ``from pkg import name`` can take without a
    submodule of that name)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_edges(name: str, source: str, modules: dict[str, set[str]], packages: set[str]) -> set[str]:
    """The modules of ``modules`` ({module: its top-level names}) that the module ``name`` imports.
    ``from pkg import x`` goes to the module ``pkg.x`` when there is one, else to the package ``pkg`` when
    it defines ``x`` (otherwise ``x`` is a module outside the graph, e.g. the compiled extension ``_C``)."""
    out = set()
    here = name.split(".") if name in packages else name.split(".")[:-1]  # the package relative imports start from
    for node in _imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{stem}.{alias.name}"
                if sub in modules:
                    targets.append(sub)
                elif stem not in packages or alias.name == "*" or alias.name in modules.get(stem, ()):
                    targets.append(stem)  # a name of the module ``stem``
        out.update(t for t in targets if t in modules and t != name)
    return out


def import_graph(
    root: Path = ROOT, package: str = PACKAGE, mapped: dict[str, Path] | None = None
) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}."""
    files = module_files(root, package, mapped)
    sources = {n: f.read_text(encoding="utf-8") for n, f in files.items()}
    modules = {n: top_level_names(src) for n, src in sources.items()}
    packages = {n for n, f in files.items() if f.name == "__init__.py"}
    return {n: import_edges(n, sources[n], modules, packages) for n in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative depth-first search, deterministic order)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        path = [start]
        colour[start] = GREY
        todo = [iter(sorted(graph[start]))]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                colour[path.pop()] = BLACK
                todo.pop()
                continue
            state = colour.get(nxt, BLACK)  # an edge out of the graph ends there
            if state == GREY:
                return path[path.index(nxt) :] + [nxt]
            if state == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return None


# --- the cycle finder itself -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None),  # a diamond is not a cycle
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": {"b"}}, ["b", "c", "d", "b"]),
        ({"a": {"a"}}, ["a", "a"]),
        ({"a": {"x"}}, None),  # an edge to a module outside the graph
    ],
)
def test_find_cycle_on_small_graphs(graph, cycle):
    assert find_cycle(graph) == cycle


def test_edges_of_every_import_form(tmp_path):
    """Each import form on a synthetic package, a circle through a function-level relative import included."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import f\n\nVERSION = 1\n",
        "a.py": "import os\nimport pkg.b\n\ndef f():\n    from .sub import c\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\nfrom pkg.sub.c import g\n",
        "sub/__init__.py": "from .. import b as _b\n",
        "sub/c.py": "def g():\n    from ..a import f\n    from . import d, _b\n",
        "sub/d.py": "from .. import _C, VERSION\n",  # _C: a compiled extension (no .py file)
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    g = import_graph(pkg, "pkg")
    assert g == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b", "pkg.sub.c"},
        "pkg.b": {"pkg.sub.c"},  # the TYPE_CHECKING import does not count
        "pkg.sub": {"pkg.b"},
        "pkg.sub.c": {"pkg.a", "pkg.sub.d", "pkg.sub"},  # `from . import _b`: a name of pkg.sub
        "pkg.sub.d": {"pkg"},  # VERSION is a name of pkg; _C a module outside the graph
    }
    assert find_cycle(g) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


# --- the package -----------------------------------------------------------------------------------------
# Known edges that close circles (none: an entry here would have to be an import that closes a circle
# today; the test fails on any other circle, and on an entry that no longer closes one).
KNOWN_CIRCLE_EDGES: set = set()


def test_no_import_circle_in_the_package():
    graph = import_graph(mapped=MAPPED)
    assert "tokfuse_rt.cli" in graph and "tokfuse_rt.cli.eval" in graph  # the walk sees the package
    assert "tokfuse_rt.cli.eval_report" in graph["tokfuse_rt.cli.eval"]
    assert "tokfuse_rt.kernels" in graph["tokfuse_rt.model.quant"]  # `from .. import kernels`: the mapped folder
    stale = sorted(e for e in KNOWN_CIRCLE_EDGES if e[1] not in graph.get(e[0], ()))
    assert not stale, f"no longer imported, remove from KNOWN_CIRCLE_EDGES: {stale}"
    for a, b in KNOWN_CIRCLE_EDGES:
        graph[a] = graph[a] - {b}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_known_edges_do_close_circles():
    """Each known edge is still part of a circle (else it is not needed in the list)."""
    graph = import_graph(mapped=MAPPED)
    for a, b in sorted(KNOWN_CIRCLE_EDGES):
        only = {n: (e - {y for x, y in KNOWN_CIRCLE_EDGES if x == n and (x, y) != (a, b)}) for n, e in graph.items()}
        assert find_cycle(only) is not None, (a, b)
