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
# # 02 · Fine-grained self-reflection and preference pairs
#
# RLRF's second ingredient (paper §3.2): **exploration through self-reflection**. For each training prompt
#
# 1. the policy samples **n** responses and the feedback model (notebook 01) judges each one per aspect;
# 2. the **top-k** distinct responses by reward are refined **m** times each *by the policy itself*, from a prompt
#    that holds the question, the draft and its per-aspect critiques;
# 3. the refinements are judged too (and, with `reflection.max_rounds > 1`, refined again until a stop rule
#    fires: a candidate with no aspect below the threshold, a plateau, or the round cap);
# 4. the pool of samples and refinements becomes **preference pairs** under a *pair policy*, in TRL's format.
#
# The recipe's defaults follow the paper's budget: n + k·m = 10 + 4·5 = 30 candidates per prompt. Everything
# goes to the run store (`samples`, `refinements`, `feedback`, `feedback_overall`, `pairs`), keyed by content:
# rerunning this notebook recomputes nothing, and a killed run resumes where it stopped.

# %% tags=["parameters"]
recipe_path = "recipes/tiny-v2-short.yaml"  # recipe file; the `reflection` and `pairs` sections configure this notebook
run_name = "demo"  # everything is written to runs/<run_name>/
interactive = True  # False in batch runs: widgets are replaced by static tables
overrides = {}  # dotted recipe overrides, e.g. {"reflection.n_prompts": 50, "reflection.priority": "low_best"}
reviewer = ""  # your name: the pair reviewer records it with every decision (or type it into the widget)

# %%
import logging

import pandas as pd
from IPython.display import Markdown, display

from rlrf_nb import plots, readings, task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.generation import load_sampler
from rlrf_nb.pairs import POLICIES, build_pairs, load_decisions, pair_lengths, pair_yield, save_pairs, save_pool
from rlrf_nb.reflection import budget_comparison, reflection_search, sample_rewards, search_stats
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.runs import open_run
from rlrf_nb.stats import format_rate
from rlrf_nb.verifier import make_judge
from rlrf_nb.widgets import (
    PairReviewer,
    ReflectionViewer,
    refinement_frame,
    refinement_rows,
    static_pair_table,
    static_reflection_table,
)

logging.basicConfig(level=logging.WARNING)
pd.set_option("display.max_colwidth", 80)
recipe, store = open_run(recipe_path, run_name, overrides)
cfg = recipe.reflection
print("run directory:", store.run_dir)
print(f"budget per prompt: n + k*m = {cfg.n_samples} + {cfg.top_k}*{cfg.m_refinements} = "
      f"{cfg.n_samples + cfg.top_k * cfg.m_refinements} candidates per round; rounds <= {cfg.max_rounds}")

# %% [markdown]
# ## 1 · The search
# M0 explores the tiny world's **rl** prompts (never seen in pre-training, never evaluated on), or in a real
# recipe the head of the task's training data (`reflection.prompt_source`). The judge is `feedback.judge` (the
# exact verifier in the tiny world; an LLM judge with a real model). Every candidate is also given one
# **overall** score, the input of the scalar-reward ablation below.

# %%
world = task_data.load_world(recipe)  # None in a real recipe
model, tok, info = tw.get_m0(recipe, store, world)
sampler = load_sampler(cfg.backend, model, info["path"], model.dtype)  # reflection.backend: transformers or vllm
rubrics = load_rubric_set()
judge = make_judge(recipe.feedback, rubrics, task_data.kb(world))
examples = task_data.search_examples(recipe, world)  # reflection.prompt_source: tiny world rl split or GSM8K
res = reflection_search(store, sampler, tok, info["fingerprint"], examples, judge, rubrics, cfg,
                        seed=recipe.run.seed, weights=recipe.feedback.weights)
pool = res["pool"]
save_pool(store, pool)  # notebook 05 reads it back (load_pool) instead of searching again
print(f"{len(examples)} prompts -> {len(pool)} judged candidates in {res['seconds']:.0f} s "
      "(a rerun is served from the store)")
pd.DataFrame(res["rounds"]).convert_dtypes()  # counts stay integers (a round without refinements shows <NA>)

# %% [markdown]
# The stop rule skips prompts that already have a perfect sample (no aspect below `reflection.threshold`):
# there is nothing to fix. The refinement budget goes to the rest.

# %%
b = res["budget"]
print(f"prompts stopped by the threshold rule before refining: {b['prompts_stopped_by_threshold']}")
print(f"prompts refined: {len(b['prompts_refined'])}; refinement generations spent: {b['spent']}"
      + (f" of a budget of {b['cap']} ({b['over_budget']} prompts left out)" if b["cap"] else " (no cap)"))

# %% [markdown]
# ## 2 · Does reflection help?
# A refinement *succeeds* when its reward beats its draft's. On math we can also ask the ground truth: how often
# does refining a **wrong** draft give a right answer? And how often is the best candidate of a prompt a
# refinement rather than a sample (the best ranked by right answer first, then reward)?

# %%
stats = search_stats(pool)
print("refinement beats its draft:          ", format_rate(stats["refinement_beats_parent"]))
print("refinement worse than its draft:     ", format_rate(stats["refinement_worse_than_parent"]))
print(f"mean reward change:                    {stats['mean_reward_gain']:+.3f}")
print("refinement of a wrong draft is right:", format_rate(stats["wrong_draft_fixed"]))
print("best candidate is a refinement:      ", format_rate(stats["best_is_refinement"]), "of all prompts")
print("  ... among the prompts refined:     ", format_rate(stats["best_is_refinement_among_refined"]))
print("judge parse failures (never scored): ", stats["parse_failures"])

