# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Compare runs: sweeps, seeds and their spread
#
# One run is one draw: its per-item intervals (notebooks 02–05) say how sure we are *given* its seeds, not how
# much the result moves when the seeds move. This notebook merges the `results.json` of many runs, typically a
# sweep (`rlrf-nb sweep --recipe recipes/tiny.yaml --grid seed=0,1,2 beta=0.1,0.3`), into one table: per sweep
# point without the seed, the mean over seeds, the standard deviation, and a Student-t 95% interval over seeds.
# A single seed gets no interval: it says nothing about seed variance.

# %% tags=["parameters"]
sweep = None  # a sweep index, runs/<prefix>.sweep.json (written by `rlrf-nb sweep`); or None to use `runs`
runs = []  # run directories to compare; with neither, every runs/*/ that has a results.json
metrics = []  # dotted metric patterns (fnmatch), e.g. ["rounds.M*.math_accuracy"]; [] = the headline metrics
out_dir = "runs/collated"  # where collated.csv, collated.json and the figure go

# %%
from pathlib import Path

import pandas as pd

from rlrf_nb.collate import (
    HEADLINE,
    collate,
    collate_figure,
    comparison_over_seeds,
    per_run_table,
    runs_of_sweep,
    write_collation,
)
from rlrf_nb.paths import resolve_path

if sweep:
    run_dirs = runs_of_sweep(resolve_path(sweep))
elif runs:
    run_dirs = [resolve_path(r) for r in runs]
else:
    run_dirs = sorted(p.parent for p in resolve_path("runs").glob("*/results.json"))
print(f"{len(run_dirs)} runs:", ", ".join(Path(d).name for d in run_dirs))
print("metrics:", metrics or HEADLINE)

# %% [markdown]
# ## 1 · Every run's numbers
# One row per run and metric; the sweep point's keys are columns (empty for runs that were not part of a sweep).

# %%
per_run = per_run_table(run_dirs, metrics or None)
pd.set_option("display.max_rows", 200)
per_run.pivot_table(index="metric", columns="run", values="value").round(4) if not per_run.empty else per_run

# %% [markdown]
# ## 2 · Mean and 95% interval across seeds
# Runs that differ only in their seed are one group. `n_runs` is the number of seeds behind each mean; read a
# difference between groups against both intervals, and remember each run's own per-item noise comes on top.

# %%
table = collate(run_dirs, metrics or None)
table.drop(columns=["values", "runs"]).round(4)

# %%
if not table.empty:
    collate_figure(table).show()

# %% [markdown]
# ### RLRF against RS-SFT and online RL, over seeds
# Notebook 05's per-variant comparison (each variant's last round against M0 on the same test items, with its compute)
# collated: the mean difference over seeds with its Student-t 95% interval over seeds, and the mean wall time and
# generated tokens. `make reproduce` runs every variant for seeds 0, 1, 2; an empty table means no run had one.

# %%
comparison_over_seeds(table)

# %% [markdown]
# ## 3 · Export
# `collated.csv` and `collated.json` hold the table above (with every run's value), the figure goes beside them.

# %%
paths = write_collation(table, resolve_path(out_dir))
for kind, p in paths.items():
    print(f"{kind:<5} {p}")
