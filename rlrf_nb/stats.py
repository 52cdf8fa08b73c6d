"""Small statistics used to report numbers honestly: every rate comes with a 95% interval."""

from __future__ import annotations

import math


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


def format_rate(r: dict) -> str:
    """``"34.2% [30.1, 38.5] (171/500)"``."""
    if not r["n"]:
        return "n/a (0 items)"
    return f"{100 * r['rate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] ({r['k']}/{r['n']})"
