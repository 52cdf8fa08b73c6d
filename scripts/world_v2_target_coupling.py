#!/usr/bin/env python
"""Issue 16: why the headroom target and the critique target pull apart. Both count what samples find that greedy
misses: headroom is the share of all problems where greedy is wrong and one of 16 samples is perfect, and "fresh" is
the share of greedy-wrong problems where one of 5 fresh samples is perfect. So a policy with headroom h and greedy
accuracy g has P(one of 16 perfect | greedy wrong) = h / (1 - g), and its fresh rate follows from it. This reads the
committed diagnoses (test, k 16, m 5, T 1.0) and prints, per phase, what the critique refinements would have to reach
for critique / fresh >= 1.5, against what they reach, and the same split by the problems' number of steps.

    python scripts/world_v2_target_coupling.py > benchmarks/world_v2/target_coupling.json
"""

from __future__ import annotations

import json
from pathlib import Path

DIR = Path(__file__).resolve().parents[1] / "benchmarks/world_v2"
rows, by_steps = [], []
for phase in (6, 7, 8, 9, 10):
    d = json.loads((DIR / f"diagnose_phase{phase}_test.json").read_text())
    math, refl = d["math"]["T1"]["by_steps"], d["reflection"]["T1"]
    g, p16 = math["all"]["perfect"]["greedy"]["rate"], math["all"]["perfect"]["pass@16"]["rate"]
    rows.append({"phase": phase, "greedy": g, "pass@16": p16, "headroom": p16 - g,
                 "pass@16_given_greedy_wrong": (p16 - g) / (1 - g), "fresh@5": refl["fresh"]["rate"],
                 "critique@5": refl["critique"]["rate"], "critique_needed": 1.5 * refl["fresh"]["rate"]})
    for group, r in refl["by_steps"].items():
        gs, ps = math[group]["perfect"]["greedy"]["rate"], math[group]["perfect"]["pass@16"]["rate"]
        by_steps.append({"phase": phase, "steps": group, "greedy": gs, "headroom": ps - gs,
                         "greedy_wrong": r["greedy_wrong"],
                         **{k: r[k]["rate"] for k in ("fresh", "critique", "scalar")},
                         "critique_vs_fresh": [r["critique_vs_fresh"][k] for k in ("ratio", "ci_low", "ci_high")]})
# fresh@5 / P(one of 16 | greedy wrong), pooled over the phases: how many of the problems 16 samples find 5 find
share = sum(r["fresh@5"] for r in rows) / sum(r["pass@16_given_greedy_wrong"] for r in rows)
for r in rows:  # the least critique rate that passes both targets at this phase's greedy accuracy
    r["critique_needed_at_headroom_20"] = 1.5 * share * 0.20 / (1 - r["greedy"])


def rounded(v):
    return [rounded(x) for x in v] if isinstance(v, list) else round(v, 3) if isinstance(v, float) else v


print(json.dumps({"fresh@5_per_pass@16_given_greedy_wrong": round(share, 3),
                  "rows": [{k: rounded(v) for k, v in r.items()} for r in rows],
                  "by_steps": [{k: rounded(v) for k, v in r.items()} for r in by_steps]}, indent=1))
