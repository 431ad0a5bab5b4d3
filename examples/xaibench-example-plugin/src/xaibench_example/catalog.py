"""What this plugin adds, as xaibench.catalog entries (plain data, no torch: the Snakefile reads it).

Each entry is written as a built-in one; `module` is imported only when a job asks for the name.
"""
CATALOG = {
    "EXPLAINERS": {
        # options: every keyword option with its default (what explain.options.grad_power may set)
        "grad_power": {"module": "xaibench_example.explainers", "options": {"power": 2.0}},
    },
    "FAMILIES": {
        # scope model: once per trained model; maps positive: scored on each map's positive part
        "peak_share": {"scope": "model", "needs": ["explanations"], "maps": "positive", "paper": "example",
                       "module": "xaibench_example.metrics", "metrics": {"peak_share": "none"}},
    },
    "FIGURES": {
        # needs: the tables it reads; caption: its report caption, relative to this file (package data)
        "peak_share": {"module": "xaibench_example.figures", "needs": ["peak_share"],
                       "caption": "captions/peak_share.rst"},
    },
}
