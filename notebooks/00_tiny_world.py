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
# # 00 · The tiny world and its M0 policy
#
# RLRF (Lee et al., 2024) improves a policy's *capabilities* — math reasoning and factuality — rather than
# its style. To study it on a laptop we need a world where both are measurable exactly and cheaply:
#
# * **math**: GSM8K-format word problems with 2–4 arithmetic steps, chain-of-thought solutions with
#   calculator annotations (`<<48/2=24>>`) and a final `#### N`;
# * **bios**: "Tell me a bio of X." for fictional people in a knowledge base, as in FactScore.
#
# and a real `transformers` policy, **M0**, pre-trained from scratch on CPU. M0 must be *imperfect but capable*:
# it should solve some problems (so there is something to reinforce) and it must be able to **refine** a draft
# when given a verbal critique — the self-reflection that RLRF's search relies on (paper §3.2).
#
# This notebook generates the world, loads (or retrains) M0, and measures exactly that.
#
# The kit has two tiny worlds. **World v2** has three-digit + and − chains whose solutions work each sum column by
# column, about 900 possible answers, and a popularity tail of bio documents. Its default recipe is **world
# v2-short** (`recipes/tiny-v2-short.yaml`: chains of 2–3 steps, the length at the edge of M0's ability), with an M0
# whose measured properties make it a model organism of RLRF's setting (section 4: it passes all 8 targets on test);
# `recipes/tiny-v2.yaml` keeps the 4-step problems (7 of 8). **World v1** (`recipes/tiny.yaml`, `make demo-v1`) is
# the first one: answers up to 20, which guessing often hits, and an M0 that knows no bio facts; `docs/tiny_world.md`
# measures them all.

# %% tags=["parameters"]
recipe_path = "recipes/tiny-v2-short.yaml"  # recipe file; its sections match the dataclasses in rlrf_nb.config
run_name = "demo"  # everything is written to runs/<run_name>/
retrain = False  # True: retrain the recipe's M0 here, cached by config hash (v2: the last phase, docs/tiny_world.md)
overrides = {}  # dotted recipe overrides, e.g. {"eval.n_math": 100, "run.runs_dir": "/tmp/runs"}

# %%
import logging

import pandas as pd
import yaml

from rlrf_nb import plots
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import recipe_to_dict
from rlrf_nb.runs import open_run
from rlrf_nb.stats import format_rate
from rlrf_nb.tiny_world import build_world, math_refinement_example

logging.basicConfig(level=logging.WARNING)
pd.set_option("display.max_colwidth", 120)

recipe, store = open_run(recipe_path, run_name, {"m0.retrain": retrain, **overrides})
print("run directory:", store.run_dir, "\n")
print(yaml.safe_dump({k: recipe_to_dict(recipe)[k] for k in ("world", "m0", "eval")}, sort_keys=False))

# %% [markdown]
# ## 1 · The world
# Everything below is deterministic from `world.seed`. The held-out splits are drawn first from each seeded
# stream, so changing a training size never changes what M0 is evaluated on. The bios split *people*:
# all of them appear in pre-training, but only the SFT people's bios are shown to M0 as answers.

# %%
world = build_world(recipe.world)
tw.split_sizes(world)

# %% [markdown]
# A math problem and its reference solution. Every `<<expr=value>>` is a calculator annotation the verifier
# re-computes with a safe parser (model text is never `eval`'d).

# %%
ex = world.math["test"][0]
print(ex.prompt, "\n")
print(ex.reference)

# %% [markdown]
# The knowledge base (a few of its people) and one noisy "web" document. A fraction `world.bio_error_rate`
# of the facts in web documents is wrong, like noisy web text; M0 learns the facts from these documents only.

# %%
tw.kb_table(world, 5)

# %%
print(world.web_docs[0], "\n")
print("Reference bio:", world.bios["test"][0].reference)

# %% [markdown]
# ### Refinement examples in the training mix
# M0 is taught to refine: *problem + flawed draft + the verifier's critique naming the wrong step → corrected
# solution*. The corrected solution keeps the steps before the named one. This is the same prompt
# (`rlrf_nb.prompts.refinement_prompt`) that the reflection search uses later.

# %%
import random

demo_item = math_refinement_example(random.Random(3), world.math["train"][0])
print(demo_item["messages"][0]["content"])
print("\n--- target ---\n" + demo_item["messages"][1]["content"])

# %% [markdown]
# ## 2 · M0
# A small Llama (`LlamaForCausalLM`) with a BPE tokenizer trained on the world (digits split one per token)
# and a chat template, saved with `save_pretrained`. With `retrain=False` the recipe's committed M0 (`m0.pretrained`:
# `data/tiny_world_v2/m0-phase7b/` in world v2-short, `m0/` in world v2, `data/tiny_world/m0/` in world v1) is loaded
# exactly as a Hub model would be
# (`AutoModelForCausalLM.from_pretrained`).

# %%
model, tok, info = tw.get_m0(recipe, store, world)
print(f"M0: {info['n_params']:,} parameters, vocabulary {len(tok)}, from {info['path']} ({info['source']})")
print("chat template renders:", repr(tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                             add_generation_prompt=True)))

# %%
training = info["training"]
if training:
    print(f"trained for {training['seconds']} s, {training['steps']} steps, {training['tokens']:,} tokens "
          f"({training['tokens_per_s']:,.0f} tokens/s); final loss {training['final_loss']:.3f}")
    fig = plots.loss_curve(training["history"])
    fig.show()

