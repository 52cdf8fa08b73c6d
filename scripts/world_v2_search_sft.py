#!/usr/bin/env python
"""Issue 16, world v2: is the loop's search as good as gold at equal data, and which training turns it into a gain?

Gold SFT on 1,000 reference solutions for 4 epochs at lr 3e-4 raises M0 v2 by about +10 points every step right
(``benchmarks/world_v2/gold_training_length.json``); the loop, trained by DPO on its own search, by about +3. This
reads one notebook-02 search (``--run``, its ``pool``: the search's prompts, samples and refinements, judged) and
trains M0 on it in the ways that separate the two questions, each scored on the test problems against M0, paired
(``analysis.paired_math_table``), with the records notebook 03 writes (``eval/control-*``):

- ``search-sft``: SFT on the search's best candidate per prompt when it is perfect (the RS-SFT rows,
  ``training.rs_sft_rows``: reward 1, answer not wrong), at ``--lr`` and ``--epochs``;
- ``gold-sft-same``: SFT on the reference solutions of exactly those prompts (the same count and mix of chain lengths):
  against ``search-sft`` it says whether the search's right solutions are worth gold's;
- ``gold-sft-all``: SFT on the reference solutions of every search prompt: against ``gold-sft-same`` it says what the
  prompts the search did not solve would add;
- ``dpo``: the recipe's DPO (its loss, lr, epochs and pair policy) on the search's pairs, as the loop's first round
  trains, with ``--dpo-set`` changing its fields (epochs, learning_rate, loss_weights, ...).

    python scripts/world_v2_search_sft.py --run s46-s1000 --lr 3e-4 --epochs 4 --set run.seed=0 \
        --set reflection.n_prompts=1000 --set rounds.prompts_per_round=1000 --set rounds.bios_per_round=50

The search must have run first (``rlrf-nb demo --stages 02 -p reflection.n_prompts=1000 ...``) with the same
``--set`` overrides; this script reads it from the store and would otherwise run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import yaml

from rlrf_nb import task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.analysis import paired_math_table
from rlrf_nb.pairs import build_pairs, load_decisions
from rlrf_nb.reflection import reflection_search
from rlrf_nb.rounds import evaluate_test_math
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.runs import open_run
from rlrf_nb.training import gold_candidates, override_stage, rs_sft_rows, train_cached
from rlrf_nb.verifier import make_judge

WHICH = ("search-sft", "gold-sft-same", "gold-sft-all", "dpo")
p = argparse.ArgumentParser()
p.add_argument("--run", required=True, help="the run whose notebook 02 searched")
p.add_argument("--lr", type=float, default=3e-4, help="the SFT trainings' learning rate")
p.add_argument("--epochs", type=float, default=4, help="the SFT trainings' epochs")
p.add_argument("--dpo-set", action="append", default=[],
               help="a dpo field for the DPO training, e.g. epochs=4 or 'loss_weights=[0.01,1.0]' (default: the "
                    "recipe's)")
p.add_argument("--which", nargs="+", choices=WHICH, default=list(WHICH))
p.add_argument("--set", action="append", default=[])
a = p.parse_args()
recipe, store = open_run("recipes/tiny-v2.yaml", a.run, dict(s.split("=", 1) for s in a.set))
world = task_data.load_world(recipe)
m0, tok, info = tw.get_m0(recipe, store, world)
rubrics = load_rubric_set()
examples = task_data.search_examples(recipe, world)
pool = reflection_search(store, m0, tok, info["fingerprint"], examples, make_judge(recipe.feedback, rubrics,
                         task_data.kb(world)), rubrics, recipe.reflection, seed=recipe.run.seed,
                         weights=recipe.feedback.weights)["pool"]
math_ex = {ex.id: ex for ex in examples if ex.task == "math"}
steps = {i: len(ex.meta["steps"]) for i, ex in math_ex.items()}
rows = [r for r in rs_sft_rows(pool) if r["prompt_id"] in math_ex]
solved = {r["prompt_id"] for r in rows}
print(f"{len(math_ex)} math prompts searched; a perfect best candidate for {len(solved)}, by chain length "
      f"{dict(sorted(Counter(steps[i] for i in solved).items()))} of {dict(sorted(Counter(steps.values()).items()))}")
math_pool = [c for c in pool if c.prompt_id in math_ex]
sft_cfg = dataclasses.replace(recipe.dpo, method="rs_sft", learning_rate=a.lr, epochs=a.epochs)
trainings = {
    "search-sft": lambda: train_cached(store, "search-sft", info["path"], math_pool, [], sft_cfg),
    "gold-sft-same": lambda: train_cached(store, "gold-sft-same", info["path"],
                                          gold_candidates([math_ex[i] for i in sorted(solved)]), [], sft_cfg),
    "gold-sft-all": lambda: train_cached(store, "gold-sft-all", info["path"], gold_candidates(list(math_ex.values())),
                                         [], sft_cfg),
}
if "dpo" in a.which:
    # a learning_rate given is DPO's, over a recipe's dpo.dpo_learning_rate
    dcfg = override_stage(recipe.dpo, **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.dpo_set)})
    pairs = build_pairs(pool, recipe.pairs.policy, decisions=load_decisions(store.path(recipe.pairs.decisions)),
                        **recipe.pairs.build_kwargs())
    trainings["dpo"] = lambda: train_cached(store, "dpo-M1", info["path"], pool, pairs, dcfg)
models = {"M0": {"path": info["path"], "model": m0, "tokenizer": tok}}
for name in a.which:
    models[name] = trainings[name]()
suffix = {name: f"_lr{a.lr:g}_ep{a.epochs:g}" for name in WHICH} | {"dpo": "".join(f"_{s}" for s in a.dpo_set)}
label = {name: re.sub(r"[^\w.=-]", "", f"control-{name}{suffix[name]}".replace(",", "-")) for name in WHICH}
tests = {name: evaluate_test_math(v["model"], v["tokenizer"], tw.model_fingerprint(v["path"]), recipe, world, store,
                                  "M0" if name == "M0" else label[name])
         for name, v in models.items()}
table = paired_math_table(tests)
print(table.round(3).to_string())
out = {"run": a.run, "learning_rate": a.lr, "epochs": a.epochs, "dpo_set": a.dpo_set, "solved": len(solved),
       "searched": len(math_ex),
       "solved_by_steps": dict(sorted(Counter(steps[i] for i in solved).items())),
       "trainings": {name: {k: v for k, v in json.loads((Path(m["path"]) / "COMPLETE.json").read_text()).items()
                            if k in ("steps", "pairs", "seconds", "config")} | {"checkpoint": str(m["path"])}
                     for name, m in models.items() if name != "M0"},
       "table": table.to_dict(orient="records")}
print(json.dumps(out, default=str))
