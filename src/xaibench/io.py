"""Atomic, deterministic file writing.

Every output goes to a temporary name in the same directory and is renamed into place, so an
interrupted step never leaves a half-written file that a later step would trust.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import zipfile
import zlib
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
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: corrupt or not an .npz file ({first_line(exc)}); {DELETE}") from None


def _readable(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found (run the step that produces it first)")


DELETE = "delete it and rerun its step"  # the fix for a damaged output: its step makes it again


def read_text(path: str | Path, what: str = "file", fix: str = DELETE) -> str:
    """A text file's content; a file that is not UTF-8 text is one error naming it and `fix`."""
    path = Path(path)
    _readable(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); {fix}") from None


def load_json(path: str | Path):
    """Read a JSON file, with one clear error naming it if it is missing or corrupt."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc}); {DELETE}") from None


def read_table(path: str | Path, columns=(), **read_csv):
    """Read a table (.parquet, or CSV/TSV with `read_csv` options) with pandas, naming the file if it
    is missing, corrupt, or lacks one of `columns` (a damaged CSV often parses as one odd column)."""
    import pandas as pd
    path = Path(path)
    _readable(path, "table")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, **{"keep_default_na": False, "na_values": [""], **read_csv})
    except (ValueError, OSError) as exc:  # pyarrow, pandas parser and decoding errors are ValueErrors
        raise ValueError(f"{path}: corrupt table ({type(exc).__name__}); {DELETE}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not the expected table (no column {', '.join(missing)}); {DELETE}")
    return frame


def _shared_strings(obj):
    """Plain containers rebuilt with interned strings. Pickle writes a repeated string once and then
    refers back to it only if it is the same object, so without this the bytes depend on where a
    value came from (a resumed run's history rows, read back from its checkpoint, carry their own
    copies of the column names). Other objects (tensors, state dicts) are kept as they are."""
    if type(obj) is str:
        return sys.intern(obj)
    if type(obj) is dict:
        return {_shared_strings(k): _shared_strings(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_shared_strings(v) for v in obj)
    return obj


def save_torch(path: str | Path, obj) -> None:
    """torch.save, byte-identical for equal objects however they were made. torch names the zip
    archive's root folder after the file it writes, so we save to a buffer (root `archive`) and write
    its bytes atomically; its `.data/serialization_id` record is derived from the records' CRC-32s,
    so it follows the content (torch.utils.serialization.config.save.compute_crc32, on by default)."""
    import torch
    buf = io.BytesIO()
    torch.save(_shared_strings(obj), buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_torch(path: str | Path, what: str = "checkpoint", keys=(), fix: str = DELETE, weights_only: bool = False,
               map_location="cpu"):
    """torch.load with one error naming the file: torch's own ("PytorchStreamReader failed reading
    zip archive ...") names none. `keys` must be in the loaded dict (else it is not our file)."""
    import torch
    path = Path(path)
    _readable(path, what)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=weights_only)
        missing = [k for k in keys if k not in obj]
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError, UnpicklingError, ... for a damaged file
        raise ValueError(f"{path}: corrupt or not a {what} ({type(exc).__name__}: {first_line(exc)}); {fix}") from None
    if missing:
        raise ValueError(f"{path}: not a {what} (no {', '.join(map(repr, missing))}); {fix}")
    return obj


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:160]


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
