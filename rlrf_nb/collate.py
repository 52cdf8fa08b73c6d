"""Merge the ``results.json`` of many runs into one table: numbers addressed by dotted paths
(``rounds.M2.math_accuracy``, ``benchmarks.summary.M2.gsm8k_strict``; a rate record
``{"rate", "n", "k", "ci_low", "ci_high"}`` counts as its rate, lists of per-policy rows are keyed by ``policy`` and
``variant``), grouped by sweep point without the seed, with mean, standard deviation and a Student-t 95% interval
across seeds (none from a single seed: the run's own per-item intervals speak for it).
"""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path

import pandas as pd

from rlrf_nb.config import policy_rank

# The numbers a reader of the paper looks at first; ``collate(..., metrics=None)`` uses these patterns.
HEADLINE = ["m0_math_accuracy", "rounds.M*.math_accuracy", "rounds.M*.bio_claims_supported",
            "round_variants.*.M*.math_accuracy", "benchmarks.summary.*.gsm8k_strict",
            "benchmarks.summary.*.factscore.score", "benchmarks.summary.*.just_eval.*.mean",
            "reflection.refinement_beats_parent", "reflection.best_is_refinement",
            # notebook 05's per-variant test gains over M0 and their compute (issue 20's comparison)
            "benchmarks.comparison.*.*_diff", "benchmarks.comparison.*.generated_tokens",
            "benchmarks.comparison.*.wall_seconds", "benchmarks.claims.*.diff",
            # notebook 03's positive controls on test: gold SFT's and gold DPO's paired difference to M0
            "dpo.positive_controls.*.diff"]
SEED_KEYS = ("seed", "run.seed", "dpo.seed")

# Two-sided 95% Student-t quantiles t_{0.975, df}; df > 30 uses the normal 1.96 (within 4%).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def t_interval(values: list[float]) -> dict:
    """Mean, sample sd and Student-t 95% interval of ``values`` (runs or seeds); sd and the interval are NaN for one."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    half = t975(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def flatten_metrics(results: dict, prefix: str = "") -> dict[str, float]:
    """Every number of ``results`` under a dotted path (rates as their rate; policy rows keyed by policy, claim rows
    by claim)."""
    out: dict[str, float] = {}

    def walk(obj, path):
        if isinstance(obj, dict) and "rate" in obj and "n" in obj:
            if obj["rate"] is not None:
                out[path] = float(obj["rate"])
            return
        if isinstance(obj, bool) or obj is None:
            return
        if isinstance(obj, (int, float)):
            if math.isfinite(obj):
                out[path] = float(obj)
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(obj, list) and obj and all(isinstance(r, dict) and "policy" in r for r in obj):
            for r in obj:
                walk({k: v for k, v in r.items() if k not in ("policy", "variant")}, f"{path}.{r['policy']}")
        elif isinstance(obj, list) and obj and all(isinstance(r, dict) and "claim" in r for r in obj):
            for r in obj:  # notebook 05's claims, keyed by the claim
                walk({k: v for k, v in r.items() if k != "claim"}, f"{path}.{r['claim']}")
        elif isinstance(obj, list) and obj and all(isinstance(r, dict) and {"model", "measure"} <= r.keys()
                                                   for r in obj):
            for r in obj:  # notebook 03's positive controls, keyed by model and measure
                row = {k: v for k, v in r.items() if k not in ("model", "measure")}
                walk(row, f"{path}.{r['model']}.{r['measure']}")

    walk(results, prefix)
    return out


def read_run_metrics(run_dir: str | Path) -> dict:
    """``{"run": name, "point": {...}, "metrics": {...}}`` of one run directory (its ``results.json``)."""
    run_dir = Path(run_dir)
    p = run_dir / "results.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no results.json (did the run finish any stage?)")
    try:
        res = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    point = dict(res.get("sweep", {}).get("point") or {})
    return {"run": run_dir.name, "point": point, "metrics": flatten_metrics(res)}


def runs_of_sweep(index_path: str | Path) -> list[Path]:
    """The finished run directories listed in a sweep index (``runs/<prefix>.sweep.json``)."""
    index = json.loads(Path(index_path).read_text())
    return [Path(e["run_dir"]) for e in index["runs"] if e.get("status") == "done"]


def per_run_table(run_dirs: list[str | Path], metrics: list[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (run, metric) with the run's sweep point as columns."""
    patterns = metrics or HEADLINE
    rows = []
    for d in run_dirs:
        r = read_run_metrics(d)
        for path, value in r["metrics"].items():
            if any(fnmatch.fnmatchcase(path, pat) for pat in patterns):
                rows.append({"run": r["run"], **r["point"], "metric": path, "value": value})
    return pd.DataFrame(rows)


