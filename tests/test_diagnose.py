"""The organism's properties (rlrf_nb.diagnose) on tiny hand-made inputs, and one end-to-end run on the real M0."""

from pathlib import Path

import pytest

from rlrf_nb import diagnose as D
from rlrf_nb.config import DiagnoseConfig, WorldConfig
from rlrf_nb.tasks.schema import Example

ROOT = Path(__file__).resolve().parents[1]


def _ex(i, steps, answer):
    sol = "\n".join(f"so x is {x}{op}{b}=<<{x}{op}{b}={y}>>{y}." for x, op, b, y in steps) + f"\n#### {answer}"
    return Example(id=f"m{i}", task="math", split="test", prompt=f"problem {i}", reference=sol, answer=str(answer),
                   tags=["math"], meta={"steps": steps})


EXS = [_ex(0, [[100, "+", 20, 120], [120, "*", 2, 240]], 240),
       _ex(1, [[300, "-", 50, 250], [250, "/", 5, 50], [50, "+", 70, 120]], 120)]
RIGHT = [e.reference for e in EXS]
# a final answer that is right, reached through a wrong step: correct but not perfect
LUCKY0 = "so x is 100+20=<<100+20=121>>121.\nso x is 121*2=<<121*2=240>>240.\n#### 240"
WRONG0 = "so x is 100+20=<<100+20=120>>120.\nso x is 120*2=<<120*2=250>>250.\n#### 250"
WRONG1 = "so x is 300-50=<<300-50=250>>250.\n#### 250"


def test_derangement_has_no_fixed_point_and_is_seeded():
    for n in (2, 3, 10):
        p = D.derangement(n, seed=1)
        assert sorted(p) == list(range(n)) and all(i != j for i, j in enumerate(p))
        assert p == D.derangement(n, seed=1)


def test_grade_math_separates_right_answer_from_every_step_right():
    assert D.grade_math(RIGHT[0], EXS[0])["perfect"]
    g = D.grade_math(LUCKY0, EXS[0])
    assert g["correct"] and not g["perfect"] and g["first_error"] == 1
    assert not D.grade_math(WRONG0, EXS[0])["correct"]


def test_math_sampling_pass_maj_and_chance():
    greedy = {"m0": WRONG0, "m1": RIGHT[1]}
    samples = {"m0": [WRONG0, LUCKY0, RIGHT[0], WRONG0], "m1": [RIGHT[1], RIGHT[1], WRONG1, RIGHT[1]]}
    res = D.math_sampling(EXS, greedy, samples, k=4)
    allc, allp = res["by_steps"]["all"]["correct"], res["by_steps"]["all"]["perfect"]
    assert allc["greedy"]["k"] == 1 and allp["greedy"]["k"] == 1
    assert allc["pass@4"]["k"] == 2 and allp["pass@4"]["k"] == 2
    # pass@1: m0 has 2/4 right answers and 1/4 perfect; m1 3/4 both
    assert allc["pass@1"]["rate"] == pytest.approx((0.5 + 0.75) / 2)
    assert allp["pass@1"]["rate"] == pytest.approx((0.25 + 0.75) / 2)
    # maj@4: m0's majority answer 250 is wrong (2 votes vs 240 twice -> first most common); m1's right
    assert allc["maj@4"]["k"] in (1, 2) and allp["maj@4"]["k"] >= 1
    assert set(res["by_steps"]) == {"all", "2 steps", "3 steps"}
    # chance: m0's samples (answers 250, 240) against m1's gold 120 and m1's (120, 250) against m0's gold 240
    assert res["chance"]["pass@4"]["k"] == 0
    # headroom, paired: m0 greedy wrong but a perfect sample (+1), m1 greedy perfect and so is a sample (0)
    assert res["headroom"]["diff"] == pytest.approx(allp["pass@4"]["rate"] - allp["greedy"]["rate"]) == 0.5


def test_refinement_vs_fresh_counts_only_greedy_wrong_problems():
    greedy = {"m0": WRONG0, "m1": RIGHT[1]}
    samples = {"m0": [WRONG0, WRONG0, RIGHT[0]], "m1": [RIGHT[1]] * 3}
    refined = {"critique": {"m0": [RIGHT[0], WRONG0]}, "scalar": {"m0": [WRONG0, WRONG0]}}
    r = D.refinement_vs_fresh(EXS, greedy, samples, refined, m=2)
    assert r["greedy_wrong"] == 1
    assert r["fresh"]["k"] == 0 and r["critique"]["k"] == 1 and r["scalar"]["k"] == 0
    assert r["critique_minus_scalar"]["diff"] == 1.0


