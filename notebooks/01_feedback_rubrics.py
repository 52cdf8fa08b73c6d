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
# # 01 · The fine-grained feedback model
#
# RLRF's first ingredient (paper §3.1): a feedback model that judges a response **per aspect** — a verbal
# critique and a score against a detailed rubric — on the aspects that apply to the prompt. Here we
#
# 1. look at the rubrics (versioned data in `data/rubrics/`);
# 2. sample M0's responses to held-out dev prompts and judge them with the **verifier judge** (exact by
#    construction: it recomputes every calculator step and checks every bio claim against the KB; on a real
#    task such as GSM8K, which has no step data, it checks the final answer against the gold one);
# 3. judge some of them with an **LLM judge** (local `transformers`, or any OpenAI-compatible server) and
#    count its **parse failures** — an unparseable judgement is recorded with its raw text and never scored;
# 4. measure the LLM judge against the verifier (never against itself), and its agreement with itself
#    (consensus of k samples);
# 5. browse the feedback with a widget;
# 6. serve a **trained** judge LM (the paper's feedback model, `feedback.learned_judge`) with `transformers serve` and
#    measure it against the verifier: agreement, calibration, consensus, and the responses where they disagree.

# %% tags=["parameters"]
recipe_path = "recipes/tiny-v2-short.yaml"  # recipe file; the `feedback` section configures the judges
run_name = "demo"  # everything is written to runs/<run_name>/
interactive = True  # False in batch runs: widgets are replaced by static tables
overrides = {}  # dotted recipe overrides, e.g. {"feedback.judge_url": "http://127.0.0.1:8000/v1"}

# %%
import logging

import pandas as pd
from IPython.display import Markdown, display

from rlrf_nb import plots, readings, task_data
from rlrf_nb import tiny_world as tw
from rlrf_nb.feedback import (
    Feedback,
    agreement,
    calibrate,
    consensus_votes,
    critique_examples,
    feedback_frame,
    feedback_summary,
    judge_responses,
    parse_table,
    score_table,
)
from rlrf_nb.generation import sample_to_store
from rlrf_nb.judge_model import as_teacher_rows, judge_report, report_table, score_pairs, served_judge
from rlrf_nb.llm_judge import make_llm_judge
from rlrf_nb.paths import resolve_path
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.runs import open_run
from rlrf_nb.serve import ModelServer
from rlrf_nb.stats import format_rate
from rlrf_nb.verifier import VerifierJudge
from rlrf_nb.widgets import FeedbackBrowser, feedback_keys, static_feedback_table

logging.basicConfig(level=logging.WARNING)
pd.set_option("display.max_colwidth", 100)
recipe, store = open_run(recipe_path, run_name, overrides)
cfg = recipe.feedback
print("run directory:", store.run_dir)

# %% [markdown]
# ## 1 · Rubrics
# One YAML file per aspect: a definition, a descriptor for **every** score level (Prometheus/FLASK style) and
# what a critique must point to. The set's **version** is a content hash recorded with every judgement, so a
# score can always be traced to the exact rubric text it was given against.

# %%
rubrics = load_rubric_set()
print("rubric set version:", rubrics.version)
rubrics.table()

# %%
print(rubrics["logical_correctness"].render())

# %% [markdown]
# ## 2 · M0's responses, judged by the verifier
# Aspects are chosen per prompt from its task tags (math → logical correctness, completeness; bios →
# factuality, completeness, readability); untagged real prompts ask the judge model to pick. The choice is
# recorded with each judgement. The prompts are held-out **dev** prompts: the tiny world's dev split, or, in a real
# recipe (`reflection.prompt_source` / `eval.gsm8k_source` naming GSM8K), the tail of the task's training data
# (`rlrf_nb.task_data`), and then nothing of the tiny world is read. Whatever `feedback.judge` is, this section's
# judge is the verifier: the reference the LLM judge is measured against below.

# %%
world = task_data.load_world(recipe)  # None in a real recipe
model, tok, info = tw.get_m0(recipe, store, world)
print("M0:", info["path"], "on", info["placement"])
examples = task_data.dev_math(recipe, world, cfg.n_math) + task_data.dev_bios(recipe, world, cfg.n_bios)
samples = sample_to_store(store, "samples", model, tok, info["fingerprint"], examples, n=cfg.samples_per_prompt,
                          temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_response_tokens,
                          seed=recipe.run.seed)
by_id = {ex.id: ex for ex in examples}
rows = [{"example": by_id[s["example_id"]], "response_id": s["response_id"], "response": s["text"]} for s in samples]
print(f"{len(samples)} samples of {len(examples)} prompts")

