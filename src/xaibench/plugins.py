"""Installed plugins: catalog entries that other packages add, found through entry points.

A package adds explainers, training variants, metric families, datasets, figures or architectures
without editing xaibench: it declares an entry point in the group `xaibench.plugins` naming a
torch-free module that holds `CATALOG = {"EXPLAINERS": {name: entry}, "FAMILIES": {...}, ...}`.
Each entry is written as a built-in one (`xaibench.catalog`), and its `module` (the implementation,
which registers the name with the kind's registry, e.g. `@xaibench.explain.register(name)`) is
imported only when a job asks for the name. So the catalog merges plugins when it loads and the
Snakefile still plans without importing torch.

Torch-free, like the catalog.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

GROUP = "xaibench.plugins"
SECTIONS = ("DATASETS", "ARCHITECTURES", "VARIANTS", "EXPLAINERS", "FAMILIES", "FIGURES")


class PluginError(RuntimeError):
    """An installed plugin cannot be used (it fails to import, or a name clashes); the message is one
    line naming the distribution and the entry point."""


@dataclass(frozen=True)
class Plugin:
    dist: str  # the distribution (what `pip uninstall` takes)
    entry: str  # "name = module", as in its entry_points.txt
    files: tuple[str, ...]  # its package's source files: hashed into the jobs that use its names


def _source_files(module: str) -> tuple[str, ...]:
    """The .py files of the top-level package of `module` (a changed file reruns what uses the plugin)."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or spec.origin is None:
        return ()
    if spec.submodule_search_locations:
        return tuple(sorted(str(p) for d in spec.submodule_search_locations for p in Path(d).rglob("*.py")))
    return (spec.origin,)


def _caption(module: str, caption: str, where: str) -> str:
    """A plugin figure's caption file, relative to its catalog module's folder, as an absolute path."""
    spec = importlib.util.find_spec(module)
    path = Path(spec.origin).parent / caption if spec and spec.origin else Path(caption)
    if not path.is_file():
        raise PluginError(f"{where}: caption file {path} not found (ship it as package data)")
    return str(path.resolve())


def load(sections: dict[str, dict]) -> dict[tuple[str, str], Plugin]:
    """Merge every installed plugin's CATALOG into `sections` (name -> the catalog's dict, updated in
    place so registries built on them see the entries); return who added what.

    Raises PluginError when a plugin fails to import, has no usable CATALOG, or adds a name that is
    built in or added by another plugin."""
    owners: dict[tuple[str, str], Plugin] = {}
    found = sorted(metadata.entry_points(group=GROUP), key=lambda ep: (ep.name, ep.value))
    for ep in found:
        dist = ep.dist.name if ep.dist else "?"
        where = f"plugin {dist} (entry point '{ep.name} = {ep.value}' in group {GROUP})"
        try:
            catalog = getattr(ep.load(), "CATALOG")
        except Exception as exc:  # any error of foreign code: named, one line
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise PluginError(f"{where}: import failed: {type(exc).__name__}: {reason}; "
                              f"fix it or `pip uninstall {dist}`") from None
        unknown = sorted(set(catalog) - set(SECTIONS)) if isinstance(catalog, dict) else ["(not a dict)"]
        if unknown:
            raise PluginError(f"{where}: CATALOG has sections {unknown}; allowed: {', '.join(SECTIONS)}")
        plugin = Plugin(dist, f"{ep.name} = {ep.value}", _source_files(ep.value))
        for section, entries in catalog.items():
            for name, entry in entries.items():
                other = owners.get((section, name))
                if other or name in sections[section]:
                    by = f"plugin {other.dist}" if other else "a built-in"
                    raise PluginError(f"{where}: {section} entry '{name}' clashes with {by}; rename it")
                if not isinstance(entry, dict) or not entry.get("module"):
                    raise PluginError(f"{where}: {section} entry '{name}' must be a dict naming its 'module'")
                if section == "FIGURES" and entry.get("caption"):
                    entry["caption"] = _caption(ep.value, entry["caption"], f"{where}: FIGURES entry '{name}'")
                owners[(section, name)] = plugin
        for section, entries in catalog.items():
            sections[section].update(entries)
    return owners


def files(owners: dict[tuple[str, str], Plugin], **names) -> list[str]:
    """Source files of the plugins that add any of `names` (section in lower case -> names, e.g.
    `explainers=["grad_power"]`): hashed into a rule's `code` param, so a changed plugin reruns exactly its jobs."""
    wanted = {(section.upper(), n) for section, group in names.items() for n in group}
    return sorted({f for key, p in owners.items() if key in wanted for f in p.files})

