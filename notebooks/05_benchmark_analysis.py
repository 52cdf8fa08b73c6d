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
# # 05 · Benchmarks and analysis: does RLRF change abilities, or only style?
#
# The paper evaluates on **GSM8K** (math reasoning), **FactScore** (factual precision of biographies) and
# **Just-Eval** (multi-aspect quality judged by GPT-4). This notebook evaluates **every checkpoint of a run**
# (M0, the RLRF rounds of notebook 04, and notebook 03's one-round variants: no reflection, scalar reward, RS
# baseline) on all three, on the *same* held-out items, and then asks the paper's question with two analyses:
#
# - **Is it superficial?** URIAL's token-distribution shift: where does the aligned model's greedy output depart
#   from what M0 would say, on the numbers of a solution or on its wording?
# - **The reward-model blind spot:** how often a single overall score ranks a wrong solution above a right one,
#   against the fine-grained verifier.
#
# In the tiny world: GSM8K is the tiny world's held-out math (same extractor and format, strict `#### N` and
# flexible last number); FactScore decomposes bios into sentences and checks them against the knowledge base;
# **Just-Eval's GPT-4 judge is replaced by a verifier stand-in** (`just-eval-standin`): deterministic scores for
# helpfulness, clarity, factuality and depth derived from the verifier's checks; engagement is not judgeable
# offline and is left out. Its numbers are not comparable to published Just-Eval scores.
#
# In a real recipe (`eval.gsm8k_source` names GSM8K): k-shot GSM8K on the **test** set with the shots from the
# **train** set (`eval.gsm8k_train_source`, or the Hub dataset's train split), graded by the kit's extractor *and*
# by lm-eval-harness's own `strict-match` / `flexible-extract` (the numbers to set beside published ones);
# Just-Eval asks the recipe's LLM judge with Just-Eval's own prompt; FactScore is skipped (its bios are the tiny
# world's), and nothing of the tiny world is read.

# %% tags=["parameters"]
recipe_path = "recipes/tiny-v2-short.yaml"  # the recipe of the run to evaluate
run_name = "demo"  # the run whose checkpoints are evaluated (notebooks 00-04 with the same name)
interactive = True  # False in batch runs: the case browser becomes a static table
overrides = {}  # dotted recipe overrides
n_math = None  # held-out test math problems (None: eval.n_math of the recipe)
n_bios = None  # held-out test bios (None: eval.n_bios of the recipe)
shift_prompts = 30  # prompts for the token-shift analysis
export_figures = True  # write every figure as HTML (and PNG when plotly can) to runs/<run_name>/figures/05/
gsm8k_source = None  # None: eval.gsm8k_source of the recipe (the tiny world's test split unless it names GSM8K)
gsm8k_k = None  # few-shot exemplars for GSM8K (None: eval.gsm8k_k of the recipe)

# %%
import logging

import pandas as pd
from IPython.display import display

from rlrf_nb import plots, task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.analysis import blind_spot, results_table, token_shift
from rlrf_nb.evals.suite import discover_policies, evaluate_suite, just_eval_judge, policy_info
from rlrf_nb.models import load_policy, placement
from rlrf_nb.pairs import load_pool, wrong_above_right
from rlrf_nb.prompts import chat
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.runs import open_run
from rlrf_nb.stats import format_rate
from rlrf_nb.verifier import make_judge
from rlrf_nb.widgets import CaseBrowser, disagreements, static_case_table

logging.basicConfig(level=logging.WARNING)
pd.set_option("display.max_colwidth", 60)
recipe, store = open_run(recipe_path, run_name, overrides)
world = task_data.load_world(recipe)  # None in a real recipe
place = placement(recipe.run)  # every model is evaluated on the run's device and precision
_, _, info = tw.get_m0(recipe, store, world)
figures = {}
policies = discover_policies(store, info["path"])
pd.DataFrame([{"model": k, "checkpoint": v, **policy_info(v)} for k, v in policies.items()])

# %% [markdown]
# ## 1 · Evaluate every checkpoint
# Greedy decoding, the same items for every model. Every generation and judgement is stored in the run
# (`eval/<model>/...`), so rerunning this notebook evaluates only new checkpoints.

# %%
gsm8k_k = recipe.eval.gsm8k_k if gsm8k_k is None else gsm8k_k
math_examples = task_data.gsm8k_test(recipe, world, n_math or recipe.eval.n_math, gsm8k_source)  # test split
exemplars = task_data.gsm8k_exemplars(recipe, world, gsm8k_source)  # shots: always a train split
bio_examples = task_data.test_bios(recipe, world, recipe.eval.n_bios if n_bios is None else n_bios)
rubrics = load_rubric_set()
je_judge = just_eval_judge(recipe, world, rubrics)  # the recipe's LLM judge, or the tiny world's stand-in
print(f"GSM8K: {len(math_examples)} test problems ({math_examples[0].id} ...), {gsm8k_k} shots from "
      f"{exemplars[0].id if exemplars and gsm8k_k else '-'} ...; Just-Eval judge {je_judge.id}; on {place.describe()}")
