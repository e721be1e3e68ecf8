"""The house: every import runs one way down flexunet.LAYERS, and no module sits outside a subpackage."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import flexunet
from flexunet import LAYERS

SRC = Path(flexunet.__file__).parent


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, flexunet module imported, at module top) for every import in ``path``; ``from flexunet.x
    import y`` names the module ``flexunet.x.y`` when y is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flexunet"):
            names = sorted({f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                            for a in node.names})
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("flexunet")]
        else:
            continue
        found += [(node.lineno, name, id(node) in top) for name in names]
    return found


def _module_name(path: Path) -> str:
    return ".".join(("flexunet", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


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
        name = _module_name(path)
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


MAX_LINES = 400


def test_no_module_is_over_400_lines():
    long = sorted(f"{p.relative_to(SRC)}: {n} lines" for p in SRC.rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert long == []


def _tensorflow_at_top() -> set[str]:
    """The modules whose import imports TensorFlow or Keras: at their top, or through a flexunet module
    they import at their top that does."""
    direct, uses = set(), {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(r.split(".")[0] in ("tensorflow", "keras") for r in roots):
                direct.add(name)
        uses[name] = {m for _, m, top in _imports(path) if top}
    found = set(direct)
    while True:
        more = {name for name, targets in uses.items() if name not in found and targets & found}
        if not more:
            return found
        found |= more


# the one lazy import that is not TensorFlow's: the command handlers (every stage module) load once the
# arguments parse, so `flexunet --help` and a bad argument load none of them
CLI_BOUNDARY = ("flexunet.cli.main", "flexunet.cli.commands")


def test_imports_inside_functions_are_only_the_tensorflow_boundary():
    tensorflow = _tensorflow_at_top()
    assert {"flexunet.model.network", "flexunet.preprocessing.pipeline"} <= tensorflow  # the check sees them
    assert "flexunet.cli.commands" not in tensorflow and "flexunet.training.train" not in tensorflow
    lazy = []
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        for line, module, top in _imports(path):
            if not top and module not in tensorflow and (name, module) != CLI_BOUNDARY:
                lazy.append(f"{path.relative_to(SRC)}:{line} imports {module} inside a function")
    assert lazy == []


def test_the_stage_modules_load_without_tensorflow_or_scipy_ndimage():
    """Every command loads cli.commands, so every stage module: TensorFlow, Keras and scipy.ndimage wait."""
    code = "import sys, flexunet.cli.commands\nprint(sorted({'tensorflow', 'keras', 'scipy.ndimage'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# the command line as a whole: what no one module of flexunet.cli shows; the project as a whole: the house, the docs
CLI_LEVEL = ("test_shipped_configs.py", "test_whole_pipeline.py")
PROJECT_LEVEL = ("test_architecture.py", "test_docs.py")


def test_the_tests_mirror_the_house():
    """tests/<subpackage>/test_<module>.py (or test_<module>_<aspect>.py) for src/flexunet/<subpackage>/<module>.py;
    at tests/ only the project-wide checks.  No __init__.py: pytest imports each test file by its name, so the
    names stay unique."""
    tests = Path(__file__).parent
    astray, names = [], {}
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        names.setdefault(path.name, []).append(str(rel))
        if len(rel.parts) == 1:
            astray += [] if path.name in PROJECT_LEVEL else [str(rel)]
            continue
        modules = {p.stem for p in (SRC / rel.parts[0]).glob("*.py")} if rel.parts[0] in LAYERS else set()
        stem = path.stem.removeprefix("test_")
        if not any(stem == m or stem.startswith(f"{m}_") for m in modules) and not (
                rel.parts[0] == "cli" and path.name in CLI_LEVEL):
            astray.append(str(rel))
    assert astray == []
    assert {name: where for name, where in names.items() if len(where) > 1} == {}
    assert sorted(str(p.relative_to(tests)) for p in tests.rglob("__init__.py")) == []