# %%
verifier = VerifierJudge(rubrics, task_data.kb(world))  # the reference: exact steps, or the final answer
ver_records = judge_responses(store, "feedback", verifier, rows, rubrics, cfg.weights)
ver_frame = feedback_frame(ver_records)
score_table(ver_frame).round(2)

# %%
fig = plots.score_distribution(ver_frame, f"{verifier.id} scores per aspect (M0 samples on dev prompts)")
fig.show()

# %% [markdown]
# A critique names *what* is wrong and the true value — this is what the policy will reflect on in notebook 02.

# %%
for r in critique_examples(ver_records):
    print(f"{r['example_id']} ({r['feedback']['meta'].get('error_kind') or 'bio'}), reward {r['reward']:.2f}")
    for a in r["feedback"]["aspects"]:
        print(f"  {a['aspect']} {a['score']}/{a['max_score']}: {a['critique']}")

# %% [markdown]
# **Does the verifier agree with ground truth?** Compare its logical-correctness score with final-answer
# correctness (strict `#### N`). A verifier 5 should always mean a right answer. The reverse need not hold: a
# sample can reach the right number through a wrong step that a later error cancels ("2+2=3", then "1+2=3").
# An outcome-only reward would reinforce those samples; the fine-grained verifier does not — RLRF's argument
# for fine-grained feedback, visible in miniature.

# %%
summary = feedback_summary(ver_records, [], by_id)
print("a verifier 5 has the right answer:      ", format_rate(summary["verifier_precision"]))
print("right answers reached with a wrong step:", format_rate(summary["right_answer_wrong_steps"]))
print("overall agreement with the final answer:", format_rate(summary["verifier_math_agreement"]))
pd.Series(summary["verifier_vs_answer"])

# %%
display(Markdown(readings.verifier(summary)))

# %% [markdown]
# ## 3 · An LLM judge, and its parse failures
# The LLM judge renders the rubrics into a prompt and must answer with one JSON object
# `{aspect: {"critique": ..., "score": int}}`. Anything else — prose, a score out of range, a missing field,
# truncated JSON, two scores for one aspect — is a **parse failure**: counted, kept with its raw text, and never
# turned into a number (prometheus-eval#58 is what happens otherwise). After a failure the judge is re-asked up
# to `feedback.max_repairs` times.
#
# In a real recipe this is the recipe's own judge (`feedback.judge: llm`, at `feedback.judge_url`).
# In the tiny world the "LLM judge" is M0 itself (`feedback.judge_model`), which was never taught to judge: it
# stands in for a real judge so that the whole path — prompt, transport, parsing, accounting — runs offline.
# Expect its parse rate to be ~0. Point `feedback.judge_url` at a real OpenAI-compatible server (vLLM,
# `transformers serve`, a hosted API) to judge for real; the API key is read from the env var named in
# `feedback.api_key_env` and is never written to the run.

