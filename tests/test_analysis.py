"""Analyses: bootstrap intervals with a known answer, paired tests, the results table, URIAL's token shift (0% for
identical models), and the reward-model blind spot on hand-made pools."""

import copy
import random
from pathlib import Path

import pytest
import torch

from rlrf_nb.analysis import (
    blind_spot,
    mcnemar_exact,
    paired_test,
    results_table,
    shift_summary,
    token_kind,
    token_shift,
)
from rlrf_nb.pairs import Candidate
from rlrf_nb.stats import bootstrap_ci

ROOT = Path(__file__).resolve().parents[1]


def test_bootstrap_ci_has_the_known_answer():
    rng = random.Random(1)
    xs = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(1000)]
    ci = bootstrap_ci(xs, n_boot=2000, seed=0)
    half = 1.96 * (0.3 * 0.7 / 1000) ** 0.5  # the normal-approximation half-width, 0.028
    assert ci["ci_low"] < 0.3 < ci["ci_high"] and ci["n"] == 1000
    assert abs((ci["ci_high"] - ci["ci_low"]) / 2 - half) < 0.006
    assert bootstrap_ci([2.0] * 50) == {"value": 2.0, "ci_low": 2.0, "ci_high": 2.0, "n": 50}
    assert bootstrap_ci([None, 1.0, 0.0])["n"] == 2 and bootstrap_ci([])["n"] == 0


def test_paired_tests():
    a = [1, 0, 1, 0, 1, 1, 0, 0, 1, 0] * 3
    same = paired_test(a, a)
    assert same["diff"] == 0 and same["p_mcnemar"] == 1.0 and same["p_bootstrap"] == 1.0
    assert mcnemar_exact([False] * 10, [True] * 10) == {"a_only": 0, "b_only": 10, "p_value": 2 / 1024}
    better = paired_test([0] * 40, [1] * 15 + [0] * 25)
    assert better["diff"] == pytest.approx(15 / 40) and better["p_mcnemar"] < 0.001 and better["ci_low"] > 0
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1, 0], [1])
    assert paired_test([None, 1.0], [0.5, 0.5])["n"] == 1


def test_results_table_pairs_every_model_with_the_baseline():
    per_item = {"M0": {"gsm8k": [1, 0, 0, 1] * 25, "factscore": [0.5] * 100},
                "M1": {"gsm8k": [1, 1, 0, 1] * 25, "factscore": [0.6] * 100}}
    display, long = results_table(per_item, n_boot=500)
    assert list(display.index) == ["M0", "M1"] and set(display.columns) == {"gsm8k", "factscore"}
    m1 = long[(long.model == "M1") & (long.metric == "gsm8k")].iloc[0]
    assert m1["value"] == 0.75 and m1["diff"] == pytest.approx(0.25) and m1["p"] < 0.001
    assert "Δ+0.250" in display.loc["M1", "gsm8k"] and "Δ" not in display.loc["M0", "gsm8k"]
    with pytest.raises(ValueError, match="same items"):
        results_table({"M0": {"x": [1, 0]}, "M1": {"x": [1]}})


def test_token_kinds():
    assert token_kind("12") == "digits/operators" and token_kind("<<") == "digits/operators"
    assert token_kind("=5") == "digits/operators" and token_kind(" apples") == "words/punctuation"
    assert token_kind(" ") == "whitespace" and token_kind("He") == "words/punctuation"


@pytest.fixture(scope="module")
def m0():
    from rlrf_nb.models import load_policy

    return load_policy(ROOT / "data/tiny_world/m0")


def _convs():
    from rlrf_nb.config import load_recipe
    from rlrf_nb.prompts import chat
    from rlrf_nb.tiny_world import build_world

    world = build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)
    return [chat(ex.prompt) for ex in world.math["dev"][:4]]


def test_token_shift_of_a_model_against_itself_is_zero(m0):
    model, tok = m0
    res = token_shift(model, model, tok, _convs(), max_new_tokens=64)
    assert res["n_positions"] > 50 and res["responses"] == 4
    assert res["overall"]["shifted"]["rate"] == 0.0 and res["overall"]["marginal"]["rate"] == 0.0
    assert res["overall"]["unshifted"]["rate"] == 1.0


def test_token_shift_sees_a_changed_model(m0):
    model, tok = m0
    other = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    res = token_shift(model, other, tok, _convs(), max_new_tokens=64)
    assert res["overall"]["shifted"]["rate"] + res["overall"]["marginal"]["rate"] > 0
    kinds = res["shifted_kind_share"]
    assert sum(r["k"] for r in kinds.values()) == sum(p["class"] == "shifted" for p in res["positions"])


def test_shift_summary_by_kind():
    ps = [{"class": "shifted", "kind": "digits/operators"}, {"class": "unshifted", "kind": "words/punctuation"},
          {"class": "marginal", "kind": "words/punctuation"}, {"class": "shifted", "kind": "digits/operators"}]
    s = shift_summary(ps)
    assert s["overall"]["shifted"]["k"] == 2 and s["shifted_kind_share"]["digits/operators"]["rate"] == 1.0
    assert s["by_kind"]["words/punctuation"]["marginal"]["rate"] == 0.5


def test_blind_spot_counts_wrong_above_right():
    def c(cid, pid, correct, reward, overall):
        return Candidate(cid, pid, "Q", cid, "sample", reward, {}, correct=correct, overall=overall)

    pool = [c("r1", "p", True, 0.9, 1.0), c("w1", "p", False, 0.95, 1.0), c("w2", "p", False, 0.2, None),
            c("r2", "q", True, 1.0, 1.0), c("x", "z", None, 0.5, 0.5)]
    out = blind_spot(pool, {"fine": lambda k: k.reward, "scalar": lambda k: k.overall})
    assert out["pairs"] == 2 and out["prompts"] == 1
    assert out["fine"]["wrong_above"]["k"] == 1 and out["fine"]["wrong_above"]["n"] == 2
    assert out["scalar"]["tie"]["k"] == 1 and out["scalar"]["unscored"] == 1