suite = evaluate_suite(policies, world, store, math_examples=math_examples, bio_examples=bio_examples,
                       just_eval_judge=je_judge, gsm8k_kwargs={"exemplars": exemplars, "k": gsm8k_k},
                       max_new_tokens=recipe.eval.max_new_tokens, batch_size=recipe.eval.batch_size, place=place,
                       processes=recipe.eval.processes)

# %% [markdown]
# ## 2 · The results table
# Each cell: the mean over items with its 95% bootstrap interval; for every model but M0, the paired difference
# to M0 on the same items (Δ) and its p-value (exact McNemar for right/wrong outcomes, paired bootstrap
# otherwise). With several models and metrics, a single p < 0.05 is weak evidence.

# %%
display_table, long_table = results_table(suite["per_item"])
display_table

# %% [markdown]
# ### The paper's claims, in miniature
# Each claim is a paired difference on the same test items, with its 95% bootstrap interval: the last RLRF round
# against M0 (the bars this kit sets for the tiny world: +0.10 on math, +0.08 on FactScore), and against the
# last round of each ablation run by notebook 04 (`rounds.variants`). A claim *holds* only when its interval
# excludes zero and reaches the bar, where there is one; one whose interval excludes zero but falls short of its bar
# is *under the bar*; the others are *not shown* or *reversed*, printed as plainly.

# %%
from rlrf_nb.analysis import headline_claims

final = [k for k in policies if k.startswith("M") and k[1:].isdigit()][-1]
claims = headline_claims(suite["per_item"], final=final, ablations={
    "reflection helps": f"no reflection {final}", "fine-grained feedback helps": f"scalar reward {final}",
    "RLRF beats rejection-sampling SFT": f"RS-SFT {final}"})
pd.DataFrame(claims)[["claim", "diff", "ci_low", "ci_high", "p", "bar", "verdict"]].round(3) if claims else \
    "no trained rounds in this run"

# %% [markdown]
# ### Per unit of compute: RLRF against RS-SFT and online RL
# Each round-loop variant's last round (`rounds.variants`: RLRF's DPO, RS-SFT, and the online variants GRPO,
# RLOO and GRPO with reflection) against M0 on the same test items, beside what it spent over its rounds: wall
# time, tokens the policy generated (search, refinements, or TRL's rollouts) and judge calls. `Δ / Mtok` is the
# strict-math gain per million generated tokens. One run is one seed: notebook 06 collates these rows over seeds.

# %%
from rlrf_nb.analysis import comparison_frame, variant_comparison

comparison = variant_comparison(suite["per_item"], store.results().get("round_variants", {}))
comparison_frame(comparison) if len(comparison) > 1 else "no round-loop variant in this run (notebook 04)"

# %%
figures["gsm8k"] = plots.rates_with_ci({k: v["gsm8k_strict"] for k, v in suite["summary"].items()},
                                       f"GSM8K-style held-out math, strict `#### N` ({len(math_examples)} problems)")
figures["gsm8k"].show()
print("strict vs flexible (flexible also accepts a last number that is not written as #### N); the kit's grade, then "
      "lm-eval-harness's strict-match and flexible-extract exactly (comparable with published numbers):")
for k, v in suite["summary"].items():
    print(f"  {k:<16} kit strict {format_rate(v['gsm8k_strict'])}   flexible {format_rate(v['gsm8k_flexible'])}\n"
          f"  {'':<16} lm-eval strict-match {format_rate(v['gsm8k_lm_eval_strict'])}   flexible-extract "
          f"{format_rate(v['gsm8k_lm_eval_flexible'])}")

# %%
if bio_examples:
    fs = {k: v["factscore"] for k, v in suite["summary"].items()}
    print(pd.DataFrame(fs).T[["score", "ci_low", "ci_high", "init_score", "respond_ratio", "facts_per_response",
                              "n_scored"]].round(3).to_string())
figures["just_eval"] = plots.aspect_bars({k: {a: s for a, s in v["just_eval"].items() if s["n"]}
                                          for k, v in suite["summary"].items()},
                                         f"Just-Eval aspects ({je_judge.id}: a stand-in, not GPT-4)")
figures["just_eval"].show()

