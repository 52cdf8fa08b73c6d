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
# # 03 · Preference fine-tuning, DPO or RS-SFT (one round)
#
# RLRF's third ingredient (paper §3.3): fine-tune the policy on the preference pairs from the reflection search
# (notebook 02) with **DPO**, through TRL's `DPOTrainer`. This notebook runs one round, M0 → M1, and puts it next
# to its baselines and ablations, each one switch in the recipe:
#
# | variant | what changes |
# |---|---|
# | **RLRF** | `pairs.policy` (default best-vs-worst over samples *and* refinements), `dpo.method: dpo` or `rs_sft` |
# | no reflection | `pairs.policy: no_reflection`: pairs from the samples only |
# | scalar reward | `pairs.policy: scalar`: candidates ranked by one overall score instead of per-aspect feedback |
# | RS-SFT | `dpo.method: rs_sft`: TRL's `SFTTrainer` on the best candidate per prompt (rejection sampling) |
#
# The default world (`recipes/tiny-v2-short.yaml`) fine-tunes RLRF's search with RS-SFT, since DPO at this scale does
# not raise its M0; the RS-SFT variant is then RLRF's own round and is not trained twice.
#
# The loss is `dpo.loss_type` (default `["sigmoid", "sft"]`: DPO plus an NLL term on the chosen response, as in
# Iterative RPO, arXiv 2404.19733); any of TRL's losses (`ipo`, `robust`, `apo_zero`, ...) is one switch away.

# %% tags=["parameters"]
recipe_path = "recipes/tiny-v2-short.yaml"  # recipe file; the `dpo` and `pairs` sections configure this notebook
run_name = "demo"  # the run of notebook 02 (its pairs and search records are reused from the store)
compare_variants = True  # also train the no-reflection, scalar-reward and (under DPO) RS-SFT variants
positive_controls = True  # also train the gold-SFT and gold-DPO controls and measure them on test
overrides = {}  # dotted recipe overrides, e.g. {"dpo.learning_rate": 1e-5, "dpo.loss_type": ["ipo"]}

# %%
import dataclasses
import logging

import pandas as pd
from IPython.display import Markdown, display

from rlrf_nb import plots, readings, task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.models import placement
from rlrf_nb.pairs import build_pairs, load_decisions
from rlrf_nb.preflight import describe_preflight, preflight
from rlrf_nb.reflection import reflection_search
from rlrf_nb.rounds import before_after, evaluate_policy, train_variants
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.runs import open_run
from rlrf_nb.stats import format_rate
from rlrf_nb.training import for_method, train_cached
from rlrf_nb.verifier import make_judge

logging.basicConfig(level=logging.WARNING)
pd.set_option("display.max_colwidth", 70)
recipe, store = open_run(recipe_path, run_name, overrides)
cfg = recipe.dpo
print("run directory:", store.run_dir)
print({k: getattr(cfg, k) for k in ("method", "loss_type", "loss_weights", "beta", "learning_rate", "dpo_learning_rate",
                                    "epochs", "batch_size", "max_length", "lora")})

# %% [markdown]
# ## 1 · The pairs
# The search of notebook 02 is reloaded from the run store (nothing is regenerated if notebook 02 ran with the
# same recipe and run name), and pairs are built with the recipe's pair policy and any review decisions.

# %%
world = task_data.load_world(recipe)  # None in a real recipe
m0, tok, info = tw.get_m0(recipe, store, world)
place = placement(recipe.run)  # run.device / run.dtype: where every policy trains and is evaluated
rubrics = load_rubric_set()
judge = make_judge(recipe.feedback, rubrics, task_data.kb(world))
examples = task_data.search_examples(recipe, world)  # reflection.prompt_source: tiny world rl split or GSM8K
pool = reflection_search(store, m0, tok, info["fingerprint"], examples, judge, rubrics, recipe.reflection,
                         seed=recipe.run.seed, weights=recipe.feedback.weights)["pool"]
