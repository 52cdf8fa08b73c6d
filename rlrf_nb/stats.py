"""Small statistics: every rate and mean comes with a 95% interval, from one mean (:func:`mean`) and one bootstrap
(:func:`resamples`, :func:`bootstrap`, :func:`percentile_ci`, :func:`bootstrap_ci`) used everywhere (results table,
paired tests, FactScore, Just-Eval, the diagnosis), so the same data gets the same interval wherever it is shown.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np


def wilson_ci(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (better than the normal one near 0 and 1)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(successes: int, n: int) -> dict:
    """``{"rate", "ci_low", "ci_high", "n", "k"}`` for k successes out of n."""
    lo, hi = wilson_ci(successes, n)
    return {"rate": successes / n if n else math.nan, "ci_low": lo, "ci_high": hi, "n": n, "k": successes}


def pct(r: dict) -> str:
    """``"8.8% [7.7, 10.2]"`` for a :func:`rate` dict (``"n/a"`` with no items)."""
    return f"{100 * r['rate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]" if r["n"] else "n/a"


def format_rate(r: dict) -> str:
    """``"34.2% [30.1, 38.5] (171/500)"``."""
    return f"{pct(r)} ({r['k']}/{r['n']})" if r["n"] else "n/a (0 items)"


def signed(x: float | None) -> str:
    """``+0.012``, or ``n/a`` for a missing value (results.json holds a NaN as null: nothing to compare)."""
    return "n/a" if x is None else f"{x:+.3f}"


# ---------------------------------------------------------------------------------------------- mean and bootstrap

def mean(xs: Sequence[float]) -> float:
    """The arithmetic mean; NaN for no values."""
    return sum(xs) / len(xs) if len(xs) else math.nan


def resamples(n: int, n_boot: int, seed: int) -> Iterator[list[int]]:
    """The item indices of ``n_boot`` bootstrap resamples of ``n`` items (each ``n`` draws with replacement), from a
    ``random.Random(seed)``: the same seed gives the same resamples, whatever statistic is computed on them."""
    rng = random.Random(seed)
    for _ in range(n_boot):
        yield [rng.randrange(n) for _ in range(n)]


@functools.lru_cache(maxsize=4)
def _resample_matrix(n: int, n_boot: int, seed: int) -> np.ndarray:
    """:func:`resamples` as an ``[n_boot, n]`` index array, kept for the next statistic on as many items with the same
    seed (a results table bootstraps every model and metric over the same 500 items and seed)."""
    out = np.array(list(resamples(n, n_boot, seed)), dtype=np.int32)
    out.setflags(write=False)
    return out


def bootstrap(items: Sequence, stat: Callable = mean, n_boot: int = 2000, seed: int = 0) -> list:
    """``stat`` of each of ``n_boot`` seeded resamples of ``items`` (:func:`resamples`); [] when there are none.

    For :func:`mean` over numbers the resampled means come from one numpy gather and a running sum along each
    resample (``cumsum`` adds left to right, as ``sum`` does), so they are bit for bit the pure-Python ones, about
    100x faster."""
    if not len(items):
        return []
    idx = _resample_matrix(len(items), n_boot, seed)
    if stat is mean and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        sums = np.cumsum(np.asarray(items, dtype=np.float64)[idx], axis=1)[:, -1]
        return [float(t) / len(items) for t in sums]
    return [stat([items[i] for i in row]) for row in idx.tolist()]


def percentile_ci(samples: Sequence[float], alpha: float = 0.05) -> tuple[float, float]:
    """The ``alpha/2`` and ``1 - alpha/2`` percentiles of bootstrap ``samples``, NaN ones left out (a resample in
    which a statistic is undefined): the sorted samples at ranks ``floor(alpha/2 * (m-1))`` and
    ``ceil((1-alpha/2) * (m-1))``. (NaN, NaN) when no sample is a number."""
    xs = sorted(x for x in samples if x == x)
    if not xs:
        return math.nan, math.nan
    m = len(xs)
    return xs[int(math.floor(alpha / 2 * (m - 1)))], xs[int(math.ceil((1 - alpha / 2) * (m - 1)))]


def bootstrap_ci(values: Sequence[float | None], stat: Callable = mean, n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> dict:
    """Percentile bootstrap interval of ``stat`` over items: ``{"value", "ci_low", "ci_high", "n"}``.
    None values (e.g. a parse failure) are dropped and not counted in ``n``."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    lo, hi = percentile_ci(bootstrap(xs, stat, n_boot, seed), alpha)
    return {"value": stat(xs), "ci_low": lo, "ci_high": hi, "n": len(xs)}