def test_refinement_by_steps_splits_the_greedy_wrong_problems_by_their_number_of_steps():
    greedy = {"m0": WRONG0, "m1": WRONG1}
    samples = {"m0": [WRONG0, WRONG0, RIGHT[0]], "m1": [WRONG1] * 3}
    refined = {"critique": {"m0": [WRONG0, WRONG0], "m1": [RIGHT[1], WRONG1]},
               "scalar": {"m0": [WRONG0, WRONG0], "m1": [WRONG1, WRONG1]}}
    by = D.refinement_by_steps(EXS, greedy, samples, refined, m=2)
    assert list(by) == ["2 steps", "3 steps"]
    assert by["2 steps"]["greedy_wrong"] == 1 and by["2 steps"]["fresh"]["k"] == 0  # the right sample is the 3rd
    assert by["3 steps"]["critique"]["k"] == 1 and by["3 steps"]["critique_vs_fresh"]["ratio"] == float("inf")
    whole = D.refinement_vs_fresh(EXS, greedy, samples, refined, m=2)
    assert sum(g["critique"]["k"] for g in by.values()) == whole["critique"]["k"]


def test_critique_used_counts_refinements_that_write_the_named_step_as_stated():
    step1_wrong = "so x is 100+30=<<100+30=130>>130.\nso x is 130*2=<<130*2=260>>260.\n#### 260"
    greedy = {"m0": step1_wrong, "m1": WRONG1}  # m0: step 1 wrong (wrong_step); m1: step 2 missing
    refined = {"critique": {"m0": [RIGHT[0], step1_wrong], "m1": [RIGHT[1], WRONG1]},
               "scalar": {"m0": [step1_wrong, step1_wrong], "m1": [WRONG1, WRONG1]}}
    u = D.critique_used(EXS, greedy, refined, m=2)
    assert u["problems"] == 2
    assert u["critique"]["rate"] == 0.5 and u["scalar"]["rate"] == 0.0
    # only m0's draft has a wrong step to repeat: the critique's refinements repeat it once, the scalar's twice
    assert u["critique_repeats_draft"]["rate"] == 0.25 and u["scalar_repeats_draft"]["rate"] == 0.5
    assert u["critique_minus_scalar"]["diff"] == 0.5
    # where each refinement first goes wrong, against the named step: a right one is perfect, the rest fail at it
    assert {w: r["rate"] for w, r in u["critique_first_error"].items()} == {"perfect": 0.5, "before": 0.0,
                                                                            "at": 0.5, "after": 0.0}
    assert u["scalar_first_error"]["at"]["rate"] == 1.0
    broken = "so x is 300-60=<<300-60=240>>240.\n#### 240"  # m1's step 1, right in its draft, now wrong
    step2 = D.critique_used(EXS, greedy, {"critique": {"m0": [RIGHT[0]] * 2, "m1": [broken, RIGHT[1]]}}, m=2)
    assert step2["critique_first_error"]["before"]["rate"] == 0.25


def test_refinement_items_hold_the_critique_or_only_a_score():
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.verifier import VerifierJudge

    rubrics = load_rubric_set()
    judge = VerifierJudge(rubrics, {})
    greedy = {"m0": WRONG0, "m1": RIGHT[1]}
    crit = D.refinement_items(EXS, greedy, judge, rubrics, "critique")
    scal = D.refinement_items(EXS, greedy, judge, rubrics, "scalar")
    assert [i["id"] for i in crit] == ["m0"] == [i["id"] for i in scal]
    assert "Step 2 computes 120*2=250" in crit[0]["prompt"]
    assert "- overall quality (2/5)\n" in scal[0]["prompt"] and "Step" not in scal[0]["prompt"].split("Feedback:")[1]


class _World:
    def __init__(self, people):
        self._p = {p["name"]: p for p in people}

    def person(self, name):
        return self._p[name]


