"""One registry pattern for every kind of extension (the timm pattern, with the catalog as index).

`xaibench.catalog` lists, as plain torch-free data, every name the DAG may plan with and the module
that implements it. A `Registry` maps those names to implementations: the implementing module
registers its object with `@REG.register("name")` and is imported lazily, the first time the name is
asked for. So adding an explainer, variant, loss, family, figure or dataset is one new module plus
one catalog line, and nothing has to import a module just to make its decorator run.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable, Mapping


def closest(name: str, names: Iterable[str], n: int = 5) -> str:
    """The `n` names most like `name`, comma-separated: what an error about an unknown name offers
    when the choices are too many to list (a model's module names)."""
    return ", ".join(difflib.get_close_matches(name, list(names), n=n, cutoff=0)) or "(none)"


class Registry:
    """name -> object; refuses duplicates; one-line errors that name the choices."""

    def __init__(self, kind: str, index: Mapping[str, Mapping] | None = None):
        self.kind = kind
        self.index = index  # catalog section: name -> {"module": ..., ...}; None = no catalog
        self._objects: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Callable:
        """`@REG.register("name")` on a function/class, or `REG.register("name", obj)`."""
        def deco(target):
            if name in self._objects:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if self.index is not None and name not in self.index:
                raise ValueError(f"{self.kind} '{name}' is not listed in xaibench.catalog; add its entry there")
            self._objects[name] = target
            return target

        return deco if obj is None else deco(obj)

    def names(self) -> list[str]:
        return sorted(self.index if self.index is not None else self._objects)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> Any:
        if name not in self._objects:
            if name not in self:
                raise ValueError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
            module = self.index[name].get("module")
            if module:
                importlib.import_module(module)
            if name not in self._objects:
                raise ValueError(f"{self.kind} '{name}': module {module!r} did not register it")
        return self._objects[name]

    def info(self, name: str) -> Mapping:
        """The catalog entry of `name` (its plain-data description)."""
        if self.index is None or name not in self.index:
            raise ValueError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
        return self.index[name]
