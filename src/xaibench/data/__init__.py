"""Datasets, all written in the prepared-split format (see `store`).

A dataset is a generator function `prepare(settings, image_size, seed)` that yields
(split name, arrays) and returns its meta; it registers with `@DATASETS.register(name)` in its own
module, listed in `xaibench.catalog.DATASETS`, with its settings block under `data.{name}`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import catalog
from ..progress import Progress
from ..registry import Registry
from .store import Split, read_meta, read_split, write_meta, write_split

DATASETS = Registry("dataset", catalog.DATASETS)
BASE_SPLITS = ("train", "val", "test")


def split_names(name: str, data_cfg: dict) -> list[str]:
    """The splits `prepare` writes for dataset `name`, known without generating anything (the
    Snakefile declares one output file per split). A dataset whose settings have `n_<split>` counts
    (shapes) writes exactly the splits with a count above 0; the others write train, val and test.
    tests/unit/test_faults.py checks this against what `prepare` really writes.
    """
    counts = {k[2:]: v for k, v in data_cfg[name].items() if k.startswith("n_")}
    names = [s for s, n in counts.items() if n > 0] if counts else list(BASE_SPLITS)
    derived = catalog.DATASETS[name].get("derived_splits", {})  # e.g. shapes' nocue: test without the cue
    return names + [split for split, source in derived.items() if source in names]


def prepare(name: str, data_cfg: dict, out: str | Path) -> dict:
    """Write every split of dataset `name` under `out` plus meta.json; return the meta."""
    out = Path(out)
    size, seed = data_cfg["image_size"], data_cfg["seed"]
    gen = DATASETS.get(name)(data_cfg[name], size, seed)
    splits, digest = {}, hashlib.sha256()
    with Progress(desc=f"prepare {name}", unit="splits") as bar:
        try:
            while True:
                split, arrays = next(gen)
                write_split(out, split, arrays)
                splits[split] = int(len(arrays["labels"]))
                digest.update(arrays["images"].tobytes())
                bar.update()
        except StopIteration as stop:
            meta = stop.value
    meta.update(dataset=name, image_size=size, seed=seed, splits=splits, settings=data_cfg[name],
                has_masks="masks" in arrays, content_sha256=digest.hexdigest())
    write_meta(out, meta)
    return meta


RAW_CACHE = Path(".snakemake/xaibench/raw-hashes.json")  # local, like Snakemake's own records


def raw_manifest(name: str, data_cfg: dict, cache: str | Path | None = RAW_CACHE) -> str:
    """A content hash of the raw files dataset `name` reads: every file under the folders its
    settings name (catalog `raw` keys; hidden files and folders left out) by relative path and
    SHA-256, so adding, removing, renaming or changing an image changes it and touching one does not.
    "" for datasets without raw files (shapes, digits). A missing folder or an unreadable file counts
    as a state of its own (the prepare step names what is wrong).

    The Snakefile passes it as a param of `prepare_{dataset}`, so it is computed on every workflow
    load: file hashes are cached by (path, mtime, size) in `cache`, and a no-op run only lists and
    stats the files. (A file rewritten within the file system's mtime resolution with the same size
    keeps its cached hash: delete the cache file to rehash everything.)
    """
    keys = [k for k in catalog.DATASETS[name].get("raw", []) if data_cfg[name].get(k)]
    if not keys:
        return ""
    known = _load_cache(cache)
    fresh, digest = {}, hashlib.sha256()
    for key in keys:
        root = Path(data_cfg[name][key])
        digest.update(f"{key}:{'' if root.is_dir() else ' missing'}\n".encode())
        for rel, path in _walk(root):
            try:
                stat = os.stat(path)
                entry = known.get(path)
                if not entry or entry[:2] != [stat.st_mtime_ns, stat.st_size]:
                    entry = [stat.st_mtime_ns, stat.st_size, file_sha256(path)]
                fresh[path] = entry
                content = entry[2]
            except OSError:  # a broken link or a file we may not read
                content = "unreadable"
            digest.update(f"{rel} {content}\n".encode())
    if cache is not None and any(known.get(p) != e for p, e in fresh.items()):
        from ..io import save_json
        save_json(cache, {**known, **fresh})
    return digest.hexdigest()


def _walk(root: Path) -> list[tuple[str, str]]:
    """(path relative to `root`, absolute path) of every file under `root`, hidden ones left out, sorted."""
    base, out = os.path.abspath(root), []
    for folder, dirs, files in os.walk(base, followlinks=True):  # linked class folders are read by prepare too
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [(os.path.relpath(os.path.join(folder, f), base).replace(os.sep, "/"), os.path.join(folder, f))
                for f in files if not f.startswith(".")]
    return sorted(out)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_cache(cache) -> dict:
    """The cached hashes; {} when there is no usable cache (it is only a shortcut)."""
    try:
        data = json.loads(Path(cache).read_text())
        return data if isinstance(data, dict) else {}
    except (TypeError, OSError, ValueError):
        return {}


__all__ = ["Split", "prepare", "raw_manifest", "read_meta", "read_split", "split_names"]