# %% [markdown]
# ## 3 · Is it superficial? Token-distribution shift
# URIAL (Lin et al. 2023) compares an aligned model with its base token by token: at each position of the
# aligned model's greedy answer, the base model ranks the token the aligned model chose. Rank 1 is *unshifted*
# (the base would have said the same), 2-3 *marginal*, lower *shifted*. For RLHF'd chat models most shifts are
# stylistic (discourse markers, politeness). RLRF claims its changes reach substance; here, the question is
# whether shifted tokens are digits and operators (the computation) or words and punctuation.

# %%
last = [k for k in policies if k.startswith("M") and k[1:].isdigit()][-1]
aligned_name = last if last != "M0" else next((k for k in policies if k != "M0"), "M0")
base, tok = load_policy(policies["M0"], place=place)
aligned, _ = load_policy(policies[aligned_name], place=place)
shift = token_shift(base, aligned, tok, [chat(ex.prompt) for ex in math_examples[:shift_prompts]],
                    max_new_tokens=recipe.eval.max_new_tokens)
print(f"{aligned_name} vs M0 on {shift['responses']} prompts, {shift['n_positions']} tokens:")
for cls in ("unshifted", "marginal", "shifted"):
    print(f"  {cls:<9} {format_rate(shift['overall'][cls])}")
print("where the shifted tokens are:", {k: format_rate(v) for k, v in shift["shifted_kind_share"].items()})
figures["shift"] = plots.shift_by_kind(shift, f"Token distribution shift of {aligned_name} from M0, by token kind")
figures["shift"].show()

# %% [markdown]
# ## 4 · The reward-model blind spot on math
# On notebook 02's candidate pool (M0's samples and refinements), every pair of a right and a wrong final answer
# to the same problem: how often does each scorer put the wrong one on top? Read the tiny world's rows with care:
# its overall score (the scalar ablation's) *is* an answer check, so it cannot rank a wrong answer first by
# construction; the fine-grained reward also weighs the steps, so it ranks a right answer reached through a wrong
# step (two errors cancelling) below a wrong answer with one late slip. The breakdown below says how many of its
# "wrong above right" pairs are of that kind. The blind spot the paper means, a judge fooled by fluent wrong
# work, needs a real LLM judge in this table (any `Judge` can be added as a scorer).

# %%
judge = make_judge(recipe.feedback, rubrics, task_data.kb(world))
spot = None
if not store.path("pool.jsonl").exists():  # notebook 02 was not run under this name (e.g. --stages 04 05)
    print(f"{store.path('pool.jsonl')}: no candidate pool in this run (notebook 02 writes it): no blind-spot table")
else:
    pool = load_pool(store)  # notebook 02's search, as it saved it
    spot = blind_spot(pool, {f"fine-grained reward ({judge.id})": lambda c: c.reward,
                             "overall score (scalar)": lambda c: c.overall})
    print(f"{spot['pairs']} right/wrong pairs from {spot['prompts']} prompts")
    flips = wrong_above_right(pool)
    print(f"fine-grained 'wrong above right': {flips['flipped']} pairs; in {flips['lucky']} of them the right answer "
          "was reached through a wrong step (verifier logical correctness < 5)")
    display(pd.DataFrame({k: {"wrong ranked above right": format_rate(v["wrong_above"]), "tie": format_rate(v["tie"]),
                              "unscored": v["unscored"]} for k, v in spot.items() if isinstance(v, dict)}).T)

# %% [markdown]
# ## 5 · Drill down: where M0 and the last round disagree
# The GSM8K items M0 got wrong and the aligned model right, and the reverse.

# %%
cases = disagreements("M0", suite["records"]["M0"]["gsm8k"], aligned_name, suite["records"][aligned_name]["gsm8k"],
                      correct_key="strict_correct", prompt_key="question")
print({k: len(v) for k, v in cases.items()})
if interactive:
    display(CaseBrowser(cases, ("M0", aligned_name)))
static_case_table(cases, n=4)

# %% [markdown]
# ## 6 · Export
# Figures go to `runs/<run_name>/figures/05/` as standalone HTML (and PNG when plotly's static export is
# available); the numbers to `results.json` under `benchmarks`.

# %%
if export_figures:
    for name, fig in figures.items():
        out = plots.export(fig, store.path("figures", "05"), name)
        print(out["html"], "| PNG:", out["png"] or f"skipped ({out['png_skipped']})")
_ = store.update_results({"benchmarks": {
    "table": long_table.to_dict(orient="records"), "summary": suite["summary"], "claims": claims,
    "comparison": comparison,
    "token_shift": {k: v for k, v in shift.items() if k != "positions"} | {"aligned": aligned_name},
    "blind_spot": spot}})
