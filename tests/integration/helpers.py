"""Helpers for integration tests: copy the workflow somewhere temporary and run it for real."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from xaibench import config

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = ["Snakefile", "rules", "report", "params.yaml", "presets", "profiles", "dvc.yaml", "Makefile", "src",
            "data/raw/README.md", "data/external/README.md", "plugins/README.md"]


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str))
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def venv_make(target: str, *args: str) -> list[str]:
    """`make <target>` using the environment the tests run in instead of building a new .venv."""
    venv = shutil.which("python").rsplit("/bin/", 1)[0]
    return ["make", target, f"VENV={venv}", "-o", f"{venv}/.installed", *args]


def copy_workflow(dest: Path, preset: str | None = "presets/smoke.yaml") -> Path:
    """The workflow files in `dest`; with a preset, it is merged into dest/params.yaml (as DVC reads that file)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    if preset:
        merged = config.deep_merge(config.read_yaml(REPO / "params.yaml"), config.read_yaml(REPO / preset))
        merged.pop("run", None)  # the preset is this copy's default run (results/, as DVC reads it)
        (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return dest


def jobs_of(dry_run_output: str) -> dict[str, int]:
    """Job counts per rule from the 'Job stats' table of a Snakemake (dry) run."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
    return counts