def test_headline_claims_verdicts_bars_and_missing_models():
    from rlrf_nb.analysis import headline_claims

    n = 200
    m0 = [1.0] * 80 + [0.0] * 120
    m2 = [1.0] * 110 + [0.0] * 90          # +0.15 on the same items: the bar of +0.10 is met
    small = [1.0] * 90 + [0.0] * 110       # +0.05: interval may exclude 0 but the bar is not met
    per_item = {"M0": {"gsm8k_strict": m0}, "M2": {"gsm8k_strict": m2},
                "no reflection M2": {"gsm8k_strict": small}, "scalar reward M2": {"gsm8k_strict": m2[::-1]}}
    claims = headline_claims(per_item, ablations={"reflection helps": "no reflection M2",
                                                  "fine-grained helps": "scalar reward M2",
                                                  "missing": "RS-SFT M2"})
    by = {c["claim"]: c for c in claims}
    assert set(by) == {"M2 beats M0, gsm8k_strict", "reflection helps (M2 vs no reflection M2), gsm8k_strict",
                       "fine-grained helps (M2 vs scalar reward M2), gsm8k_strict"}
    c = by["M2 beats M0, gsm8k_strict"]
    assert abs(c["diff"] - 0.15) < 1e-9 and c["ci_low"] > 0 and c["bar"] == 0.10 and c["verdict"] == "holds"
    assert c["n"] == n
    r = by["reflection helps (M2 vs no reflection M2), gsm8k_strict"]
    assert abs(r["diff"] - 0.10) < 1e-9 and r["bar"] is None and r["verdict"] == "holds"
    s = by["fine-grained helps (M2 vs scalar reward M2), gsm8k_strict"]
    assert s["diff"] == 0 and s["verdict"] == "not shown"
    # the bar matters: +0.05 over M0 with an interval above 0 does not hold; it is above 0 and under the bar
    weak = headline_claims({"M0": {"gsm8k_strict": m0}, "M2": {"gsm8k_strict": small}})[0]
    assert weak["ci_low"] > 0 and weak["verdict"] == "under the bar"
    worse = headline_claims({"M0": {"gsm8k_strict": m2}, "M2": {"gsm8k_strict": m0}})[0]
    assert worse["verdict"] == "reversed"


def test_variant_comparison_pairs_each_variant_with_m0_and_sums_its_compute():
    from rlrf_nb.analysis import paired_test, variant_comparison

    m0 = [1.0] * 80 + [0.0] * 120
    rlrf = [1.0] * 110 + [0.0] * 90
    grpo = [1.0] * 70 + [0.0] * 130
    per_item = {"M0": {"gsm8k_strict": m0}, "M2": {"gsm8k_strict": rlrf}, "GRPO M2": {"gsm8k_strict": grpo}}
    def rows():
        return [{"round": 0}, {"round": 1, "round_seconds": 10.0, "generated_tokens": 1000, "judged": 5,
                               "parse_failures": 1}, {"round": 2, "round_seconds": 20.0, "generated_tokens": 3000,
                                                      "judged": 7}]
    out = variant_comparison(per_item, {"rlrf": rows(), "grpo": rows(), "rloo": rows()})  # RLOO: not evaluated
    assert list(out) == ["M0", "M2", "GRPO M2"]
    assert out["M0"] == {"variant": "M0", "rounds": 0, "gsm8k_strict": 0.4}
    g = out["GRPO M2"]
    assert (g["variant"], g["rounds"], g["wall_seconds"], g["generated_tokens"], g["judge_calls"],
            g["parse_failures"]) == ("grpo", 2, 30.0, 4000, 12, 1)
    t = paired_test(m0, grpo)
    assert (g["gsm8k_strict_diff"], g["gsm8k_strict_low"], g["gsm8k_strict_high"]) == \
        (t["diff"], t["ci_low"], t["ci_high"])
    assert abs(out["M2"]["gsm8k_strict_diff_per_mtok"] - 0.15 / 0.004) < 1e-9
    # round 1's shared search is charged to every pair-based variant at the wall time of the one that ran it
    shared = {"rlrf": [{"round": 1, "round_seconds": 50.0, "search_seconds": 30.0}],
              "rs_sft": [{"round": 1, "round_seconds": 21.0, "search_seconds": 1.0}],
              "grpo": [{"round": 1, "round_seconds": 90.0, "search_seconds": 0.0}]}
    per_item1 = {"M0": per_item["M0"], "M1": per_item["M2"], "RS-SFT M1": per_item["M2"], "GRPO M1": per_item["M2"]}
    walls = {k: v.get("wall_seconds") for k, v in variant_comparison(per_item1, shared).items()}
    assert walls == {"M0": None, "M1": 50.0, "RS-SFT M1": 50.0, "GRPO M1": 90.0}
    from rlrf_nb.analysis import comparison_frame

    frame = comparison_frame(out)
    assert list(frame.index) == ["M0", "M2", "GRPO M2"] and frame.loc["M0", "gsm8k_strict"] == 0.4
    assert frame.loc["GRPO M2", "gsm8k_strict Δ vs M0"] == f"{t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
    assert frame.loc["GRPO M2", "generated_tokens"] == 4000
    # final= cuts the rounds: the variant's M1 is then its last round (not evaluated here, so left out)
    assert list(variant_comparison(per_item, {"grpo": rows()}, final=1)) == ["M0"]
