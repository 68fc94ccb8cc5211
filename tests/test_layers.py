"""The layering of the product's packages, read from the source's imports (every
``import``, at module level or inside a function, ``TYPE_CHECKING`` ones included).

``gateway`` (HTTP, the composition root) is above ``actions``, which is above ``jobs``
and ``oauth`` (siblings that never import each other), which are above ``metering``;
``core`` is the ground floor every package may import and that imports none of them.
No module may import one of a higher or a sibling layer, and no module import cycle may
exist, whether held open by lazy imports or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK = {"core": 0, "metering": 1, "jobs": 2, "oauth": 2, "actions": 3, "gateway": 4}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in RANK for p in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]):
    """``(line, imported module)`` for every import of a product module in ``path``."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in RANK:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] not in RANK:
                continue
            # ``from jobs import engine`` imports the module jobs.engine
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            yield from ((node.lineno, t) for t in (subs or [target]))


def _graph():
    modules = _modules()
    known = set(modules)
    return {name: list(_imports(name, path, known)) for name, path in modules.items()}


def test_no_import_reaches_up_or_sideways():
    wrong = []
    for name, imports in _graph().items():
        here = name.split(".")[0]
        for line, target in imports:
            there = target.split(".")[0]
            if there != here and RANK[there] >= RANK[here]:
                wrong.append(f"{name}:{line} imports {target}")
    assert wrong == [], "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {name: {t for _, t in imports if t in _modules()} for name, imports in
             _graph().items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_analysis_sees_imports():
    """Guard against a vacuous pass: the known edges are found."""
    graph = _graph()
    assert any(t == "actions.registry" for _, t in graph["actions.echo"])
    assert any(t == "core.errors" for _, t in graph["metering.ledger"])
    assert len(graph) > 60