# %%
display(Markdown(readings.search(stats)))

# %%
plots.reward_distribution(pool, f"Reward of M0's samples and refinements ({judge.id})").show()

# %% [markdown]
# Per aspect: which parts of a draft does reflection repair? The critique names the first wrong step and its true
# value; a refinement that keeps the steps before it and fixes that one raises *logical correctness*.

# %%
rows = refinement_rows(res["records"], pool)
frame = refinement_frame(rows)
plots.refinement_success(frame).show()

# %%
display(Markdown(readings.refinement_aspects(frame)))

# %% [markdown]
# ### Reflection viewer
# A draft and its refinement side by side, with a word-level diff, the score change per aspect and the critique
# that drove it. Filter by outcome to study successes and failures alike.

# %%
improved = sorted(rows, key=lambda r: -(r["delta"] if r["delta"] is not None else -9))
if interactive:
    display(ReflectionViewer(improved))
else:
    display(static_reflection_table(improved, n=8))

# %% [markdown]
# ## 3 · Preference pairs
# Six pair policies turn the pool into pairs (`rlrf_nb.pairs`). Ties are dropped, `pairs.min_margin` applies,
# and on math a **verifiable override** never prefers a wrong final answer over a right one. Two are ablations:
# `no_reflection` (samples only: what plain rejection sampling would give) and `scalar` (one overall score per
# candidate instead of per-aspect feedback; the verifier's overall score looks only at the final answer).
# `step_prefix` makes step-level pairs where the tiny world's verifier knows the steps: a wrong solution against a
# perfect one that shares its right steps, so the two part at its first mistake (`pairs.per_prompt` a prompt).
#
# Human review decisions in `runs/<run_name>/decisions.jsonl` (from the pair reviewer below) are honoured by
# every build, batch runs included.

# %%
decisions = load_decisions(store.path(recipe.pairs.decisions))
by_policy = {p: build_pairs(pool, p, decisions=decisions, **recipe.pairs.build_kwargs()) for p in POLICIES}
n_prompts = len(examples)
table = pd.DataFrame({p: {**pair_yield(v, n_prompts), "chosen_longer": format_rate(pair_lengths(v)["chosen_longer"])}
                      for p, v in by_policy.items()}).T
print(f"{sum(len(v) for v in decisions.values())} review decisions applied")
table

# %%
plots.pair_counts_and_margins(by_policy, n_prompts).show()

# %% [markdown]
# **Length bias.** DPO learns whatever separates chosen from rejected. If chosen responses are systematically
# longer, length is learned along with quality, a known failure of preference tuning. Here a wrong draft often
# stops early or skips a step, so chosen is longer more often than not; watch this after DPO (notebook 03).

# %%
plots.length_bias(by_policy).show()

# %%
display(Markdown(readings.pairs(by_policy, n_prompts, recipe.pairs.policy)))

# %% [markdown]
# ## 4 · Prioritised prompts: where should the refinement budget go?
# Refinement is the expensive part (here k·m = 20 generations per prompt, each with a long prompt). Which prompts
# should get it first? We replay the finished search with its refinements spent in three prompt orders and count
# the **right-over-wrong** pairs each budget buys (the pairs refinement adds: prompts whose samples are all wrong).
# The same refinements are used in every order, so the comparison is exact for this search. To run a capped
# search, set `reflection.refine_budget` and `reflection.priority`.

# %%
cmp = budget_comparison(pool, sample_rewards(pool), policy="best_vs_worst", metric="right_over_wrong",
                        fraction=0.9, seed=recipe.run.seed)
plots.budget_curves(cmp).show()

# %%
display(Markdown(readings.budget(cmp)))

# %% [markdown]
# ## 5 · Review the pairs
# Accept, reject, swap or edit a pair. Each click appends one line to `decisions.jsonl` at once, with your name
# (`reviewer`); accept and reject move on to the next pair not yet reviewed. A swap that would make a wrong final
# answer the chosen one asks for a second press. Nothing changes until the decisions are applied, which the
# pair-building cell above does on every run. The reviewer shows the pairs as built *before* any decision, so a pair
# you rejected is still there, marked rejected, and can be accepted again. In batch runs a static table stands in.

# %%
chosen_pairs = by_policy[recipe.pairs.policy]
if interactive:
    unreviewed_build = build_pairs(pool, recipe.pairs.policy, **recipe.pairs.build_kwargs())  # no decisions
    display(PairReviewer(unreviewed_build, store.path(recipe.pairs.decisions), reviewer=reviewer))
else:
    display(static_pair_table(chosen_pairs, n=8))

# %% [markdown]
# The pairs of every policy go to `runs/<run_name>/pairs/<policy>.jsonl`, and those of `pairs.policy` (what DPO
# trains on in notebook 03) to `pairs.jsonl`. The numbers go to `results.json`.

# %%
for p, v in by_policy.items():
    save_pairs(store, v, f"pairs/{p}")
print("wrote", save_pairs(store, chosen_pairs), f"({len(chosen_pairs)} pairs, policy {recipe.pairs.policy})")
_ = store.update_results({"reflection": {
    **{k: v for k, v in stats.items()}, "seconds": res["seconds"], "rounds": res["rounds"],
    "budget": {k: v for k, v in b.items() if not isinstance(v, list)} | {"prompts_refined": len(b["prompts_refined"])},
    "pair_yield": {p: pair_yield(v, n_prompts) for p, v in by_policy.items()},
    "smart_sampling": {k: v for k, v in cmp.items() if k != "curves"}}})
