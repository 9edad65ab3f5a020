"""The package's import graph has no cycle (imports inside functions counted too): the model
builders sit below convert and weights, which sit below the workflow and the command line."""
import ast
from pathlib import Path

import resattn

ROOT = Path(resattn.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """resattn module -> the resattn modules it imports (relative imports, anywhere in the file)."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = _module(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                if node.module:
                    deps.add(".".join(base + [node.module]))
                else:  # from . import x
                    deps.update(".".join(base + [a.name]) for a in node.names)
        graph[name] = deps
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if d == n or d.startswith(n + "."):  # a package importing its own submodules
                continue
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert "resattn.weights" in graph["resattn.export"] and len(graph) > 20
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    models = {m for m in graph if m.startswith("resattn.models")}
    assert all(not {d for d in graph[m] if d.startswith(("resattn.weights", "resattn.convert"))}
               for m in models)


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
