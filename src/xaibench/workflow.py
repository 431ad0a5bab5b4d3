"""`xaibench run`: the workflow with its command line checked first.

A mistyped preset or target reaches a plain `snakemake` user as a traceback or an exception name
(`FileNotFoundError: ... 'presets/nope.yaml'`, `MissingRuleException`). This thin wrapper checks the
presets (presets/NAME.yaml or a path), the settings they give and the targets, says what is wrong
in one line per mistake, and only then runs `python -m snakemake` with everything else forwarded.
`snakemake` itself stays usable directly; this adds nothing it would need.
"""
from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

from . import config

PHASES = ["all", "prepare", "train", "explain", "generate", "measure", "figures"]  # the Snakefile's targets
OUTPUT_ROOTS = ("data/prepared/", "results/")  # where every file the workflow makes lives (xaibench.paths)
CORE_OPTIONS = ("-c", "--cores", "-j", "--jobs", "--profile")  # Snakemake options that settle the cores

USAGE = """xaibench run [--preset NAME ...] [--cores N] [TARGET ...] [SNAKEMAKE FLAGS] [-- SNAKEMAKE ARGS]

targets: all (default), prepare, train, explain, generate, measure, figures, or a file under
data/prepared/ or results/. Flags such as -n or -p go to Snakemake as they are; put Snakemake options
that take a value after `--` (e.g. `-- --forcerun train_model`)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xaibench run", usage=USAGE, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="settings overlay: presets/NAME.yaml or a path (repeatable, merged in order)")
    p.add_argument("--cores", help="cores Snakemake may use (default: all, unless the Snakemake arguments set it)")
    p.add_argument("targets", nargs="*", help="what to make (default: all)")
    return p


def preset_path(name: str, root: Path = Path(".")) -> Path:
    """presets/NAME.yaml, or NAME as a path; ValueError naming both and the shipped presets."""
    for candidate in (root / "presets" / f"{name}.yaml", Path(name)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in (root / "presets").glob("*.yaml"))) or "none"
    raise ValueError(f"preset '{name}': neither presets/{name}.yaml nor a file {name} exists (presets here: {shipped})")


def check_target(target: str) -> str | None:
    """None if `target` is a phase or a path under the output folders, else what is wrong with it."""
    if target in PHASES or target.startswith(OUTPUT_ROOTS):
        return None
    if "/" in target or "." in target:
        return f"target {target}: not a file the workflow makes (its files are under {' or '.join(OUTPUT_ROOTS)})"
    close = difflib.get_close_matches(target, PHASES, n=1)
    return (f"unknown target '{target}'" + (f" (did you mean '{close[0]}'?)" if close else "")
            + f"; targets: {', '.join(PHASES)}, or a file under {' or '.join(OUTPUT_ROOTS)}; Snakemake options "
            "that take a value go after `--`")


def problems(presets: list[str], targets: list[str], root: Path = Path(".")) -> tuple[list[str], list[Path]]:
    """Every mistake of the command line, one line each, and the preset files it names."""
    errors, files = [], []
    if not (root / "Snakefile").is_file():
        return [f"{root.resolve()}: no Snakefile here; run `xaibench run` in the project folder"], []
    for name in presets:
        try:
            files.append(preset_path(name, root))
        except ValueError as exc:
            errors.append(str(exc))
    errors += [e for e in map(check_target, targets) if e]
    if not errors:
        try:
            config.load(root / "params.yaml", files)
        except config.ConfigError as exc:
            errors.append(str(exc))
    return errors, files


def command(targets: list[str], presets: list[Path], cores: str | None, forward: list[str]) -> list[str]:
    """The Snakemake command. Targets come first and the overlays are followed by an option, so no
    option taking several values (`--configfile`, `--forcerun`) swallows a target."""
    cmd = [sys.executable, "-m", "snakemake", *targets]
    if presets:
        cmd += ["--configfile", *map(str, presets)]
    if cores or not any(a.split("=")[0] in CORE_OPTIONS for a in forward):
        cmd += ["--cores", cores or "all"]
    return cmd + forward


def main(argv: list[str]) -> int:
    forward = []
    if "--" in argv:
        argv, forward = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args, flags = parser().parse_known_intermixed_args(argv)
    errors, presets = problems(args.preset, args.targets)
    for line in errors:
        print(f"xaibench run: error: {line}", file=sys.stderr)
    if errors:
        return 2
    try:
        return subprocess.run(command(args.targets, presets, args.cores, flags + forward)).returncode
    except KeyboardInterrupt:
        print("xaibench run: interrupted; rerun the same command (finished jobs are kept, training resumes)",
              file=sys.stderr)
        return 130