def collate(run_dirs: list[str | Path], metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (sweep point without the seed, metric): ``n_runs``, ``mean``, ``sd``, ``ci_low``,
    ``ci_high`` (Student-t 95% over runs; NaN from a single run) and the runs' values."""
    long = per_run_table(run_dirs, metrics)
    if long.empty:
        return pd.DataFrame(columns=["metric", "n_runs", "mean", "sd", "ci_low", "ci_high", "values", "runs"])
    group_cols = [c for c in long.columns if c not in ("run", "metric", "value", *SEED_KEYS)]
    rows = []
    for key, g in long.groupby(group_cols + ["metric"], dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        vals = g["value"].tolist()
        rows.append({**dict(zip(group_cols + ["metric"], key)), "n_runs": len(vals), **t_interval(vals),
                     "values": vals, "runs": g["run"].tolist()})
    return pd.DataFrame(rows)


def comparison_over_seeds(table: pd.DataFrame, metrics: tuple[str, ...] = ("gsm8k_strict", "math_perfect",
                                                                             "factscore")) -> pd.DataFrame:
    """Notebook 05's variant comparison (``benchmarks.comparison``) from a :func:`collate` table: one row per policy,
    each metric's test difference to M0 as its mean over seeds with the Student-t 95% interval over seeds, then the
    mean compute (wall seconds, generated tokens) and the number of seeds."""
    prefix = "benchmarks.comparison."
    rows: dict[str, dict] = {}
    for _, r in table[table["metric"].str.startswith(prefix)].iterrows():
        policy, _, field_ = r["metric"][len(prefix):].rpartition(".")
        row = rows.setdefault(policy, {"policy": policy})
        m = field_.removesuffix("_diff")
        if field_.endswith("_diff") and m in metrics:
            row[f"{m} Δ vs M0"] = (f"{r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["n_runs"] > 1
                                   else f"{r['mean']:+.3f}")
            row["seeds"] = r["n_runs"]
        elif field_ in ("wall_seconds", "generated_tokens"):
            row[field_] = round(r["mean"], 1)
    rows = sorted((r for r in rows.values() if "seeds" in r), key=lambda r: policy_rank(r["policy"]))
    columns = [f"{m} Δ vs M0" for m in metrics] + ["wall_seconds", "generated_tokens", "seeds"]
    frame = pd.DataFrame(rows).set_index("policy") if rows else pd.DataFrame()
    return frame[[c for c in columns if c in frame.columns]]


def collate_figure(table: pd.DataFrame, title: str = "runs compared (mean, 95% t-interval over seeds)"):
    """Dot-and-whisker plot of a :func:`collate` table, every run's own value a grey tick: one shared panel without
    grouping columns, else one panel per metric and one row per group; axes fixed to 3 decimals."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = list(dict.fromkeys(table["metric"]))
    group_cols = [c for c in table.columns
                  if c not in ("metric", "n_runs", "mean", "sd", "ci_low", "ci_high", "values", "runs")]

    def label(row):
        return ", ".join(f"{c}={row[c]}" for c in group_cols if pd.notna(row[c])) or "all runs"

    def add(fig, sub, labels, row):
        err_hi = (sub["ci_high"] - sub["mean"]).fillna(0)
        err_lo = (sub["mean"] - sub["ci_low"]).fillna(0)
        fig.add_trace(go.Scatter(x=sub["mean"], y=labels, mode="markers", showlegend=False, marker={"size": 9},
                                 error_x={"type": "data", "array": err_hi.tolist(), "arrayminus": err_lo.tolist(),
                                          "visible": True},
                                 customdata=sub[["n_runs"]].values,
                                 hovertemplate="%{y}: %{x:.3f} (%{customdata[0]} runs)<extra></extra>"), row=row, col=1)
        for lab, (_, r) in zip(labels, sub.iterrows()):  # every run's own value: the spread behind the mean
            fig.add_trace(go.Scatter(x=r["values"], y=[lab] * len(r["values"]), mode="markers",
                                     marker={"symbol": "line-ns-open", "size": 12, "color": "grey"},
                                     showlegend=False, hoverinfo="x"), row=row, col=1)

    if not group_cols:
        fig = make_subplots(rows=1, cols=1)
        add(fig, table, metrics, 1)
        fig.update_yaxes(autorange="reversed")
        fig.update_xaxes(tickformat=".3f", title_text="value (grey ticks: single runs)")
        fig.update_layout(title=title, height=max(300, 60 * len(metrics) + 140),
                          margin={"l": max(120, 7 * max(len(m) for m in metrics))})
        return fig
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=metrics, vertical_spacing=0.5 / max(len(metrics), 1))
    for i, m in enumerate(metrics, start=1):
        sub = table[table["metric"] == m]
        add(fig, sub, [label(r) for _, r in sub.iterrows()], i)
    fig.update_xaxes(tickformat=".3f")
    fig.update_layout(title=title, height=max(300, 160 * len(metrics)), margin={"l": 200})
    return fig


def write_collation(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """``collated.csv``, ``collated.json`` and the figure (``collated.html``, and ``collated.png`` where plotly's
    static export works) in ``out_dir``; returns their paths."""
    from rlrf_nb import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "collated.csv", "json": out / "collated.json"}
    table.to_csv(paths["csv"], index=False)
    paths["json"].write_text(table.to_json(orient="records", indent=2))
    if not table.empty:
        fig = plots.export(collate_figure(table), out, "collated")
        paths.update({k: Path(v) for k, v in fig.items() if k in ("html", "png") and v})
    return paths
