"""Readings: each result's sentence follows its numbers (change the numbers, the words change), and a result with
nothing to show says why and how to get data there."""

import math

import pandas as pd

from rlrf_nb import readings as R
from rlrf_nb.stats import pct, rate


def test_pct_of_and_newcombe_difference():
    assert R.pct(rate(175, 1980)) == "8.8% [7.7, 10.2]" and R.pct(rate(0, 0)) == "n/a"
    assert R.of(rate(175, 1980), "refinements") == "175 of 1,980 refinements (8.8% [7.7, 10.2])"
    d = R.rate_diff(rate(226, 500), rate(217, 500))
    assert math.isclose(d["diff"], -0.018) and d["ci_low"] < -0.018 < d["ci_high"] and d["ci_low"] < 0 < d["ci_high"]
    assert R.direction(d["ci_low"], d["ci_high"]) == "no difference shown"
    big = R.rate_diff(rate(100, 500), rate(300, 500))
    assert R.direction(big["ci_low"], big["ci_high"]) == "higher"
    assert math.isnan(R.rate_diff(rate(0, 0), rate(1, 2))["diff"])


def _summary(prec=(79, 79), hidden=(43, 122), llm=(0, 15)):
    return {"verifier_precision": rate(*prec), "right_answer_wrong_steps": rate(*hidden),
            "verifier_math_agreement": rate(557, 600), "llm_judge_parse_rate": rate(*llm),
            "llm_judge_id": "llm:m0", "reference_judge_id": "verifier/v2"}


def test_verifier_reading_follows_the_numbers():
    text = R.verifier(_summary())
    assert "always meant a right final answer" in text and "79 of 79" in text and "43 of 122 right answers" in text
    assert "2 fives went to wrong answers" in R.verifier(_summary(prec=(77, 79)))
    untrained = R.verifier(_summary(prec=(0, 0), hidden=(3, 3)))
    assert "No math response got a verifier 5" in untrained and "retrain" in untrained


def test_llm_judge_reading_explains_a_judge_that_never_parses_and_how_to_get_a_real_one():
    fit = {"n": 6, "min_tokens": 2100, "max_tokens": 3428, "context": 384, "over": 6}
    text = R.llm_judge(_summary(), fit)
    assert "parsed none of its 15" in text and "3,428" in text and "384" in text and "feedback.judge_url" in text
    assert "sequence length" in text  # the tokenizer's red warning is explained where it shows
    good = R.llm_judge(_summary(llm=(150, 150)))
    assert "150 of 150" in good and "usable as it is" in good
    assert "not yet usable" in R.llm_judge(_summary(llm=(3, 15)))
    assert "n_llm_judged" in R.llm_judge(_summary(llm=(0, 0)))


def test_calibration_and_consensus_say_why_they_are_empty_and_how_to_fill_them():
    nan_cal = pd.DataFrame([{"aspect": "logical_correctness", "n": 3, "parsed": 0, "parse_rate": 0.0}])
    assert "NaN, not zero" in R.calibration(nan_cal, _summary()) and "judge_url" in R.calibration(nan_cal, _summary())
    cal = pd.DataFrame([{"aspect": "logical_correctness", "n": 10, "parsed": 10, "parse_rate": 1.0, "exact": 0.5,
                         "within_1": 0.9, "mean_diff": 0.8, "kappa_quadratic": 0.4}])
    text = R.calibration(cal, _summary())
    assert "more lenient than the verifier" in text and "+0.80" in text and "κ 0.40" in text
    assert "stricter than" in R.calibration(cal.assign(mean_diff=-1.0), _summary())
    one = R.consensus({}, 1)
    assert "consensus_k` is 1" in one and "consensus_k: 3" in one
    assert "No agreement to measure" in R.consensus({"completeness": {"items": 0}}, 3)
    ag = {"completeness": {"items": 10, "exact": 0.9, "pairwise": 0.95, "alpha": 0.8},
          "factuality": {"items": 10, "exact": 0.4, "pairwise": 0.6, "alpha": 0.2}}
    text = R.consensus(ag, 3)
    assert "90% of 10" in text and "least consistent aspect is factuality" in text


def _stats(beat=(175, 1980), worse=(1333, 1980), best=(49, 200)):
    return {"refinement_beats_parent": rate(*beat), "refinement_worse_than_parent": rate(*worse),
            "mean_reward_gain": -0.159, "wrong_draft_fixed": rate(126, 1775), "best_is_refinement": rate(*best),
            "best_is_refinement_among_refined": rate(49, 99), "parse_failures": 0}


def test_search_reading_gives_the_verdict_the_intervals_support():
    text = R.search(_stats())
    assert "beat their drafts 8.8% [7.7, 10.2]" in text and "worse 67.3% [65.2, 69.4]" in text
    assert "does not yet pay" in text and "49 of 200 prompts" in text and "24% unchanged" in text
    assert "reflection pays" in R.search(_stats(beat=(1333, 1980), worse=(175, 1980)))
    assert "neither direction is clear" in R.search(_stats(beat=(3, 30), worse=(4, 30)))
    assert "added nothing to the pairs" in R.search(_stats(best=(0, 8)))
    assert "No refinement was scored" in R.search(_stats(beat=(0, 0), worse=(0, 0)))


