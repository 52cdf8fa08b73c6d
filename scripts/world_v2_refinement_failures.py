#!/usr/bin/env python
"""Issue 16: where and how the diagnose's refinements go wrong, for runs whose ``rlrf-nb diagnose`` has been done.

For each greedy-wrong test problem whose critique names a wrong step, each of the (up to 5) refinements is placed
against the named step (``diagnose.critique_used``'s ``first_error``: before it, at it, after it, perfect), and each
one that first goes wrong *at* the named step is classed by what it wrote there: the draft's wrong step again, the
right carried value with another operand (a miscopied number from the problem), a wrong carried value, or the right
expression with a wrong value (an arithmetic slip). The critique states the right expression, so a policy that read it
would make none of the copying errors.

    python scripts/world_v2_refinement_failures.py p6-diag p7-diag p8-diag \\
        --out benchmarks/world_v2/refinement_failures.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.diagnose import _step_annotation
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.paths import resolve_path
from rlrf_nb.tasks import math

p = argparse.ArgumentParser()
p.add_argument("runs", nargs="+", help="run names under runs/ whose diagnose (split test, T 1.0) is done")
p.add_argument("--recipe", default="recipes/tiny-v2.yaml")
p.add_argument("--m", type=int, default=5)
p.add_argument("--out")
a = p.parse_args()
world = tw.build_world(load_recipe(a.recipe).world)
by_id = {e.id: e for e in world.math["test"]}
out = {}
for run in a.runs:
    base = resolve_path(f"runs/{run}")
    diag = json.loads((base / "diagnose.json").read_text())
    greedy = {r["id"]: r["response"] for r in read_jsonl(base / "diagnose/test/math_greedy.jsonl")}
    row = {"fingerprint": diag["fingerprint"],
           "first_error": {k: {w: round(v["rate"], 4) for w, v in diag["reflection"]["T1"]["named_step"][
               f"{k}_first_error"].items()} for k in ("critique", "scalar")}}
    for kind in ("critique", "scalar"):
        refined: dict[str, list[str]] = {}
        for r in read_jsonl(base / f"diagnose/test/refine_{kind}_T1.jsonl"):
            refined.setdefault(r["source_id"], []).append(r["text"])
        what = Counter()
        for i, texts in refined.items():
            ex = by_id[i]
            c = math.check_example(greedy[i], ex)
            if c.error_kind != "wrong_step":
                continue
            j = c.first_error - 1
            x, op, b, _ = ex.meta["steps"][j]
            drafted = _step_annotation(greedy[i], j)
            for t in texts[: a.m]:
                cr = math.check_example(t, ex)
                if cr.perfect or cr.first_error != j + 1:
                    continue
                ann = _step_annotation(t, j)
                what["no annotation" if ann is None else "repeats the draft's step" if ann == drafted
                     else "right expression, wrong value" if ann[0] == f"{x}{op}{b}"
                     else "right carried value, another operand" if ann[0].split(op)[0] == str(x)
                     else "wrong carried value"] += 1
        n = sum(what.values())
        row[f"at_named_step_{kind}"] = {"n": n, **{k: round(v / n, 4) for k, v in what.most_common()}}
    out[run] = row
    print(run, json.dumps(row))
if a.out:
    resolve_path(a.out).write_text(json.dumps(out, indent=1) + "\n")
