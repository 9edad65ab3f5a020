"""The flat module paths of resattn before its subpackages (``resattn.train``, ``resattn.blocks``,
...) kept as aliases: ``import resattn.train`` gives the very module ``resattn.workflow.train``
(one module object under two names, so a patch through either name is seen through both).

:data:`MOVED` maps each old name to its package. A meta-path finder imports an old name's module
on first use, so ``import resattn`` stays as light as before; names the package's ``__init__``
has already imported are registered at once.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional

#: old module name (``resattn.<name>``) -> the subpackage that holds it now.
MOVED: dict[str, str] = {
    "attention": "layers", "masks": "layers", "modulation": "layers", "blocks": "layers",
    "convert": "tools", "weights": "tools", "monitor": "tools", "inspect": "tools", "export": "tools",
    "advise": "tools", "bench": "tools",
    "data": "workflow", "train": "workflow", "executors": "workflow", "compare": "workflow",
    "stats": "workflow", "report": "workflow", "study": "workflow", "evidence": "workflow",
    "cache": "workflow", "sinks": "workflow", "stability": "workflow",
    "machine": "utils", "precision": "utils",
}


def new_name(old: str) -> Optional[str]:
    """``resattn.layers.blocks`` for ``resattn.blocks`` (and its submodules); None if not moved."""
    parts = old.split(".")
    if len(parts) >= 2 and parts[0] == "resattn" and parts[1] in MOVED:
        return ".".join(["resattn", MOVED[parts[1]], *parts[1:]])
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:  # the target ran already
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install(package: str) -> None:
    """Put the finder on ``sys.meta_path`` (once) and register the old names of the modules that
    are already imported (so ``import resattn.convert`` never rebinds ``resattn.convert``, the
    function, to the module)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
    for old, pkg in MOVED.items():
        module = sys.modules.get(f"{package}.{pkg}.{old}")
        if module is not None:
            sys.modules.setdefault(f"{package}.{old}", module)