# %%
llm_judge = make_llm_judge(cfg, rubrics)
llm_rows = rows[: cfg.n_llm_judged // 2] + [r for r in rows if r["example"].task == "bios"][: cfg.n_llm_judged // 2]
llm_records = judge_responses(store, "feedback_llm", llm_judge, llm_rows, rubrics, cfg.weights)
parse_table(feedback_frame(llm_records + ver_records))

# %%
summary = feedback_summary(ver_records, llm_records, by_id)
print(f"LLM judge {summary['llm_judge_id']}: parse rate {format_rate(summary['llm_judge_parse_rate'])}; measured "
      f"against {summary['reference_judge_id']}")
r = llm_records[0]
print("raw LLM-judge output (first 600 chars):\n", r["feedback"]["raw"][:600])
print("\nparse errors:", [a["error"] for a in r["feedback"]["aspects"]])

# %%
fit = readings.judge_prompt_fit(cfg, rubrics, llm_records)  # judge prompt length vs a local judge's context
display(Markdown(readings.llm_judge(summary, fit)))

# %% [markdown]
# ## 4 · Calibration and consensus
# `calibrate` measures a judge against reference labels on the same responses (here: the verifier): parse
# rate, exact and within-1 agreement, mean signed difference and quadratic-weighted kappa. `agreement` gives
# the inter-judge agreement of several judges (or k samples of one) — exact agreement and Krippendorff's alpha.
# With a judge that never parses, these are honest `NaN`s rather than made-up numbers.

# %%
ver_by_resp = {r["response_id"]: r for r in ver_records}
cal = calibrate([Feedback.from_dict(r["feedback"]) for r in llm_records],
                [Feedback.from_dict(ver_by_resp[r["response_id"]]["feedback"]) for r in llm_records])
cal

# %%
display(Markdown(readings.calibration(cal, summary)))

# %%
votes = [[Feedback.from_dict(ver_by_resp[r["response_id"]]["feedback"]).score(a["aspect"]), a["score"]]
         for r in llm_records for a in r["feedback"]["aspects"]]
print("verifier vs LLM judge, all aspects:", agreement(votes))

# %% [markdown]
# With `feedback.consensus_k > 1` the LLM judge samples k judgements per response and keeps the median score per
# aspect; the k votes are stored, and their agreement says how subjective each aspect is for this judge.

# %%
agreements = {aspect: agreement(v) for aspect, v in consensus_votes(llm_records).items()}
display(Markdown(readings.consensus(agreements, cfg.consensus_k)))

# %% [markdown]
# ## 5 · Browse the feedback
# Filter by aspect and score range, or show only parse failures. In batch runs a static table stands in.

# %% [markdown]
# The numbers above go to `runs/<run_name>/results.json`; every judgement is a record in
# `runs/<run_name>/feedback.jsonl` (verifier) and `feedback_llm.jsonl`, with the raw judge text.

# %%
_ = store.update_results({"feedback": summary})

# %%
records = ver_records + llm_records  # one card per (judge, response): a response both judges scored has two
if interactive:
    display(FeedbackBrowser(records, feedback_frame(records)))
else:
    display(static_feedback_table(records, n=8))

# %% [markdown]
# ## 6 · A trained feedback model
# In the paper the feedback model is a language model **trained** on a stronger model's per-aspect feedback. The kit
# trains one on the verifier's feedback of the policy's own search (`rlrf-nb train-judge`, TRL's `SFTTrainer`,
# saved in safetensors; `docs/feedback_model.md` has how and how well), and `feedback.learned_judge` names it. Here it
# is served by `transformers serve` on 127.0.0.1 and asked through the same `LLMJudge` and HTTP transport as any judge
# URL, on the dev responses above, which it never saw in training: greedily, and, when `feedback.learned_consensus_k`
# is above 1, as a consensus of that many samples (median score per aspect; world v2's demo recipe asks greedily only,
# to save time). Every judgement is stored
# (`feedback_learned_k*.jsonl`, keyed by a hash of the judge's weights), so a rerun asks nothing again.

# %%
learned_records, learned_reports = {}, {}
if cfg.learned_judge:
    judge_path = resolve_path(cfg.learned_judge)
    half = cfg.n_learned_judged // 2
    learned_rows = ([r for r in rows if r["example"].task == "math"][: cfg.n_learned_judged - half]
                    + [r for r in rows if r["example"].task == "bios"][:half])
    with ModelServer(judge_path, store.run_dir / "serve") as srv:
        print(f"transformers serve {judge_path} on {srv.base_url}")
        for k in dict.fromkeys((1, cfg.learned_consensus_k)):
            judge = served_judge(judge_path, srv.base_url, rubrics, consensus_k=k,
                                 max_new_tokens=cfg.learned_max_new_tokens)
            learned_records[k] = judge_responses(store, f"feedback_learned_k{k}", judge, learned_rows, rubrics,
                                                 cfg.weights)
            learned_reports["greedy" if k == 1 else f"consensus of {k}"] = judge_report(
                [Feedback.from_dict(r["feedback"]) for r in learned_records[k]],
                as_teacher_rows(learned_records[k], ver_by_resp))
    display(report_table(learned_reports))
display(Markdown(readings.learned_judge(learned_reports)))

# %% [markdown]
# **Calibration.** Each panel counts the responses by the verifier's score (x) and the learned judge's (y); colour is
# the share of the verifier's column, so a rare score is as visible as a common one. Mass above the diagonal is a
# lenient judge, below it a strict one.

# %%
if learned_records:
    plots.judge_calibration(score_pairs(learned_records[1], ver_by_resp)).show()
    _ = store.update_results({"learned_judge": learned_reports})

# %% [markdown]
# **Where the learned judge and the verifier disagree.** The browser opens on those responses only (untick
# *judges disagree only* to see all); each response shows the verifier's card, then the learned judge's, with its raw
# output. In batch runs a static table of the first disagreements stands in.

# %%
if learned_records:
    pair_records = [ver_by_resp[r["response_id"]] for r in learned_records[1]] + learned_records[1]
    pair_frame = feedback_frame(pair_records)
    if interactive:
        display(FeedbackBrowser(pair_records, pair_frame, disagreements_only=True))
    else:  # the first four disagreements, each response's verifier card then the learned judge's
        cards = {(r["judge_id"], r["response_id"]): r for r in pair_records}
        display(static_feedback_table([cards[k] for k in feedback_keys(pair_frame, disagreements_only=True)], n=8))
