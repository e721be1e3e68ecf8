"""The house: every import runs one way down flexunet.LAYERS, and no module sits outside a subpackage."""

from __future__ import annotations

import ast
from pathlib import Path

import flexunet
from flexunet import LAYERS

SRC = Path(flexunet.__file__).parent


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, flexunet module imported, at module top) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flexunet"):
            names = [node.module] if node.module != "flexunet" else [f"flexunet.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("flexunet")]
        else:
            continue
        found += [(node.lineno, name, id(node) in top) for name in names]
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer_subpackage():
    loose = sorted(p.name for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == []
    assert sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()) == sorted(LAYERS)


def test_imports_run_one_way_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) < 2:
            continue
        own = rank[rel.parts[0]]
        for line, module, _ in _imports(path):
            target = _package(module)
            if target is not None and rank[target] < own:
                upward.append(f"{rel}:{line} imports {module}")
    assert upward == []


def test_no_module_imports_itself_in_a_circle_at_import_time():
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("flexunet", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        graph[name] = {m for _, m, top in _imports(path) if top and m != name}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else nxt)
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


# the command line as a whole: what no one module of flexunet.cli shows
CLI_LEVEL = ("test_shipped_configs.py", "test_whole_pipeline.py")


def test_the_tests_mirror_the_house():
    """tests/<subpackage>/test_<module>.py (or test_<module>_<aspect>.py) for src/flexunet/<subpackage>/<module>.py.
    No __init__.py: pytest imports each test file by its name, so the names stay unique."""
    tests = Path(__file__).parent
    astray, names = [], {}
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        names.setdefault(path.name, []).append(str(rel))
        if len(rel.parts) == 1:
            astray += [] if path.name == "test_architecture.py" else [str(rel)]
            continue
        modules = {p.stem for p in (SRC / rel.parts[0]).glob("*.py")} if rel.parts[0] in LAYERS else set()
        stem = path.stem.removeprefix("test_")
        if not any(stem == m or stem.startswith(f"{m}_") for m in modules) and not (
                rel.parts[0] == "cli" and path.name in CLI_LEVEL):
            astray.append(str(rel))
    assert astray == []
    assert {name: where for name, where in names.items() if len(where) > 1} == {}
    assert sorted(str(p.relative_to(tests)) for p in tests.rglob("__init__.py")) == []
