#!/usr/bin/env python
"""Issue 16, world v2: the gold-SFT (and, with ``--dpo``, gold-DPO) positive control at a larger gold budget,
without a search.

Notebook 03's control trains on the reference solutions of the search's prompts, or of the first
``dpo.control_prompts`` (600 in the default recipe, sampled as here: ``rounds.control_data``). This trains
the same control (``training.gold_candidates`` through the RS-SFT path, the recipe's ``dpo`` settings unless
overridden) on the first ``--n`` prompts of the world's rl split, and scores it on the test problems against M0,
paired (``analysis.paired_math_table``), with the same records notebook 03 writes (``eval/control-*``). ``--dpo``
trains gold DPO instead: the reference solution against one T = 1.0 sample of M0 with a wrong final answer
(``training.gold_pairs``; prompts where M0's sample is right give no pair).

    python scripts/world_v2_gold_sft.py --run v2-onpolicy-i-diag --n 2000 --lr 3e-5 \\
        --set m0.pretrained=runs/v2-onpolicy/i/checkpoints/M0-c39b9792ebab1fc2 --set world.critique_quotes=true

Training length matters as much as the data (``benchmarks/world_v2/gold_training_length.json``): on M0 v2,
``--n 1000 --lr 3e-4 --epochs 4`` gives about +10 points every step right; ``--set dpo.seed=1`` changes the training
seed. The printed JSON carries the seed, the optimizer steps and (gold DPO) the pairs trained on. World v2-short's
controls at the RS loop's settings (stop 51):

    python scripts/world_v2_gold_sft.py --recipe recipes/tiny-v2-short.yaml --run s51-short-gold --n 1000 \
        --lr 3e-4 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlrf_nb import task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.analysis import paired_math_table
from rlrf_nb.generation import generate
from rlrf_nb.pairs import Candidate
from rlrf_nb.prompts import chat
from rlrf_nb.rounds import evaluate_test_math, wrong_samples
from rlrf_nb.runs import open_run
from rlrf_nb.tasks import math
from rlrf_nb.training import for_method, gold_candidates, gold_pairs, override_stage, train_cached

p = argparse.ArgumentParser()
p.add_argument("--run", required=True)
p.add_argument("--recipe", default="recipes/tiny-v2-short.yaml", help="recipes/tiny-v2.yaml: world v2")
p.add_argument("--n", type=int, default=2000)
p.add_argument("--lr", type=float, default=None)
p.add_argument("--epochs", type=float, default=None)
p.add_argument("--dpo", action="store_true")
p.add_argument("--rejected", choices=("sample", "greedy"), default="sample",
               help="gold DPO's rejected answer: one T = 1.0 sample of M0, or M0's greedy answer, when wrong")
p.add_argument("--per-prompt", type=int, default=1,
               help="gold DPO with --rejected sample: up to this many pairs per prompt, the gold solution against each "
                    "of this many T = 1.0 samples of M0 that are wrong")
p.add_argument("--set", action="append", default=[])
a = p.parse_args()
recipe, store = open_run(a.recipe, a.run, dict(s.split("=", 1) for s in a.set))
world = task_data.load_world(recipe)
m0, tok, info = tw.get_m0(recipe, store, world)
# --lr is the rate this control trains at: for DPO too, over a recipe's dpo.dpo_learning_rate
cfg = override_stage(recipe.dpo, method="dpo" if a.dpo else "rs_sft", **({"learning_rate": a.lr} if a.lr else {}),
                     **({"epochs": a.epochs} if a.epochs else {}))
t0 = time.time()
if a.n > len(world.math["rl"]):
    p.error(f"--n {a.n}: the world's rl split has {len(world.math['rl'])} math prompts")
exs = world.math["rl"][: a.n]
label = f"gold {'DPO' if a.dpo else 'SFT'} n{a.n}"
if a.dpo:
    if a.rejected == "greedy":
        outs = generate(m0, tok, [chat(ex.prompt) for ex in exs], max_new_tokens=recipe.eval.max_new_tokens,
                        batch_size=128, progress=False)
        label += " greedy"
        pool = [Candidate(f"{ex.id}/g", ex.id, ex.prompt, o[0], "sample", 0.0, {}, correct=False)
                for ex, o in zip(exs, outs) if not math.check_example(o[0], ex).correct]
        pairs = gold_pairs(exs, pool)  # one answer per prompt
    else:  # notebook 03's control with dpo.control_prompts (rounds.control_data) samples the same way
        pool = wrong_samples(store, m0, tok, info["fingerprint"], exs, max_new_tokens=recipe.eval.max_new_tokens,
                             per_prompt=a.per_prompt, processes=recipe.reflection.processes)
        # one gold_pairs call per sample index: each sample's pool has at most one wrong candidate per prompt
        pairs = [row for i in range(a.per_prompt)
                 for row in gold_pairs(exs, [c for c in pool if c.candidate_id.endswith(f"/s{i}")])]
    if a.per_prompt > 1:
        label += f" x{a.per_prompt}"
    print(f"{len(pairs)} gold-vs-wrong pairs from {len(exs)} prompts")
    sft = train_cached(store, label.replace(" ", "-").lower(), info["path"], pool, pairs, cfg)
else:
    sft = train_cached(store, label.replace(" ", "-").lower(), info["path"], gold_candidates(exs), [], cfg)
seconds = round(time.time() - t0)
tests = {name: evaluate_test_math(v["model"], v["tokenizer"], tw.model_fingerprint(v["path"]), recipe, world, store,
                                  "control-" + name.replace(" ", "_"))
         for name, v in {"M0": {"path": info["path"], "model": m0, "tokenizer": tok},
                         label: sft}.items()}
table = paired_math_table(tests)
print(table.round(3).to_string())
complete = json.loads((Path(sft["path"]) / "COMPLETE.json").read_text())
out = {"control": label, "n": a.n, "learning_rate": for_method(cfg).learning_rate, "epochs": cfg.epochs,
       "seed": cfg.seed,
       "loss_weights": cfg.loss_weights if a.dpo else None, "steps": complete.get("steps"),
       "pairs": complete.get("pairs"), "train_seconds": seconds, "checkpoint": sft["path"],
       "table": table.to_dict(orient="records")}
print(json.dumps(out, default=str))
