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
    assert "resattn.tools.weights" in graph["resattn.tools.export"] and len(graph) > 20
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


#: Each subpackage imports only from the ones before it (utils the exception: anyone may use it).
LAYERS = ["resattn.utils", "resattn.layers", "resattn.models", "resattn.tools", "resattn.workflow"]


def _layer(module: str) -> int:
    return next((i for i, p in enumerate(LAYERS) if module == p or module.startswith(p + ".")), -1)


def test_subpackages_import_only_from_the_layers_below():
    graph = import_graph()
    upward = sorted((m, d) for m, deps in graph.items() if _layer(m) >= 0
                    for d in deps if _layer(d) > _layer(m))
    assert upward == []
    # and the layout holds every module: nothing but the package, the CLI and the aliases on top
    top = {m for m in graph if m.count(".") == 1}
    assert top == {"resattn.cli", "resattn.__main__", "resattn._aliases", *LAYERS}


def test_the_flat_module_paths_of_before_are_the_same_modules(tmp_path):
    """``resattn.train`` & co. (the paths before the subpackages) import, in a fresh interpreter,
    as the very modules of their new places; ``resattn.convert`` and ``resattn.advise`` stay the
    functions."""
    import subprocess
    import sys
    code = (
        "import importlib, resattn\n"
        "from resattn._aliases import MOVED\n"
        "for old, pkg in MOVED.items():\n"
        "    a = importlib.import_module(f'resattn.{old}')\n"
        "    b = importlib.import_module(f'resattn.{pkg}.{old}')\n"
        "    assert a is b, old\n"
        "import resattn.convert, resattn.advise\n"
        "assert callable(resattn.convert) and callable(resattn.advise)\n"
        "from resattn.train import TrainConfig\n"
        "from resattn.blocks import AttentionConfig\n"
        "from resattn.weights import load_model\n"
        "assert TrainConfig.__module__ == 'resattn.workflow.train'\n"
        "print(len(MOVED))\n")
    import os
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}  # this checkout's resattn
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "24"


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
