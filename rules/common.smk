# Helpers only: the run lock, validation of the whole configuration before any job, and the glue that
# hands each rule its step spec (xaibench/steps.py: settings read, seeds, input and output files).
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from xaibench import catalog, paths, steps
from xaibench import config as settings_schema
from xaibench.data import raw_manifest


def clear_stale_locks():
    """Let a plain rerun recover from a killed run: drop Snakemake's directory locks when no other
    run of this workflow is alive.

    Every main Snakemake process holds an flock on .snakemake/xaibench-run.lock for its lifetime;
    the OS releases it when the process dies, even on SIGKILL. If we can take it, nobody else runs
    here and the locks in .snakemake/locks are left over from a crash (what `--unlock` removes).
    If another run is alive we take nothing and Snakemake's own lock check applies as usual.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: keep Snakemake's behaviour (`snakemake --unlock` after a crash)
        return None
    Path(".snakemake").mkdir(exist_ok=True)
    handle = open(".snakemake/xaibench-run.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    for stale in Path(".snakemake/locks").glob("*.lock"):
        stale.unlink(missing_ok=True)
    return handle


RUN_LOCK = clear_stale_locks() if workflow.is_main_process else None

DATASETS = config["datasets"]
VARIANTS = config["train"]["variants"]
FORMATS = config["figures"]["formats"]
FIGURES = catalog.figures_for(config)
FIGURE_PARTS = catalog.figure_parts(FIGURES)  # two jobs of about equal drawing time
MODEL_FAMILIES = steps.model_families(config)
VARIANT_FAMILIES = steps.variant_families(config)
PHASES = steps.phase_files(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    variant=r"[a-z][a-z0-9_]*",
    seed=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    split=r"[a-z][a-z0-9_]*",
    family="|".join(catalog.FAMILIES),


def spec(step, **job):
    """A rule's `params: settings=`: the JSON slice of settings `step` reads for the job (its
    wildcards plus `job`), so Snakemake's params trigger reruns exactly the jobs a change affects."""
    return lambda wildcards: steps.as_json(steps.settings(step, config, **job, **dict(wildcards.items())))


def code_version(step, **job):
    """A rule's `params: code=`: a hash of the library modules the step runs and of the plugin files
    the job runs (steps.code_version), so a changed module or plugin reruns its jobs. `job` holds the
    arguments of steps.code, each a value or a function of the wildcards."""
    def version(wildcards):
        args = {k: v(wildcards) if callable(v) else v for k, v in job.items()}
        return steps.code_version(step, workflow.basedir, tuple(steps.code(step, config, **args)))
    return version


def raw_files(dataset):
    """{"raw": content hash of the dataset's raw files} for a dataset read from raw files, else {}
    (a new param would rerun shapes' prepare for nothing)."""
    manifest = raw_manifest(dataset, config["data"])
    return {"raw": manifest} if manifest else {}


def kept(files):
    """Outputs a failing job must not lose: Snakemake backs them up instead of deleting them before
    the job and restores them if it fails (`update`); the step writes each file atomically."""
    return [update(f) for f in files] if isinstance(files, list) else update(files)
