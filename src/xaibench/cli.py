"""`xaibench` command line: one subcommand per pipeline step.

Each step reads the settings either from params.yaml (+ presets), for use by hand, or from the
`--config` JSON the Snakefile passes so that Snakemake's params trigger sees every value.
"""
from __future__ import annotations

import argparse
import sys
import time

from .plugins import PluginError

try:
    from . import catalog, config, paths, steps
except PluginError as _exc:  # a broken or clashing plugin: one line, before any step runs
    sys.exit(f"xaibench: error: {_exc}")

EPILOG = """steps, in pipeline order:
  prepare   write data/prepared/{dataset}/{split}.npz + meta.json
  train     write results/models/{dataset}/{variant}/seed{seed}/ (model.pt, history.csv, summary.json)
  explain   write results/explanations/{dataset}/{variant}/seed{seed}/{method}/{split}.npz
  generate  write results/prototypes/{dataset}/{variant}/seed{seed}.npz + .png (paper B)
  measure   write per-image rows of one metric family for one model (or all seeds of a variant)
  aggregate combine per-model rows into the tidy results/metrics/{dataset}/{family}.csv
  claims    test every paper's claim: results/claims.csv (verdicts) and results/validity.csv
  leaderboard  every (variant, explainer) pair x each family's headline: results/leaderboard/{dataset}.csv, .md
  summary   headline numbers (verdicts, claim effects, accuracies) into results/summary.json (DVC
            metrics) and every family's numbers into results/metrics_summary.json
  discrimination  print a family's oracle-minus-chance index per metric from per-image rows (not a rule)
  figures   draw results/figures/{dataset}/ from the tidy tables only

The whole pipeline is `snakemake --cores all` (or `xaibench run`, which checks presets and targets
first); these steps are what its rules call."""


VARIANT_HELP = ("training variant: " + ", ".join(catalog.VARIANTS)
                + ", or the name of an external model (settings models.external)")


