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
# # 04 · Iterated RLRF: M0 → M1 → M2
#
# RLRF iterates (paper §3.3): each round the *current* policy explores fresh prompts with fine-grained
# self-reflection (notebook 02), the pool becomes preference pairs, and the fine-tuning step of notebook 03 (DPO,
# or RS-SFT in the default recipe) turns M_{t−1} into M_t.
#
# The round policy is part of the recipe and recorded with every checkpoint:
# - `rounds.start_from`: round t trains from M_{t−1} (`previous`) or from M0 (`initial`);
# - `dpo.reference`: the DPO reference is π_{t−1} (`previous`) or π0 (`initial`);
# - `rounds.carry_over`: whether earlier rounds' pairs are trained on again.
#
# Each round's checkpoint is saved with `save_pretrained` and marked complete only after saving: rerunning this
# notebook skips finished rounds, and a run killed in round 2 resumes at round 2 with the search records it has
# (`rlrf-nb rounds` runs the same loop from a terminal).

# %% tags=["parameters"]
recipe_path = "recipes/tiny-v2-short.yaml"  # recipe file; the `rounds`, `reflection`, `pairs` and `dpo` sections apply
run_name = "demo"  # everything is written to runs/<run_name>/ (rounds under rounds/ and checkpoints/rounds/)
overrides = {}  # dotted recipe overrides, e.g. {"rounds.n_rounds": 3, "dpo.reference": "initial"}

# %%
import logging

import pandas as pd

from rlrf_nb import plots, task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.rounds import run_rounds
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.runs import open_run
from rlrf_nb.stats import format_rate
from rlrf_nb.verifier import make_judge

logging.basicConfig(level=logging.WARNING)
recipe, store = open_run(recipe_path, run_name, overrides)
rc = recipe.rounds
print("run directory:", store.run_dir)
print(f"{rc.n_rounds} rounds x {rc.prompts_per_round} fresh math prompts (+{rc.bios_per_round} bios); start from "
      f"{rc.start_from}, reference {recipe.dpo.reference}, carry-over {rc.carry_over}; pair policy "
      f"{recipe.pairs.policy}; {recipe.dpo.method} with loss {recipe.dpo.loss_type}")

# %% [markdown]
# ## 1 · Run the rounds
# After each round the new policy is evaluated on held-out **dev** prompts (never searched or trained on; in a real
# recipe the tail of the task's training data): greedy math exact match and, in the tiny world, the verifier's bio
# claim precision. On a GPU each round holds one model at a time; a vLLM searcher sleeps while TRL trains.

# %%
world = task_data.load_world(recipe)  # None in a real recipe
_, _, info = tw.get_m0(recipe, store, world)
rubrics = load_rubric_set()
judge = make_judge(recipe.feedback, rubrics, task_data.kb(world))
rows = run_rounds(recipe, store, world, judge, rubrics, info["path"])

# %%
table = pd.DataFrame([{"policy": r["policy"], "dev math": format_rate(r["math_accuracy"]),
                       "bio claims supported": format_rate(r["bio_claims_supported"])
                       if "bio_claims_supported" in r else "n/a",
                       "pairs": r.get("pairs", ""), "refinement beats draft":
                       format_rate(r["refinement_beats_parent"]) if "refinement_beats_parent" in r else "",
                       "search s": r.get("search_seconds", ""), "train s": r.get("train_seconds", ""),
                       "round s": r.get("round_seconds", "")} for r in rows])
table

# %%
plots.round_metrics(rows).show()

# %% [markdown]
# ### The ablations, round by round
# `rounds.variants` runs the same loop from the same M0 with one thing changed: `no_reflection` pairs the
# policy's samples only (no refinement), `scalar` picks pairs by one overall score instead of the fine-grained
# reward, `rs_sft` fine-tunes on the best candidates instead of DPO. Round 1 searches with M0 for all of them,
# so its search is run once and shared; from round 2 each variant explores with its own policy. The online
# variants (`grpo`, `rloo`, `grpo_reflect`: section `online_rl`) search nothing: TRL's trainer samples from the
# policy on the round's prompts and the same judge rewards it. Each row says what the round spent (wall time,
# generated tokens, judge calls), so that notebook 05 can set each variant's test gain beside its compute.

# %%
variants = store.results().get("round_variants", {"rlrf": rows})
pd.DataFrame([{"variant": v, "policy": r["policy"], "dev math": format_rate(r["math_accuracy"]),
               "bio claims supported": format_rate(r["bio_claims_supported"]) if "bio_claims_supported" in r
               else "n/a", "pairs": r.get("pairs", ""), "round s": r.get("round_seconds", ""),
               "generated tokens": r.get("generated_tokens", ""), "judge calls": r.get("judged", "")}
              for v, vrows in variants.items() for r in vrows if r["round"] > 0 or v == "rlrf"])

# %%
plots.variant_rounds(variants).show()

# %% [markdown]
# ## 2 · What each round's training did
# The training diagnostics of each round (see notebook 03 for how to read them). A round whose chosen log-prob
# falls far is where a collapse would start.

# %%
import json

for t in range(1, rc.n_rounds + 1):  # RLRF's rounds; the ablations' logs sit in checkpoints/rounds/<variant>/
    log = json.loads(store.path("checkpoints", "rounds", f"M{t}", "training_log.json").read_text())
    print(f"round {t}: {log['method']}, {log['pairs']} pairs, {log['steps']} steps, start {log['start_from']}, "
          f"reference {log['reference']}")
    for note in (log.get("diagnostics") or {}).get("notes", []):
        print("   •", note)
    if log["history"]:
        plots.training_curves(log["history"], f"round {t}: {log.get('method', 'dpo')} training").show()

# %% [markdown]
# The rows go to `results.json` under `rounds`. Read the gains against their intervals: with a few hundred dev
# prompts, a change of a few points is inside the noise.
