#!/usr/bin/env python
"""Issue 16, a probe: does a refinement that keeps the draft's steps before the one the critique names make the
critique worth more than resampling? For each greedy-wrong test problem of a finished ``rlrf-nb diagnose`` run (its
stored greedy answers, fresh samples and refinements are reused), the critique refinement is sampled again (m at
T = 1.0) with the draft's lines before the first wrong step prefilled in the response, so only the named step and
what follows are written. Compared with the run's fresh samples and scalar-only refinements on the same problems.
The prefill patches ``generation.render_prompts`` for this script only; the kit's refinements are unchanged.

    python scripts/world_v2_keep_prefix.py p8-diag data/tiny_world_v2/m0-phase8 \\
        --out benchmarks/world_v2/keep_prefix_phase8.json
"""

from __future__ import annotations

import argparse
import json
import time

from rlrf_nb import diagnose as dg
from rlrf_nb import generation
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.models import load_policy
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.tasks import math
from rlrf_nb.verifier import VerifierJudge

ap = argparse.ArgumentParser()
ap.add_argument("run", help="a run under runs/ whose diagnose (test, T 1.0) is done")
ap.add_argument("policy", help="the checkpoint that diagnose measured")
ap.add_argument("--m", type=int, default=5)
ap.add_argument("--out")
a = ap.parse_args()

world = tw.build_world(load_recipe("recipes/tiny-v2.yaml").world)
base = f"runs/{a.run}/diagnose/test"
greedy = {r["id"]: r["response"] for r in read_jsonl(base + "/math_greedy.jsonl")}
stored: dict[str, dict[str, list[str]]] = {"fresh": {}, "critique": {}, "scalar": {}}
for kind, name in (("fresh", "math_samples_T1"), ("critique", "refine_critique_T1"), ("scalar", "refine_scalar_T1")):
    for r in read_jsonl(f"{base}/{name}.jsonl"):
        stored[kind].setdefault(r["source_id"], []).append(r["text"])
examples = [e for e in world.math["test"] if e.id in greedy]
by_id = {e.id: e for e in examples}
rubrics = load_rubric_set()
judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
items = dg.refinement_items(examples, greedy, judge, rubrics, "critique")
prefix = {}
for it in items:
    j = (math.check_example(greedy[it["id"]], by_id[it["id"]]).first_error or 1) - 1
    prefix[it["prompt"]] = "".join(line + "\n" for line in greedy[it["id"]].split("\n")[:j])
render = generation.render_prompts
generation.render_prompts = lambda tok, convs: [r + prefix.get(c[-1]["content"], "")
                                                for r, c in zip(render(tok, convs), convs)]
model, tok = load_policy(a.policy)
t0 = time.time()
outs = generation.generate(model, tok, [[{"role": "user", "content": it["prompt"]}] for it in items],
                           max_new_tokens=400, batch_size=20, do_sample=True, temperature=1.0,
                           num_return_sequences=a.m, seed=7, progress=False)
keep = {it["id"]: [prefix[it["prompt"]] + o for o in os_] for it, os_ in zip(items, outs)}
seconds = round(time.time() - t0, 1)
plain = dg.refinement_vs_fresh(examples, greedy, stored["fresh"], {k: stored[k] for k in ("critique", "scalar")}, a.m)
kept = dg.refinement_vs_fresh(examples, greedy, stored["fresh"], {"critique": keep, "scalar": stored["scalar"]}, a.m)
res = {"run": a.run, "policy": a.policy, "greedy_wrong": kept["greedy_wrong"], "seconds": seconds,
       "fresh": round(100 * kept["fresh"]["rate"], 1), "critique": round(100 * plain["critique"]["rate"], 1),
       "scalar": round(100 * kept["scalar"]["rate"], 1),
       "critique_keep_prefix": round(100 * kept["critique"]["rate"], 1),
       "keep_vs_fresh": round(kept["critique_vs_fresh"]["ratio"], 2),
       "keep_vs_fresh_ci": [round(kept["critique_vs_fresh"][k], 2) for k in ("ci_low", "ci_high")],
       "keep_minus_scalar": kept["critique_minus_scalar"]}
print(json.dumps(res))
if a.out:
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