decisions = load_decisions(store.path(recipe.pairs.decisions))
pairs = build_pairs(pool, recipe.pairs.policy, decisions=decisions, **recipe.pairs.build_kwargs())
print(f"{len(pairs)} {recipe.pairs.policy} pairs from {len(examples)} prompts; "
      f"{sum(p['chosen_correct'] is True and p['rejected_correct'] is False for p in pairs)} are right over wrong")

# %% [markdown]
# ## 2 · Pre-flight check
# Before any step, every pair is tokenized as TRL will tokenize it and checked: one BOS, each completion ending with
# the chat template's own end of turn (`<|end|>` here; `<|im_end|>` and a newline for ChatML models such as Qwen)
# and holding no second EOS (an end token typed into a text would double it), and no pair longer than
# `dpo.max_length` (TRL would cut the end of the completion, and with it the final answer, and could make chosen
# and rejected identical). The longest pair sets how small `max_length` may be.

# %%
report = preflight(pairs, tok, cfg.max_length)
print(describe_preflight(report))

# %% [markdown]
# ## 3 · Train M1 (DPO, or RS-SFT with `dpo.method: rs_sft`)
# The reference model is explicit: a frozen copy of M0 (`dpo.reference`; with `dpo.lora` the adapter-disabled
# base, merged into the saved checkpoint after training, with `dpo.precompute_ref` log-probs computed once).
# Precision follows the device (`run.device`, `run.dtype`): fp32 on CPU, bf16 on a GPU that has it. The checkpoint
# is cached by start weights, config and data: a rerun loads it. With no pairs nothing is trained, and M1 is M0.

# %%
main = train_cached(store, "dpo-M1", info["path"], pool, pairs, cfg, place=place)
hist = main["info"]["history"]
print(f"{'loaded cached' if main['cached'] else 'trained' if main['trained'] else 'not trained, M1 is'} "
      f"{main['path'].name}: {main['info']['steps']} steps, {main['info']['train_seconds']:.0f} s of training")
plots.training_curves(hist, f"DPO on {len(pairs)} {recipe.pairs.policy} pairs (loss {cfg.loss_type})"
                      if cfg.method == "dpo" else f"RS-SFT on the best candidate of each of {len(examples)} prompts"
                      ).show()

# %% [markdown]
# **Reading the diagnostics.** `rewards/margins` is β times how much more the policy (relative to the reference)
# prefers chosen over rejected; `rewards/accuracies` the share of pairs where that is positive. The log-probs are
# the warning lights: DPO only needs rejected to fall *faster* than chosen, so both often fall, and a chosen
# log-prob that falls far is the pattern that preceded an accuracy collapse in this kit's feasibility probe.

# %%
for note in main["info"]["diagnostics"]["notes"]:
    print("•", note)

# %% [markdown]
# ## 4 · Before and after, on held-out prompts
# The same dev prompts (the recipe's own held-out slice: `rlrf_nb.task_data.dev_math`), answered greedily by M0
# and M1.

# %%
demo_examples = task_data.dev_math(recipe, world, 6)
pd.DataFrame(before_after({"M0": (m0, tok), "M1": (main["model"], main["tokenizer"])}, demo_examples,
                          recipe.eval.max_new_tokens))[["prompt", "gold", "M0", "M0 right", "M1", "M1 right"]]

# %% [markdown]
# ## 5 · Did it help? RLRF against its baselines and ablations
# Held-out dev math exact match (the recipe's own dev slice) and, in the tiny world, the verifier's bio claim
# precision (FactScore-style), with 95% intervals. Differences inside the intervals are not evidence either way.

# %%
variants = {"M0": {"path": info["path"], "model": m0, "tokenizer": tok},
            "RLRF (DPO)" if cfg.method == "dpo" else "RLRF (RS-SFT)": main}
if compare_variants:  # the variants of rounds.variant_setup, as notebook 04 runs them round after round
    trained, empty = train_variants(store, info["path"], pool, recipe, decisions=decisions, place=place, judge=judge,
                                    rubrics=rubrics, world=world)
    variants |= trained
    for name in empty:
        print(f"{name}: no training data from this pool, so not trained (reported, not hidden)")