def _cmp(low=-0.037, var=-0.06, full=184):
    return {"metric": "right_over_wrong", "policy": "best_vs_worst", "fraction": 0.9, "samples_only": 151,
            "full": full, "full_budget": 1980, "random_budget": 1717.0, "low_best_budget": 1780,
            "variance_budget": 1820, "low_best_saving": low, "variance_saving": var}


def test_budget_reading_says_when_prioritised_orders_lose_to_random():
    text = R.budget(_cmp())
    assert "both prioritised orders are worse than random" in text and "1,717" in text and "4% more" in text
    assert "lowest best sample first beats random" in R.budget(_cmp(low=0.2))
    assert "neither prioritised order beats random" in R.budget(_cmp(low=0.0))
    assert "no prompt order can save anything" in R.budget(_cmp(full=151))


def _pair(chosen_words, rejected_words, right=True):
    return {"chosen": [{"role": "assistant", "content": "w " * chosen_words}],
            "rejected": [{"role": "assistant", "content": "w " * rejected_words}], "margin": 0.5,
            "chosen_correct": right, "rejected_correct": False if right else None}


def test_pairs_reading_counts_pairs_and_flags_length_bias():
    long = [_pair(20, 5) for _ in range(40)]
    text = R.pairs({"best_vs_worst": long, "no_reflection": long[:30]}, 50, "best_vs_worst")
    assert "40 pairs from 50 prompts, 40 of them a right answer" in text and "+10 right-over-wrong" in text
    assert "more than half" in text
    short = R.pairs({"best_vs_worst": [_pair(5, 20) for _ in range(40)]}, 50, "best_vs_worst")
    assert "no pull towards length" in short
    assert "No pair from 50 prompts" in R.pairs({"best_vs_worst": []}, 50, "best_vs_worst")


def test_refinement_aspects_reading_names_the_aspects_from_the_data():
    frame = pd.DataFrame([{"aspect": "logical_correctness", "parsed": True, "delta": d} for d in (2, 1, 0, -1)]
                         + [{"aspect": "completeness", "parsed": True, "delta": d} for d in (-1, -1, 0, 1)]
                         + [{"aspect": "completeness", "parsed": False, "delta": float("nan")}])
    text = R.refinement_aspects(frame)
    assert text.startswith("**logical correctness improves most often**: 50.0%") and "completeness gets worse" in text
    assert "No scored refinement" in R.refinement_aspects(frame[~frame["parsed"]])
    one = R.refinement_aspects(frame[frame["aspect"] == "completeness"])  # the same aspect both ways: said once
    assert "It also gets worse most often: 50.0%" in one and one.count("completeness") == 1


def one_round_variants(evals: dict[str, dict], baseline: str = "M0") -> str:
    """Notebook 03's one-round variants against M0 on held-out dev math; no notebook shows it any more, so it lives
    here (moved out of rlrf_nb.readings unchanged) and keeps its test."""
    if baseline not in evals:
        return f"**No {baseline} evaluation** to compare the variants with."
    base = evals[baseline]["math_accuracy"]
    others = {k: v for k, v in evals.items() if k != baseline}
    if not others:
        return "**Only M0 was evaluated**: no variant was trained (see the messages above), so there is no comparison."
    parts, dirs = [], {}
    for name, e in others.items():
        d = R.rate_diff(base, e["math_accuracy"])
        dirs[name] = R.direction(d["ci_low"], d["ci_high"])
        parts.append(f"{name} {pct(e['math_accuracy'])}, {R._diff_text(d)}")
    below = [n for n in others if evals[n]["math_accuracy"]["rate"] < base["rate"]]
    shown = {n: d for n, d in dirs.items() if d != "no difference shown"}
    if shown:
        verdict = "; ".join(f"{n} is {d} than {baseline} beyond the interval" for n, d in shown.items())
    else:
        verdict = (f"no variant differs from {baseline} beyond the 95% interval"
                   + (f" (all {len(others)} are below it)" if len(below) == len(others) else ""))
    return (f"**Dev math after one round, against {baseline} {pct(base)} (n={base['n']}): {verdict}.** "
            + "; ".join(parts) + f" (difference to {baseline} in points, unpaired 95% interval).")


def test_one_round_variants_reading():
    evals = {"M0": {"math_accuracy": rate(99, 200)}, "RLRF (DPO)": {"math_accuracy": rate(96, 200)},
             "RS-SFT": {"math_accuracy": rate(92, 200)}}
    text = one_round_variants(evals)
    assert "no variant differs from M0 beyond the 95% interval (all 2 are below it)" in text and "-1.5 points" in text
    evals["RS-SFT"] = {"math_accuracy": rate(150, 200)}
    assert "RS-SFT is higher than M0 beyond the interval" in one_round_variants(evals)
    assert "no variant was trained" in one_round_variants({"M0": evals["M0"]})


def _round_rows(*ks, n=200):
    return [{"policy": f"M{t}", "round": t, "math_accuracy": rate(k, n), "bio_claims_supported": rate(12, 252)}
            for t, k in enumerate(ks)]


