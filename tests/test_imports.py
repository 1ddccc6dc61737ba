"""The import structure of facepii, defenses and attacks: no circle, no hidden function-level imports.

Every ``import`` statement of the three packages counts, at module level or inside a function.
Rules (checked here; ``python tests/test_imports.py`` prints the graph's problems, anyone can run it):

- no circle: the graph of the project's modules (an edge per import, wherever it stands) has no
  cycle;
- a function-level import of a project module is allowed only to defer a heavy optional
  dependency: the imported module must import one of :data:`HEAVY` at its top level.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("facepii", "defenses", "attacks")
HEAVY = ("torch", "dlib", "tenseal", "dask", "distributed", "faiss", "matplotlib")
#: entry points that must run before numpy and torch load (facepii.kernels' pin): they defer everything
LAUNCHERS = ("facepii.launch",)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lands in (a module, or a package's __init__)."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(path: Path, module: str, mods: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported project module, at function level, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    m = _resolve(a.name, mods)
                    if m:
                        found.append((m, nested, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    src = f"{base}.{child.module}" if child.module else base
                else:
                    src = child.module or ""
                for a in child.names:
                    m = _resolve(f"{src}.{a.name}", mods) if f"{src}.{a.name}" in mods else _resolve(src, mods)
                    if m:
                        found.append((m, nested, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def top_level_third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> modules it imports, problems with function-level imports)."""
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    problems = []
    for m, p in mods.items():
        for target, nested, line in imports(p, m, mods):
            if target == m:
                continue
            edges[m].add(target)
            if nested and m not in LAUNCHERS and not (top_level_third_party(mods[target]) & set(HEAVY)):
                problems.append(f"{p.relative_to(ROOT)}:{line}: imports {target} inside a function, and {target} "
                                f"defers no heavy dependency ({', '.join(HEAVY)}): import it at the top")
    return edges, problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_circle():
    edges, _ = graph()
    found = cycles(edges)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_function_level_imports_only_defer_heavy_dependencies():
    _, problems = graph()
    assert not problems, "\n".join(problems)


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


if __name__ == "__main__":
    e, probs = graph()
    for c in cycles(e):
        print("circle:", " <-> ".join(c))
    for p in probs:
        print(p)
    print(f"{len(e)} modules, {sum(len(v) for v in e.values())} import edges, {len(cycles(e))} circles, "
          f"{len(probs)} function-level imports to fix")
    sys.exit(1 if cycles(e) or probs else 0)