evals = {name: evaluate_policy(v["model"], v["tokenizer"], tw.model_fingerprint(v["path"]), recipe, world, store,
                               name.replace(" ", "_").replace("(", "").replace(")", ""))
         for name, v in variants.items()}
table = pd.DataFrame({name: {"dev math": format_rate(e["math_accuracy"]),
                             "bio claims supported": format_rate(e["bio_claims_supported"])
                             if "bio_claims_supported" in e else "n/a",
                             "pairs / rows": variants[name].get("info", {}).get("pairs", "—"),
                             "train s": variants[name].get("info", {}).get("train_seconds", "—")}
                      for name, e in evals.items()}).T
table

# %%
plots.rates_with_ci({name: e["math_accuracy"] for name, e in evals.items()},
                    "Held-out dev math exact match after one round (95% CI)").show()

# %% [markdown]
# ## 6 · Positive controls: can this stage raise M0 at all?
# A method that fails means nothing until the same training, on data known to be good, is shown to help. Two
# controls at this stage's own settings (`dpo` section), measured on the held-out **test** problems against M0 (paired
# on the same problems). Their data are the search's own math prompts, or, with `dpo.control_prompts: N`, the first N
# (the gold budget at which the world's recipe states them; a control on 300 prompts can be too small to show
# anything, and that says nothing about the method):
#
# - **gold SFT**: TRL's `SFTTrainer` on the reference solutions (the RS-SFT path with every candidate perfect);
# - **gold DPO**: DPO on pairs of a reference solution (chosen) against one of M0's wrong answers (rejected), at
#   `dpo.dpo_learning_rate` when the recipe sets one (DPO's own step size, as the DPO variants train), else at
#   `dpo.learning_rate`.
#
# If neither raises M0, a null result of RLRF says nothing about RLRF: the world, M0 or the settings are at fault.

# %%
from rlrf_nb.analysis import paired_math_table
from rlrf_nb.rounds import control_data, evaluate_test_math
from rlrf_nb.training import gold_candidates, gold_pairs

controls = {"M0": {"path": info["path"], "model": m0, "tokenizer": tok}}
if positive_controls:
    math_examples, control_pool = control_data(recipe, world, store, m0, tok, info["fingerprint"], examples, pool)
    gold_dpo_pairs = gold_pairs(math_examples, control_pool)
    print(f"controls on {len(math_examples)} gold solutions; gold DPO: {len(gold_dpo_pairs)} gold-vs-wrong pairs")
    controls["gold SFT"] = train_cached(store, "control-gold-sft", info["path"], gold_candidates(math_examples), [],
                                       dataclasses.replace(cfg, method="rs_sft"), place=place)
    controls["gold DPO"] = train_cached(store, "control-gold-dpo", info["path"], control_pool, gold_dpo_pairs,
                                       dataclasses.replace(cfg, method="dpo"),
                                       place=place)
test_records = {name: evaluate_test_math(v["model"], v["tokenizer"], tw.model_fingerprint(v["path"]), recipe, world,
                                         store, "M0" if name == "M0" else "control-" + name.replace(" ", "_"))
                for name, v in controls.items()}  # M0's answers are notebook 00's, when it ran (same key: not redone)
control_table = paired_math_table(test_records)
display(control_table.round(3))
display(Markdown(readings.positive_controls(control_table.to_dict(orient="records"))))

# %% [markdown]
# The numbers go to `results.json` under `dpo` (the controls under `dpo.positive_controls`); the checkpoints are under
# `runs/<run_name>/checkpoints/`.

# %%
_ = store.update_results({"dpo": {name: {k: v for k, v in e.items()} for name, e in evals.items()}
                          | {"diagnostics": main["info"]["diagnostics"], "preflight": {k: v for k, v in report.items()
                                                                                     if k != "decoded"},
                             "positive_controls": control_table.to_dict(orient="records"),
                             "positive_controls_data": {"gold_solutions": len(math_examples),
                                                        "gold_dpo_pairs": len(gold_dpo_pairs),
                                                        "gold_sft_learning_rate": cfg.learning_rate,
                                                        "gold_dpo_learning_rate":
                                                            for_method(cfg, "dpo").learning_rate}
                             if positive_controls else None}})