# %% [markdown]
# ## 3 · What M0 can do
# **Held-out math accuracy** — greedy decoding, strict `#### N` extraction (the same grader GSM8K uses later).
# Intervals are 95% Wilson intervals.

# %%
math_res = tw.evaluate_math(model, tok, info["fingerprint"], world, recipe.eval, store)
print("math accuracy:", format_rate(math_res["accuracy"]))
print("where wrong answers first go wrong:", math_res["error_kinds"])
tw.records_table(math_res["records"], ["id", "gold", "pred", "correct", "critique"])

# %% [markdown]
# **Refinement success**: M0 gets a wrong draft and the verifier's critique naming its first wrong step, and
# rewrites it. *Own drafts* are M0's own wrong answers above; *injected* drafts are reference solutions with
# one wrong step. `kept prefix` is how often the rewrite keeps the steps before the named one verbatim —
# whether M0 uses the critique rather than re-solving from scratch.

# %%
print("fixes its own wrong drafts:   ", format_rate(math_res["refine_own"]))
print("fixes injected-error drafts:  ", format_rate(math_res["refine_injected"]))
print("keeps the correct prefix:     ", format_rate(math_res["refine_injected_kept_prefix"]))
r = math_res["refine_own_records"][0] if math_res["refine_own_records"] else math_res["refine_injected_records"][0]
print("\n--- example refinement prompt ---\n" + r["prompt"] + "\n--- M0's refinement ---\n" + r["response"])

# %% [markdown]
# **Bios**: each sentence is an atomic claim, checked against the knowledge base. Precision is the fraction of
# a bio's claims that the KB supports (FactScore's per-response score, before any length penalty).

# %%
bio_res = tw.evaluate_bios(model, tok, info["fingerprint"], world, recipe.eval, store)
print(f"bio precision (mean over {len(bio_res['records'])} bios): {100 * bio_res['precision_mean']:.1f}%; "
      f"claims supported: {format_rate(bio_res['claims'])}; {bio_res['claims_per_bio']:.1f} claims per bio")
tw.records_table(bio_res["records"], ["entity", "n_claims", "n_supported", "n_contradicted", "response"], 5)

# %%
bio_demo = tw.refinement_demo(model, tok, world)
print(bio_demo["prompt"], "\n--- M0's refinement ---\n" + bio_demo["refinement"])

# %%
fig = plots.rates_with_ci({"math accuracy": math_res["accuracy"], "fixes own drafts": math_res["refine_own"],
                           "fixes injected": math_res["refine_injected"], "bio claims supported": bio_res["claims"]},
                          title=f"M0 on held-out {recipe.eval.split} prompts")
fig.show()

# %% [markdown]
# ## 4 · Is this world a model organism of RLRF's setting?
# A claim that a method fails means nothing until the world is shown able to reward it. `rlrf_nb.diagnose`
# measures, with 95% intervals, the properties RLRF relies on (`docs/tiny_world.md` explains each one):
#
# * **latent ability that search can find**: pass@k of fully right solutions well above greedy;
# * **guessing does not pass**: the same samples scored against a *shuffled* problem's answer;
# * **critiques a model can use**: on the problems greedy gets wrong, m refinements from the verifier's critique
#   reach a fully right solution more often than m fresh samples, and more often than m refinements from a
#   scalar-only message (one score, no words: what the scalar ablation knows);
# * **facts known with uncertainty**: bio claims supported well above chance, and right facts that only samples
#   find;
# * **every prompt the loop builds fits the context**.
#
# The sizes come from the recipe's `diagnose` section; `rlrf-nb diagnose` runs the same measurement from a
# terminal (for any checkpoint with `--policy`). The demo's recipe measures a small sample (80 test problems, 8
# samples at T = 1.0, 20 bios: about two minutes), so its intervals are wide and its pass@8 is not the targets'
# pass@16. The targets are judged on the full measurement, `make diagnose` (500 problems, 16 samples at T = 1.0 and
# 0.7, 60 bios), committed for M0 v2 in `benchmarks/world_v2/diagnose_onpolicy_j_test.txt`: 7 of 8 pass, and
# headroom fails (10.4 points of 20).

# %%
from rlrf_nb.diagnose import diagnose, headline, report_lines, verdicts
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.verifier import VerifierJudge

rubrics = load_rubric_set()
verifier = VerifierJudge(rubrics, {p["name"]: p for p in world.people})  # exact critiques: the teacher
organism = diagnose(model, tok, info["fingerprint"], world, store, recipe.diagnose, judge=verifier, rubrics=rubrics,
                    seed=recipe.run.seed)
print("\n".join(report_lines(organism)))

# %%
pd.DataFrame(verdicts(organism))

# %% [markdown]
# ## 5 · Results
# The numbers above go to `runs/<run_name>/results.json`; the per-sample generations are in
# `runs/<run_name>/eval/M0/*.jsonl`, keyed by model fingerprint, prompt and decoding settings, so rerunning
# this notebook recomputes nothing.

# %%
results = tw.write_results(store, tw.summary_row(math_res, bio_res), info)
results = store.update_results({"diagnose": {"split": organism["split"], "headline": headline(organism),
                                             "verdicts": verdicts(organism)}})
for k in ("m0_math_accuracy", "m0_refine_own_success", "m0_refine_injected_success"):
    print(f"{k}: {format_rate(results[k])}")
