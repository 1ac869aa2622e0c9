"""The package's shape (docs/architecture.md): every import runs one way, down a declared order of
packages, with no cycle between modules or packages; modules stay readable and import on their own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yoda_sr

PACKAGE = Path(yoda_sr.__file__).parent
LONG_MODULES: dict[str, str] = {}
"""Modules allowed over 400 lines, with the reason (none today)."""
MAX_TOP_LEVEL_MODULES = 12

LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("web", "distributed"),
    ("training",),
    ("evaluation",),
    ("jobs",),
    ("api",),
    ("runtime",),
    ("attention",),
    ("checkpoints",),
    ("convert",),
    ("models", "settings"),
    ("weights_file", "image"),
    ("diffusion",),
    ("errors", "fsutil", "seeds", "_version"),
)
"""Units (sub-packages and top-level modules of yoda_sr), top to bottom: a unit imports only units of
lower layers (and itself). ``yoda_sr/__init__`` (the façade's lazy exports) sits above them all."""

HEAVY = frozenset({"torch", "timm", "skimage", "scipy", "matplotlib", "huggingface_hub", "gradio", "ray", "spandrel"})
"""Slow-to-import or optional dependencies: the one reason for an import inside a function, outside
cli/ and the package root (so that `--help`, `--version` and `checkpoints list` never load torch)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The unit a module belongs to: its sub-package or top-level module (``yoda_sr`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(module: str, path: Path, *, top_level_only: bool = False) -> list[tuple[ast.ImportFrom | ast.Import, str]]:
    """(node, absolute source) of every import in ``module``: module level, inside functions and in
    ``TYPE_CHECKING`` blocks (only those run at import time with ``top_level_only``)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes: list[ast.Import | ast.ImportFrom] = []
    if top_level_only:
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                nodes.append(node)
            elif isinstance(node, ast.If | ast.Try) and "TYPE_CHECKING" not in ast.unparse(getattr(node, "test", "")):
                nodes.extend(n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))
    else:
        nodes = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    found: list[tuple[ast.ImportFrom | ast.Import, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found.extend((node, alias.name) for alias in node.names)
        else:
            found.append((node, _source(module, path, node) if node.level else node.module or ""))
    return found


def import_graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    """module -> the yoda_sr modules it imports (a submodule named in ``from . import x`` counts)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node, source in imports(name, path, top_level_only=top_level_only):
            targets.add(source)
            if isinstance(node, ast.ImportFrom):
                targets.update(f"{source}.{alias.name}" for alias in node.names)
        # A module importing its own package (``from . import sibling``) finds it in sys.modules already.
        ancestors = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
        graph[name] = {target for target in targets if target in known and target != name and target not in ancestors}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up the declared order or sideways between units of one layer."""
    layer = {name: depth for depth, names in enumerate(LAYERS) for name in names}
    wrong = []
    for source, targets in graph.items():
        if unit(source) == "yoda_sr":
            continue
        for target in targets:
            a, b = unit(source), unit(target)
            if a != b and (a not in layer or b not in layer or layer[b] <= layer[a]):
                wrong.append(f"{source} -> {target}")
    return sorted(wrong)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_reads_imports_inside_functions_and_type_checking_blocks():
    every, top = import_graph(), import_graph(top_level_only=True)
    assert "yoda_sr.diffusion.masking" in every["yoda_sr.diffusion.loop"]
    # api imports the attention maps inside a function (they bring scipy and scikit-image) ...
    assert "yoda_sr.attention" in every["yoda_sr.api"] and "yoda_sr.attention" not in top["yoda_sr.api"]
    # ... and names the tiling's Denoise only for the type checker.
    assert "yoda_sr.runtime.tiling" in every["yoda_sr.api"]


def test_the_layer_check_refuses_an_upward_import():
    assert layer_violations({"yoda_sr.image.io": {"yoda_sr.api"}}) == ["yoda_sr.image.io -> yoda_sr.api"]
    assert layer_violations({"yoda_sr.models.base": {"yoda_sr.settings"}}) == [
        "yoda_sr.models.base -> yoda_sr.settings"
    ]
    assert layer_violations({"yoda_sr.api": {"yoda_sr.image.io"}, "yoda_sr.image.io": {"yoda_sr.image.png16"}}) == []


def test_no_import_cycle_counting_every_import():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        units.setdefault(unit(source), set()).update(unit(t) for t in targets if unit(t) != unit(source))
    assert find_cycle(units) is None, " -> ".join(find_cycle(units) or [])


def test_imports_run_down_the_declared_order():
    known = {unit(name) for name in modules()} - {"yoda_sr"}
    declared = {name for names in LAYERS for name in names}
    assert known <= declared, f"undeclared units: {sorted(known - declared)} (add them to LAYERS)"
    assert not layer_violations(import_graph())


def _heavy_at_import(graph: dict[str, set[str]], paths: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the HEAVY packages importing it loads (through module-level imports)."""
    direct = {
        name: {
            source.split(".")[0]
            for _, source in imports(name, path, top_level_only=True)
            if source.split(".")[0] in HEAVY
        }
        for name, path in paths.items()
    }
    result: dict[str, set[str]] = {}

    def visit(name: str, seen: frozenset[str]) -> set[str]:
        if name not in result:
            found = set(direct[name])
            for target in graph[name] - seen:
                found |= visit(target, seen | {name})
            result[name] = found
        return result[name]

    for name in paths:
        visit(name, frozenset())
    return result


def test_imports_inside_functions_only_defer_heavy_dependencies():
    paths = modules()
    top = import_graph(top_level_only=True)
    heavy = _heavy_at_import(top, paths)
    needless = []
    for name, path in paths.items():
        if unit(name) in ("cli", "yoda_sr"):
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.level:
                    source = _source(name, path, node)
                    targets = {source} | {f"{source}.{alias.name}" for alias in node.names}
                    if not any(heavy.get(target) for target in targets if target in paths):
                        needless.append(f"{name}:{node.lineno} from {source}")
    assert not needless, needless


def _source(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a relative ``from`` import names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def test_at_most_twelve_modules_sit_directly_in_the_package():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_module_imports_on_its_own():
    """Each module imported first in a fresh interpreter (one process, modules unloaded in between)."""
    script = (
        "import importlib, sys\n"
        "names = sys.argv[1:]\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'yoda_sr' or m.startswith('yoda_sr.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    names = sorted(modules())
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_modules_stay_under_400_lines():
    long = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > 400 and name not in LONG_MODULES
    }
    assert not long, long