def test_bio_facts_supported_chance_and_facts_only_samples_find():
    from rlrf_nb.tasks import bios

    people = bios.make_people(0, 2)
    exs = [Example(id=f"b{i}", task="bios", split="test", prompt=bios.bio_prompt(p["name"]), tags=["bios"],
                   meta={"entity": p["name"]}) for i, p in enumerate(people)]
    a, b = people
    greedy = {"b0": bios.fact_sentence(a["name"], "occupation", a["occupation"]),
              "b1": bios.fact_sentence(b["name"], "occupation", "x" + b["occupation"])}
    samples = {"b0": [greedy["b0"]], "b1": [bios.fact_sentence(b["name"], "occupation", b["occupation"])]}
    r = D.bio_facts(exs, _World(people), greedy, samples)
    assert r["greedy_supported"]["k"] == 1 and r["greedy_supported"]["n"] == 2
    assert r["samples_add_facts"]["k"] == 1  # b1's occupation: greedy wrong, a sample right
    assert 0 < r["chance_uniform"] < 0.2



def test_fact_headroom_scores_greedy_majority_oracle_and_all_right_bios(monkeypatch):
    """Stop 47: how far FactScore can move by picking among the policy's own bios (the FactScore bar's ceiling)."""
    import math as pymath

    from rlrf_nb.tasks import bios

    (a,) = bios.make_people(0, 1)
    ex = Example(id="b0", task="bios", split="test", prompt=bios.bio_prompt(a["name"]), tags=["bios"],
                 meta={"entity": a["name"]})
    other = next(c for c in bios.CITIES if c != a["birthplace"])

    def bio(**vals):
        return " ".join(bios.fact_sentence(a["name"], k, v) for k, v in vals.items())

    greedy = {"b0": bio(occupation=a["occupation"], birthplace=other)}
    samples = {"b0": [bio(birthplace=other), bio(birthplace=other), bio(birthplace=a["birthplace"]),
                      bio(employer="x" + a["employer"])]}
    h = D.fact_headroom([ex], _World([a]), greedy, samples)
    assert h["greedy"]["init_score"] == 0.5 and h["greedy"]["facts_per_response"] == 2
    assert h["majority"]["init_score"] == pytest.approx(1 / 3)  # greedy's occupation, the mode birthplace, employer
    # a sample states the true birthplace; the employer only samples state, wrongly, is left to greedy (unstated)
    assert h["oracle"]["init_score"] == 1.0 and h["oracle"]["facts_per_response"] == 2
    assert h["all_right"]["init_score"] == 1.0 and h["all_right"]["facts_per_response"] == len(bios.ATTRIBUTES)
    assert h["all_right"]["score"] == pytest.approx(pymath.exp(1 - 10 / 6))  # 6 facts: FActScore's penalty caps it
    # a person nothing is stated about (greedy and samples miscopy the name) keeps greedy's bio: scored 0, not dropped
    miss = {"b0": bios.fact_sentence("Nobody " + a["name"], "occupation", a["occupation"])}
    h0 = D.fact_headroom([ex], _World([a]), miss, {"b0": [miss["b0"]]})
    assert all(h0[k]["score"] == 0.0 for k in ("greedy", "majority", "oracle"))
    monkeypatch.setattr(D, "verdicts", lambda d: [])  # no math measured here: only the bio lines are read
    lines = D.report_lines({"k": 4, "m": 1, "split": "test", "n_math": 0, "n_bios": 1, "dev_problems": 0, "math": {},
                            "reflection": {}, "context": {}, "bios": {
                                **D.bio_facts([ex], _World([a]), greedy, samples), "factscore_headroom": h}})
    assert any("canonical" in line and "oracle" in line and "omit wrong" in line and "all right 0.513" in line
               for line in lines)
    # world v2's greedy above: 1 right of 2; dropping the wrong birthplace leaves 1 fact (penalty exp(-9)): kept
    assert h["omit_wrong"]["facts_per_response"] == 2 and h["omit_wrong"]["score"] == h["greedy"]["score"]
    # people with 12 facts (bios.make_people(n_attributes=12)): the oracle fills all 12, and the penalty is gone
    (c,) = bios.make_people(0, 1, 12)
    exc = Example(id="c0", task="bios", split="test", prompt=bios.bio_prompt(c["name"]), tags=["bios"],
                  meta={"entity": c["name"]})
    g12 = {"c0": " ".join(bios.fact_sentence(c["name"], k, c[k] if k != "pet" else "owl" if c[k] != "owl" else "cat")
                          for k in bios.ALL_ATTRIBUTES)}
    h12 = D.fact_headroom([exc], _World([c]), g12, {"c0": [bios.reference_bio(c)]})
    assert h12["greedy"]["score"] == pytest.approx(11 / 12) and h12["greedy"]["facts_per_response"] == 12
    assert h12["oracle"]["score"] == 1.0 and h12["all_right"]["score"] == 1.0
    # omission alone: leaving out the wrong pet (11 facts, no penalty) puts FactScore at 1
    assert h12["omit_wrong"]["score"] == 1.0 and h12["omit_wrong"]["facts_per_response"] == 11
    # 12 facts, 3 wrong: dropping all 3 leaves 9 and costs exp(1 - 10/9) of 1.0 (0.895) against 9/10 at 10 facts: the
    # best is to drop 2 (9 right of 10: 0.900); with 6 facts a wrong one is kept (2 right of 6 beats 2 of 5)
    wrong3 = {k: next(v for v in bios._VALUES[k] if v != c[k]) if k in ("birthplace", "residence", "pet") else c[k]
              for k in bios.ALL_ATTRIBUTES}
    g3 = {"c0": " ".join(bios.fact_sentence(c["name"], k, v) for k, v in wrong3.items())}
    h3 = D.fact_headroom([exc], _World([c]), g3, {"c0": [g3["c0"]]})
    assert h3["greedy"]["score"] == pytest.approx(9 / 12)
    assert h3["omit_wrong"]["facts_per_response"] == 10 and h3["omit_wrong"]["score"] == pytest.approx(0.9)
    assert h0["omit_wrong"]["score"] == 0.0
    # omission works on greedy's own sentences: 4 right and 8 about a miscopied name keeps 10 sentences (4 of 10, 0.4)
    # where the canonical rewrite keeps the 4 named facts (0.223 under the penalty); 9 right sentences and 3 repeats
    # (all supported) drop nothing, where the rewrite keeps 9 facts (0.895)
    right4 = [bios.fact_sentence(c["name"], k, c[k]) for k in bios.ALL_ATTRIBUTES[:4]]
    named8 = [bios.fact_sentence("Nobody " + c["name"], k, c[k]) for k in bios.ALL_ATTRIBUTES[4:]]
    hm = D.fact_headroom([exc], _World([c]), {"c0": " ".join(right4 + named8)}, {})
    assert hm["greedy"]["score"] == pytest.approx(4 / 12)
    assert hm["omit_wrong"]["facts_per_response"] == 10 and hm["omit_wrong"]["score"] == pytest.approx(0.4)
    assert hm["canonical"]["facts_per_response"] == 4
    assert hm["canonical"]["score"] == pytest.approx(pymath.exp(1 - 10 / 4))
    right9 = [bios.fact_sentence(c["name"], k, c[k]) for k in bios.ALL_ATTRIBUTES[:9]]
    hr = D.fact_headroom([exc], _World([c]), {"c0": " ".join(right9 + right9[:3])}, {})
    assert hr["greedy"]["score"] == 1.0 and hr["omit_wrong"]["score"] == 1.0
    assert hr["omit_wrong"]["facts_per_response"] == 12
    assert hr["canonical"]["score"] == pytest.approx(pymath.exp(1 - 10 / 9))
    f12 = D.bio_facts([exc], _World([c]), g12, {"c0": [bios.reference_bio(c)]})
    assert f12["samples_add_facts"]["k"] == 1 and f12["samples_add_facts"]["n"] == 1  # the pet, of 12 facts

