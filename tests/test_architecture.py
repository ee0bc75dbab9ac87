"""The package's shape: no import cycle, and no module importing from a layer above its own (imports inside
functions count: they are how torch stays out of `fer --help`, not a way around the layering)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module imports from its own package or a lower layer; packages of one layer do not
# import each other (engine/ and explain/ both stand on infer/, not on each other).
LAYERS = [
    {"version", "errors", "classes", "defaults", "csvrows", "builtin"},
    {"console", "models"},
    {"hardware", "progress", "files"},
    {"plots", "data"},
    {"photos"},  # faces found in images: detection, crops, composites (no model)
    {"infer"},  # a trained model used: eval, predict, annotate
    {"explain", "engine"},
    {"demo", "api"},  # `fer demo`; the Python API's load, prepare and train
    {"commands"},
    {"cli"},
    {"__main__", "fercli"},  # the package itself re-exports the Python API
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "fercli").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fercli":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "fercli"}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _part(module: str) -> str:
    """The layer's name of a module: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fercli"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_module_has_a_layer():
    assert {_part(m) for m in _modules()} <= set(RANK), {_part(m) for m in _modules()} - set(RANK)


def test_no_import_cycle():
    assert _cycle(_imports(_modules())) is None


def test_no_import_from_a_higher_layer_or_a_sibling_package():
    wrong = []
    for m, deps in _imports(_modules()).items():
        for d in deps:
            a, b = _part(m), _part(d)
            if a != b and RANK[b] >= RANK[a]:
                wrong.append(f"{m} -> {d}")
    assert not wrong, wrong


def test_the_checks_see_a_cycle_and_an_upward_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert RANK[_part("fercli.progress")] < RANK[_part("fercli.engine.pace")]