def _settings(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings")
    g.add_argument("--params", default="params.yaml", help="settings file (default: params.yaml)")
    g.add_argument("--preset", action="append", default=[], help="overlay file(s) merged on top, e.g. presets/smoke.yaml")
    g.add_argument("--config", help="full settings as JSON (what the Snakefile passes); overrides --params")
    g.add_argument("--device", help="override `device` (auto, cpu, cuda, cuda:N)")
    g.add_argument("--threads", type=int, help="torch CPU threads for this step (training uses train.threads)")


def _load(args) -> dict:
    """The step's settings slice (its spec, xaibench/steps.py): from the rule's --config JSON, or from
    params.yaml (+ presets) by hand; the same slice and seeds either way."""
    if args.config:  # a rule's job: Snakemake already runs it in the run's folder
        cfg = config.from_json(args.config)
    else:
        cfg = config.load(args.params, args.preset)
        if cfg["run"] != "default":  # by hand with a named run's preset: work where its jobs work
            import os
            paths.run_dir(cfg["run"]).mkdir(parents=True, exist_ok=True)
            os.chdir(paths.run_dir(cfg["run"]))
            cfg = config.rebase_inputs(cfg, paths.run_dir(cfg["run"]))
    if args.device:
        cfg["device"] = args.device
    job = {k: getattr(args, k) for k in ("dataset", "variant", "seed", "family", "method")
           if getattr(args, k, None) is not None}
    job = {{"family": "families", "method": "methods"}.get(k, k): v for k, v in job.items()}
    if args.command == "measure" and job.get("seed", -1) < 0:
        job.pop("seed", None)
    if "variant" in job and job["variant"] not in catalog.VARIANTS:  # the settings may add external models
        raise ValueError(f"--variant {job['variant']}: not a training variant nor a models.external name; "
                         f"choose from: {', '.join(catalog.VARIANTS)}")
    return steps.settings(args.command, cfg, **job)


def cmd_prepare(args, cfg):
    from .data import prepare
    meta = prepare(args.dataset, cfg["data"], args.out or paths.prepared(args.dataset))
    print(f"prepared {args.dataset}: " + ", ".join(f"{k}={v}" for k, v in meta["splits"].items()))


def cmd_train(args, cfg):
    from .training import train_variant
    out = args.out or paths.model_dir(args.dataset, args.variant, args.seed)
    summary = train_variant(cfg, paths.prepared(args.dataset), args.variant, args.seed, out, cfg["device"])
    print(" ".join(f"{k}={v:.3f}" for k, v in summary.items() if isinstance(v, float)))


def cmd_explain(args, cfg):
    from . import explain
    from .data import read_split
    from .training.fit import load_trained, resolve_device
    device = resolve_device(cfg["device"])
    model, _ = load_trained(cfg, args.dataset, args.variant, args.seed, device)
    split = read_split(paths.prepared(args.dataset), args.split)
    for method in args.method:  # a layer option the model lacks: refused before any file is written
        explain.check_layer(model, method, cfg["explain"]["options"].get(method, {}),
                            f"{args.dataset}/{args.variant}/seed{args.seed}")
    for method in args.method:
        arrays = explain.explain_split(model, split, method, cfg["explain"]["target"], cfg["explain"]["batch_size"],
                                       device, options=cfg["explain"]["options"].get(method, {}))
        explain.save(paths.explanation(args.dataset, args.variant, args.seed, method, args.split), arrays)


def cmd_generate(args, cfg):
    """Paper B: every featviz method's image per class for one model, as .npz and a classes × methods grid."""
    from . import featviz
    from .data import read_meta
    from .io import save_npz
    from .training.fit import load_trained, resolve_device
    device = resolve_device(cfg["device"])
    meta = read_meta(paths.prepared(args.dataset))
    model, _ = load_trained(cfg, args.dataset, args.variant, args.seed, device)
    arrays = featviz.generate_prototypes(cfg, model, meta, args.seed)
    save_npz(paths.prototypes(args.dataset, args.variant, args.seed), **arrays)
    featviz.draw_grid(arrays, paths.prototypes(args.dataset, args.variant, args.seed, "png"),
                      title=f"{args.dataset} / {args.variant} / seed {args.seed}: generated images "
                            "(rows: class; red frame: not classified as its class)")
    hits = {m: int((arrays[f"{m}_logits"].argmax(1) == range(len(meta["classes"]))).sum()) for m in arrays["methods"]}
    print(" ".join(f"{m}: {n}/{len(meta['classes'])} classified as their class" for m, n in hits.items()))


def cmd_measure(args, cfg):
    from . import metrics
    from .io import atomic_path
    from .training.fit import resolve_device
    scopes = {catalog.FAMILIES[f]["scope"] for f in args.family}
    if len(scopes) > 1:
        raise ValueError(f"families {args.family} mix scopes {sorted(scopes)}; measure them in separate calls")
    per_model = scopes == {"model"}
    if not per_model:  # the DAG runs a family spanning seeds only where it scores the variant
        reason = catalog.why_not_scored(cfg, args.family[0], args.variant)
        if reason:
            raise ValueError(f"{reason}; nothing to measure")
    seeds = [args.seed] if per_model else steps.seeds(cfg, args.variant)
    ctx = metrics.Context(cfg, args.dataset, args.variant, seeds, resolve_device(cfg["device"]))
    unit = f"seed{args.seed}" if per_model else "seeds"
    for family in args.family:
        start = time.perf_counter()
        frame = metrics.run(family, ctx)
        with atomic_path(paths.measure_unit(args.dataset, family, args.variant, unit)) as tmp:
            frame.to_parquet(tmp, index=False)
        print(f"{family} {args.variant} {unit}: {len(frame)} rows in {time.perf_counter() - start:.1f}s", flush=True)


def cmd_aggregate(args, cfg):
    """Combine per-model rows into one tidy table per family (the family is read off each path); a
    family without rows (e.g. stability when no variant has two seeds) gets an empty table."""
    from collections import defaultdict
    from pathlib import Path

    import pandas as pd

    from .io import atomic_path, read_table, save_csv
    from .tidy import COLUMNS, aggregate
    by_family = defaultdict(list)
    for path in map(Path, args.inputs):
        by_family[path.parent.parent.name].append(read_table(path))
    for family in sorted(set(args.family or []) | set(by_family)):
        frames = by_family.get(family, [])
        save_csv(paths.metric_table(args.dataset, family), aggregate(frames) if frames else pd.DataFrame(columns=COLUMNS))
        with atomic_path(paths.metric_table(args.dataset, family, "parquet")) as tmp:
            (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)).to_parquet(tmp, index=False)
        print(f"{paths.metric_table(args.dataset, family)}: {sum(map(len, frames))} per-image rows")


def cmd_discrimination(args, cfg):
    """Print (and with --out save) each metric's discrimination index: oracle minus chance, oriented,
    with a bootstrap CI over images, from per-image rows of one family (metrics/discrimination.py)."""
    import pandas as pd

    from .io import read_table, save_csv
    from .metrics.discrimination import discrimination_table
    rows = pd.concat([read_table(p) for p in args.inputs], ignore_index=True)
    table = discrimination_table(rows, catalog.FAMILIES[args.family]["metrics"], seed=args.bootstrap_seed)
    if args.out:
        save_csv(args.out, table)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 500):
        print(table.drop(columns="per_seed").round(4).to_string(index=False))