def test_context_coverage_counts_prompts_that_do_not_fit():
    from rlrf_nb.models import load_policy

    _, tok = load_policy(ROOT / "data/tiny_world/m0")
    c = D.context_coverage(tok, {"short": ["hi"], "long": ["word " * 400]}, max_new_tokens=50, context=300)
    assert c["short"]["fits"]["k"] == 1 and c["long"]["fits"]["k"] == 0 and c["long"]["max_tokens"] > 300


def test_verdicts_read_the_headline_against_the_targets():
    d = {"k": 4, "m": 2, "math": {"T1": {"chance": {"pass@4": {"rate": 0.01}},
                                         "by_steps": {"all": {"perfect": {"pass@4": {"rate": 0.7},
                                                                          "greedy": {"rate": 0.4}}}}}},
         "reflection": {"T1": {"critique_vs_fresh": {"ratio": 2.0},
                               "critique_minus_scalar": {"ci_low": 0.05}}},
         "context": {"q": {"prompts": 3, "fits": {"rate": 1.0}}}}
    v = {r["property"]: r["holds"] for r in D.verdicts(d)}
    assert all(v.values()) and len(v) == 5
    d["math"]["T1"]["chance"]["pass@4"]["rate"] = 0.05
    assert not D.verdicts(d)[0]["holds"]


