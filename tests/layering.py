"""The import graph of a package, read from its source (every import statement, function-level ones
included), and the two ways it can break the package's layering: an import of a higher layer, and
a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "dyrate_engine"
# Lowest first. A module may import its own layer's package and the layers below it; the
# package root (the public facade) is above everything, so no module inside imports it.
LAYERS = [
    ("_C",),  # the compiled op library
    ("bundled", "deprecation"),  # leaves: every layer may use them
    ("ops",),
    ("models",),
    ("predictor",),
    ("policies",),
    ("engine",),
    ("data",),
    ("train",),
    ("eval",),
    ("bench", "demo", "serve"),
    ("cli",),
]


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every .py file of the package in ``root``."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports: ``from x import y`` counts as importing
    ``x.y`` when that is a module, else ``x``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                while target not in known and "." in target:  # e.g. a compiled module
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    out.add(target)
    return out


def layer_of(module: str) -> int:
    """The layer of a module (its first-level subpackage); the root is above every layer."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise KeyError(f"{module} is in no layer: add its subpackage to LAYERS")


def violations(root: Path) -> list[str]:
    """Every upward import and every import cycle of the package in ``root``."""
    files = module_files(root)
    known = set(files) | {f"{PACKAGE}._C"}  # the compiled op library
    graph = {m: imports_of(m, p, known) for m, p in files.items()}
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            own = module.split(".")[:2] == target.split(".")[:2]
            if not own and layer_of(target) >= layer_of(module):
                problems.append(f"upward import: {module} imports {target}")
    problems += [f"import cycle among: {', '.join(c)}" for c in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each strongly connected component that holds a cycle (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