def cmd_claims(args, cfg):
    """Compute the claims table (--compute) or read it, print it; optionally paste it into a document."""
    from pathlib import Path

    from . import claims
    from .io import atomic_path, read_table, save_csv
    if args.compute:
        table, checks = claims.compute(cfg)
        save_csv(args.out, table)
        save_csv(args.validity, checks)
    else:
        table = read_table(args.out)
    print(claims.terminal(table), end="")
    for path in map(Path, args.into or []):
        text = claims.replace_block(path.read_text(), claims.markdown(table), str(path))
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        print(f"{path}: claims table updated")


def cmd_leaderboard(args, cfg):
    """Compute the leaderboard (--compute) or read it, and print it; or lay two runs' CSVs side by side."""
    from . import leaderboard as lb
    from .io import atomic_path, save_csv
    if args.compare:
        print(lb.compare(*(lb.read(p) for p in args.compare), names=args.compare, width=args.width), end="")
        return
    for dataset in [args.dataset] if args.dataset else cfg["datasets"]:
        if args.compute:
            cells = lb.compute(cfg, dataset)
            save_csv(paths.leaderboard(dataset), cells)
            with atomic_path(paths.leaderboard(dataset, "md")) as tmp:
                tmp.write_text(lb.markdown(cells, cfg))
        else:
            cells = lb.read(paths.leaderboard(dataset))
        print(lb.terminal(cells, args.width), end="")


def cmd_summary(args, cfg):
    from .claims import headline
    from .io import read_table, save_json
    from .metrics import summarize
    save_json(args.out, headline(cfg, read_table(args.claims)))
    detail = summarize(cfg)
    save_json(args.detail, detail)
    for dataset, variants in detail.items():  # one warning line per model that fails the learnability gate
        for variant, node in variants.items():
            for seed, verdict in node.get("gate", {}).items():
                if not verdict["passed"]:
                    print(f"warning: {dataset}/{variant}/{seed} fails the learnability gate: {verdict['reason']}")
    print(f"{args.out}: verdicts and headline numbers; {args.detail}: every family's numbers "
          f"({', '.join(cfg['datasets'])})")


def cmd_figures(args, cfg):
    from .figures import draw
    for path in draw(cfg, args.dataset, args.only):
        print(path)


# What to do about a file-system error, by errno name.
OS_ADVICE = {"EACCES": "not permitted; fix the permissions of the file or folder",
             "EPERM": "not permitted; fix the permissions of the file or folder",
             "EROFS": "read-only file system; run where you can write",
             "ENOSPC": "no space left on the device; free some and rerun",
             "EDQUOT": "disk quota exceeded; free some and rerun",
             "EISDIR": "is a folder, a file was expected",
             "ENOTDIR": "a path component is a file, a folder was expected",
             "EEXIST": "exists and is not a folder; move it away",
             "ENOENT": "not found"}


