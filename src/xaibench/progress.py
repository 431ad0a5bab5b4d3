"""Progress for long steps that reads well both on a terminal and in a job's log file.

On a terminal: a tqdm bar, redrawn at most once a second. Without one (a Snakemake job writing to
`results/logs/...`): no bar redraws, which would pile up as carriage-return-separated copies of the
bar (about 110 KB per training log), but one line when the step ends, with its count, time and
any figures the step reported (`Progress.note`).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty()


class Progress:
    """Iterate like tqdm: `for i in Progress(range(n), "train epoch 1/12"): ...; bar.note(loss=0.3)`."""

    def __init__(self, iterable=None, desc: str = "", unit: str = "it", total: int | None = None):
        self.desc, self.unit, self.notes = desc, unit, {}
        self.bar = tqdm(iterable, desc=desc, unit=unit, total=total, mininterval=1, disable=not interactive())
        self.count, self.start = 0, time.perf_counter()

    def __iter__(self):
        for item in self.bar:
            yield item
            self.count += 1
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.bar.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        self.bar.update(n)

    def note(self, **figures) -> None:
        """Figures shown beside the bar (refreshed with it) and on the closing line."""
        self.notes = {k: f"{v:.3f}" if isinstance(v, float) else v for k, v in figures.items()}
        self.bar.set_postfix(self.notes, refresh=False)

    def close(self) -> None:
        if self.bar.disable and self.start is not None:
            extra = "".join(f", {k} {v}" for k, v in self.notes.items())
            print(f"{self.desc}: {self.count} {self.unit} in {time.perf_counter() - self.start:.1f}s{extra}", flush=True)
        self.start = None
        self.bar.close()
