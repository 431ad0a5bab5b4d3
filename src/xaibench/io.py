"""Atomic, deterministic file writing.

Every output goes to a temporary name in the same directory and is renamed into place, so an
interrupted step never leaves a half-written file that a later step would trust.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays like np.savez_compressed, but byte-identical for identical arrays.

    numpy stamps each zip member with the current time; we fix the timestamp so the same seed
    gives the same bytes (and DVC sees the same hash).
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz file, with one clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (run the step that produces it first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: corrupt or not an .npz file ({exc}); delete it and rerun its step") from None


def _readable(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found (run the step that produces it first)")


def load_json(path: str | Path):
    """Read a JSON file, with one clear error naming it if it is missing or corrupt."""
    path = Path(path)
    _readable(path, "file")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc}); delete it and rerun its step") from None


def read_table(path: str | Path):
    """Read a results table (.csv or .parquet) with pandas, naming the file if it is missing or corrupt."""
    import pandas as pd
    path = Path(path)
    _readable(path, "table")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pyarrow and pandas parser errors are ValueErrors
        raise ValueError(f"{path}: corrupt table ({type(exc).__name__}); delete it and rerun its step") from None


def save_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def load_explanation(path: str | Path) -> dict[str, np.ndarray]:
    """Read an explanation file; refuse maps with NaN/inf so no metric silently averages them."""
    arrays = load_npz(path)
    if "maps" not in arrays:
        raise ValueError(f"{path}: not an explanation file (no 'maps' array)")
    if not np.isfinite(arrays["maps"]).all():
        bad = int((~np.isfinite(arrays["maps"])).any(axis=(1, 2)).sum())
        raise ValueError(f"{path}: {bad} maps contain NaN or inf; rerun the explain step for it")
    return arrays