def test_diagnose_end_to_end_on_the_committed_m0(tmp_path):
    from rlrf_nb.models import load_policy, model_fingerprint
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.store import RunStore
    from rlrf_nb.tiny_world import build_world
    from rlrf_nb.verifier import VerifierJudge

    world = build_world(WorldConfig(math_test=6, math_dev=6, math_rl=6, math_train=6))
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    rubrics = load_rubric_set()
    judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    cfg = DiagnoseConfig(n_math=6, n_bios=2, k=2, m=2, temperatures=[1.0], max_new_tokens=48, batch_size=16)
    store = RunStore(tmp_path / "run")
    d = D.diagnose(model, tok, model_fingerprint(ROOT / "data/tiny_world/m0"), world, store, cfg, judge=judge,
                   rubrics=rubrics)
    assert d["n_math"] == 6 and "T1" in d["math"] and "bios" in d and d["context"]
    lines = D.report_lines(d)
    assert any("design targets" in line for line in lines)
    # a rerun is served from the store
    n = len(store.artifact("diagnose/test/math_samples_T1"))
    D.diagnose(model, tok, model_fingerprint(ROOT / "data/tiny_world/m0"), world, store, cfg, judge=judge,
               rubrics=rubrics)
    assert len(store.artifact("diagnose/test/math_samples_T1")) == n == 12


def test_positive_control_data_gold_sft_rows_and_gold_over_wrong_pairs():
    """Issue 16's controls: gold SFT trains on every reference solution; gold DPO pairs a reference (chosen) with
    the policy's lowest-reward wrong candidate of the same prompt, and skips prompts with no wrong candidate."""
    from rlrf_nb.pairs import Candidate
    from rlrf_nb.tasks.schema import Example
    from rlrf_nb.training import gold_candidates, gold_pairs, rs_sft_rows

    exs = [Example(id=f"p{i}", task="math", split="rl", prompt=f"What is {i}+1?", answer=str(i + 1),
                   reference=f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}") for i in range(3)]
    gold = gold_candidates(exs)
    assert [c.candidate_id for c in gold] == ["p0/gold", "p1/gold", "p2/gold"] and len(rs_sft_rows(gold)) == 3
    pool = [Candidate("p0/s0", "p0", exs[0].prompt, "#### 7", "sample", 0.2, {}, correct=False),
            Candidate("p0/s1", "p0", exs[0].prompt, "#### 9", "sample", 0.1, {}, correct=False),
            Candidate("p1/s0", "p1", exs[1].prompt, exs[1].reference, "sample", 1.0, {}, correct=True)]
    pairs = gold_pairs(exs, pool)
    assert len(pairs) == 1 and pairs[0]["chosen"][0]["content"] == exs[0].reference
    assert pairs[0]["rejected"][0]["content"] == "#### 9"  # the lowest-reward wrong candidate


def test_paired_math_table_pairs_each_model_with_m0_on_the_same_problems():
    from rlrf_nb.analysis import paired_math_table

    m0 = [{"id": f"t{i}", "correct": i % 2 == 0, "perfect": i % 4 == 0} for i in range(40)]
    better = [{"id": f"t{i}", "correct": True, "perfect": i % 2 == 0} for i in range(40)]
    table = paired_math_table({"M0": m0, "gold SFT": better}, n_boot=200)
    row = table[(table.model == "gold SFT") & (table.measure == "final answer")].iloc[0]
    assert row["diff"] == pytest.approx(0.5) and row["diff_low"] > 0 and row["verdict"] == "raises"
    with pytest.raises(ValueError, match="differ"):
        paired_math_table({"M0": m0, "other": better[::-1]})