def one_line(exc: BaseException) -> str:
    """The message for the user: one line naming the file or key and what to do, never a traceback.

    Our own errors already say that; errors raised by the OS or by libraries get the file name and
    a fix added here.
    """
    import errno
    if isinstance(exc, ImportError):
        return (f"Python package '{exc.name or exc}' is missing or broken in this environment; "
                "install the project (`make test`, or `pip install -e .`)")
    if isinstance(exc, KeyError):
        msg = f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    elif isinstance(exc, OSError) and exc.filename is not None:
        code = errno.errorcode.get(exc.errno or 0, "")
        msg = f"{exc.filename}: {OS_ADVICE.get(code, exc.strerror or type(exc).__name__)}"
    else:
        msg = str(exc) or type(exc).__name__
    lines = [line.strip() for line in msg.strip().splitlines() if line.strip()]
    return lines[0] + (" (...)" if len(lines) > 1 else "") if lines else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xaibench", description="Train, explain and score CNN image classifiers.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    def step(name, fn, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        _settings(p)
        return p

    p = step("prepare", cmd_prepare, "generate or import a dataset into the prepared-split format")
    p.add_argument("--dataset", required=True, choices=list(catalog.DATASETS))
    p.add_argument("--out", help="output folder (default data/prepared/{dataset})")
    p = step("train", cmd_train, "train one model (resumes from its last epoch checkpoint); "
             "lap_plugin fine-tunes the trained standard model of the same seed")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True, help=VARIANT_HELP)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--out", help="output folder (default results/models/{dataset}/{variant}/seed{seed})")
    p = step("explain", cmd_explain, "explain one model's decisions on one split with one or more methods "
             "(options from explain.options.{method})")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True, help=VARIANT_HELP)
    p.add_argument("--method", required=True, action="append", choices=list(catalog.EXPLAINERS),
                   help="explainer (repeatable)")
    p.add_argument("--split", required=True)
    p.add_argument("--seed", required=True, type=int)
    p = step("generate", cmd_generate, "paper B: generate one image per class with every featviz method "
             "(prototype, fourier_fv, pixel_ascent) for one model; options from featviz.options.{method}")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True, help=VARIANT_HELP)
    p.add_argument("--seed", required=True, type=int)
    p = step("measure", cmd_measure, "compute metric families for one model (or every seed of a variant)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True, help=VARIANT_HELP)
    p.add_argument("--family", required=True, action="append", choices=list(catalog.FAMILIES),
                   help="metric family (repeatable, same scope)")
    p.add_argument("--seed", type=int, default=-1, help="model seed (ignored by families that span seeds)")
    p = step("aggregate", cmd_aggregate, "combine per-model metric rows into one tidy table per family")
    p.add_argument("--dataset", required=True)
    p.add_argument("--family", action="append", choices=list(catalog.FAMILIES),
                   help="family whose table to write even without rows (repeatable)")
    p.add_argument("inputs", nargs="*", help="per-model .parquet files written by `measure` "
                   "(results/metrics/{dataset}/{family}/{variant}/{unit}.parquet)")
    p = step("discrimination", cmd_discrimination, "can a family's test separate its oracle map from chance? "
             "the discrimination index per metric, with a bootstrap CI, from per-image rows")
    p.add_argument("--family", required=True, choices=list(catalog.FAMILIES))
    p.add_argument("--out", help="also write the table to this CSV")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("inputs", nargs="+", help="per-image .parquet files of that family written by `measure` or `aggregate`")
    p = step("claims", cmd_claims, "print the verdicts on the papers' claims (catalog.CLAIMS); with --compute, "
             "test them first on the tidy tables and the models' summaries")
    p.add_argument("--compute", action="store_true", help="compute the table (else read it from --out)")
    p.add_argument("--out", default="results/claims.csv")
    p.add_argument("--validity", default="results/validity.csv", help="with --compute: every test's validity")
    p.add_argument("--into", action="append", help="a markdown file whose block between <!-- claims:start --> and "
                   "<!-- claims:end --> gets the table (repeatable), e.g. docs/results.md")
    p = step("leaderboard", cmd_leaderboard, "print the leaderboard (every variant x explainer pair against each "
             "family's headline metric); with --compute, compute it first from the tidy tables")
    p.add_argument("--dataset", help="one dataset (default: every configured one)")
    p.add_argument("--compute", action="store_true", help="compute results/leaderboard/{dataset}.csv and .md first")
    p.add_argument("--compare", nargs=2, metavar=("A.csv", "B.csv"), help="lay two leaderboards (e.g. of two runs) "
                   "side by side: each cell's value in both and the difference")
    p.add_argument("--width", type=int, default=100, help="terminal columns (default 100)")
    p = step("summary", cmd_summary, "headline numbers as JSON for `dvc metrics show` (verdicts, claim effects, "
             "accuracies) and every family's mean and sd over seeds in a second file")
    p.add_argument("--out", default="results/summary.json")
    p.add_argument("--claims", default="results/claims.csv", help="the claims table it reads")
    p.add_argument("--detail", default="results/metrics_summary.json")
    p = step("figures", cmd_figures, "draw figures of a dataset from its tidy tables (never touches a model)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--only", action="append", choices=list(catalog.FIGURES),
                   help="figure name (repeatable); default: all this config can draw")
    # Listed for --help only: main() hands `run` to xaibench.workflow, which parses its own arguments.
    sub.add_parser("run", help="run the workflow (Snakemake) after checking presets, settings and targets; "
                   "`xaibench run --help`", add_help=False)
    return parser


def _keep_freed_memory() -> None:
    """Let glibc keep freed tensor memory for the next batch instead of handing each block back.

    By default every block above a moving threshold is mmap'ed and unmapped on free, so each batch's
    tensors page-fault afresh: 5-10% of a training or measure job went to system time (measured on
    2 CPU cores). Only where memory comes from changes, not a number. No-op off glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MB (glibc's maximum) from the heap
    mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap in the process


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _keep_freed_memory()
    if argv[:1] == ["run"]:
        from .workflow import main as run
        return run(argv[1:])
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        cfg = _load(args)
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        args.fn(args, cfg)
    except KeyboardInterrupt:
        print(f"xaibench {args.command}: interrupted; rerun the same command (training resumes)", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, KeyError, OSError, ImportError) as exc:
        print(f"xaibench {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"xaibench {args.command}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