def test_rounds_and_variant_rounds_readings():
    text = R.rounds(_round_rows(99, 96, 96))
    assert "M0 49.5% → M1 48.0% → M2 48.0%" in text and "no change shown" in text and "Bio claims" in text
    assert "a gain beyond the interval" in R.rounds(_round_rows(60, 90, 150))
    assert "No trained round" in R.rounds(_round_rows(99))
    variants = {"rlrf": _round_rows(99, 96, 96), "no_reflection": _round_rows(99, 97, 95),
                "scalar": _round_rows(99, 89, 95)}
    text = R.variant_rounds(variants)
    assert "After 2 rounds, RLRF M2 48.0%" in text and "within the interval of every ablation" in text
    variants["scalar"] = _round_rows(99, 60, 40)
    assert "RLRF is higher than scalar" in R.variant_rounds(variants)
    assert "rounds.variants" in R.variant_rounds({"rlrf": _round_rows(99, 96)})


def test_claims_token_shift_and_blind_spot_readings():
    claims = [{"claim": "M2 beats M0, gsm8k_strict", "diff": -0.016, "ci_low": -0.042, "ci_high": 0.010,
               "verdict": "not shown"},
              {"claim": "M2 beats M0, factscore", "diff": 0.003, "ci_low": -0.003, "ci_high": 0.009,
               "verdict": "not shown"}]
    text = R.claims(claims)
    assert "Of 2 claims: 2 not shown." in text and "None of the paper's claims holds" in text
    claims[0].update(diff=0.03, ci_low=0.01, ci_high=0.05, bar=0.10, verdict="under the bar")
    text = R.claims(claims)
    assert "+0.030 [+0.010, +0.050], above 0 but under its bar of +0.10" in text and "None of" in text
    claims[0].update(diff=0.12, ci_low=0.05, ci_high=0.2, verdict="holds")
    text = R.claims(claims)
    assert "1 holds" in text and "+0.120 [+0.050, +0.200], holds" in text and "None of" not in text
    assert "No claim can be tested" in R.claims([])

    shift = {"n_positions": 1000, "overall": {"unshifted": rate(995, 1000), "marginal": rate(5, 1000),
                                              "shifted": rate(0, 1000)}, "shifted_kind_share": {}}
    text = R.token_shift(shift, "M2")
    assert "99.5% [98.8, 99.8] of M2's greedy tokens" in text and "barely moved" in text
    shift["overall"]["shifted"] = rate(50, 1000)
    shift["shifted_kind_share"] = {"digit": rate(40, 50), "word": rate(10, 50)}
    assert "Most shifted tokens are digit (80.0%" in R.token_shift(shift, "M2")
    assert "against itself" in R.token_shift(shift, "M0")

    spot = {"pairs": 400, "prompts": 90, "fine-grained reward": {"wrong_above": rate(20, 400), "tie": rate(0, 400),
                                                                 "unscored": 0},
            "overall score (scalar)": {"wrong_above": rate(0, 400), "tie": rate(400, 400), "unscored": 0}}
    text = R.blind_spot(spot, 20, 15)
    assert "400 right/wrong pairs from 90 prompts" in text and "5.0% [3.3, 7.6] wrong above right" in text
    assert "15 (75%)" in text
    assert "No right/wrong pair" in R.blind_spot({"pairs": 0, "prompts": 0}, 0, 0)


def test_judge_prompt_fit_measures_the_committed_m0_as_a_judge():
    from types import SimpleNamespace

    from rlrf_nb.feedback import AspectFeedback, Feedback
    from rlrf_nb.rubrics import load_rubric_set

    fb = Feedback("llm:m0", "v", [AspectFeedback("logical_correctness", None, 1, 5, "", False, "invalid JSON")])
    rec = {"prompt": "Ava has 3 apples. How many?", "response": "3+2=5\n#### 5", "feedback": fb.to_dict()}
    cfg = SimpleNamespace(judge_url=None, judge_model="data/tiny_world/m0", trust_remote_code=False)
    fit = R.judge_prompt_fit(cfg, load_rubric_set(), [rec])
    assert fit["context"] == 384 and fit["max_tokens"] > fit["context"] and fit["over"] == 1
    assert R.judge_prompt_fit(SimpleNamespace(judge_url="http://127.0.0.1:1/v1"), None, [rec]) is None


def test_positive_controls_reading_follows_the_intervals():
    from rlrf_nb.readings import positive_controls

    def row(model, lo, hi):
        return {"model": model, "measure": "every step", "diff": (lo + hi) / 2, "diff_low": lo, "diff_high": hi,
                "n": 500}

    m0 = {"model": "M0", "measure": "every step", "n": 500}
    flat = positive_controls([m0, row("gold SFT", -0.032, 0.014), row("gold DPO", -0.044, 0.002)])
    assert "Neither control raises" in flat and "-3.2" in flat and "says nothing about RLRF" in flat
    assert "Both controls raise" in positive_controls([m0, row("gold SFT", 0.42, 0.50), row("gold DPO", 0.06, 0.13)])
    assert "No positive control" in positive_controls([m0])
