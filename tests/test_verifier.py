"""The verifier judge: right step named, scores in range, bio claims checked; reward aggregation."""

import random

import pytest

from rlrf_nb.feedback import Feedback, scalar_reward, select_aspects
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.tasks import bios as B
from rlrf_nb.tasks import math as M
from rlrf_nb.tasks.schema import Example
from rlrf_nb.verifier import VerifierJudge

RUBRICS = load_rubric_set()
PEOPLE = B.make_people(0, 5)
KB = {p["name"]: p for p in PEOPLE}
JUDGE = VerifierJudge(RUBRICS, KB)
MATH = Example("m1", "math", "test", "Ava has 8 apples. She loses 5 apples. The number grows 3 times. How many?",
               "She loses 5 apples, so Ava has 8-5=<<8-5=3>>3 apples.\n"
               "The number grows 3 times, so Ava has 3*3=<<3*3=9>>9 apples.\n#### 9",
               "9", ["math"], {"steps": [[8, "-", 5, 3], [3, "*", 3, 9]]})
ASPECTS = ["logical_correctness", "completeness"]


def _scores(fb: Feedback) -> dict:
    return {a.aspect: a.score for a in fb.aspects}


def test_correct_solution_gets_top_scores():
    fb = JUDGE.judge(MATH.prompt, MATH.reference, ASPECTS, MATH)
    assert _scores(fb) == {"logical_correctness": 5, "completeness": 5}
    assert fb.rubric_version == RUBRICS.version and fb.judge_id == "verifier/v2" and fb.meta["correct"]
    assert scalar_reward(fb) == 1.0


@pytest.mark.parametrize("text,step,needle,logic", [
    ("A 8-5=<<8-5=4>>4.\nB 4*3=<<4*3=12>>12.\n#### 12", 1, "Step 1 computes 8-5=4; 8-5 is 3.", 1),
    ("A 8-5=<<8-5=3>>3.\nB 3*3=<<3*3=8>>8.\n#### 8", 2, "Step 2 computes 3*3=8; 3*3 is 9.", 2),
    ("A 8-4=<<8-4=4>>4.\nB 4*3=<<4*3=12>>12.\n#### 12", 1, "this step should be 8-5=3", 1),
    ("A 8-5=<<8-5=3>>3.\nB 3*3=<<3*3=9>>9.\n#### 10", None, "final answer 10", 3),
])
def test_incorrect_solutions_name_the_right_step(text, step, needle, logic):
    fb = JUDGE.judge(MATH.prompt, text, ASPECTS, MATH)
    lc = fb.aspects[0]
    assert fb.meta["first_error"] == step and needle in lc.critique
    assert lc.score == logic and 1 <= fb.aspects[1].score <= 5
    assert not fb.meta["correct"] and scalar_reward(fb) < 1.0


def test_extra_steps_lower_completeness_even_after_an_earlier_error():
    text = "A 8-5=<<8-5=3>>3.\nB 3*3=<<3*3=8>>8.\nC 8+1=<<8+1=9>>9.\n#### 9"
    fb = JUDGE.judge(MATH.prompt, text, ASPECTS, MATH)
    assert fb.score("logical_correctness") == 2 and fb.score("completeness") == 4
    assert "3 steps; the problem needs 2" in fb.aspects[1].critique


def test_missing_steps_and_final_line_lower_completeness():
    fb = JUDGE.judge(MATH.prompt, "A 8-5=<<8-5=3>>3.\n#### 3", ASPECTS, MATH)
    assert fb.score("completeness") == 2 and "Only 1 of the 2" in fb.aspects[1].critique
    fb = JUDGE.judge(MATH.prompt, MATH.reference.replace("\n#### 9", ""), ASPECTS, MATH)
    assert fb.score("completeness") == 3 and fb.score("logical_correctness") == 3


def test_verifier_agrees_with_ground_truth_on_generated_drafts():
    exs = M.generate_splits(3, {"test": 200})["test"]
    rng = random.Random(0)
    for ex in exs:
        text = ex.reference if rng.random() < 0.5 else M.corrupt_solution(rng, ex)[0]
        fb = JUDGE.judge(ex.prompt, text, ASPECTS, ex)
        assert (fb.score("logical_correctness") == 5) == M.is_correct(text, ex.answer)


def test_bio_claims_are_checked_and_wrong_ones_named_with_the_truth():
    p = PEOPLE[0]
    ex = Example("b1", "bios", "test", B.bio_prompt(p["name"]), tags=["bios"], meta={"entity": p["name"]})
    aspects = ["factuality", "completeness", "readability"]
    fb = JUDGE.judge(ex.prompt, B.reference_bio(p), aspects, ex)
    assert _scores(fb) == {"factuality": 5, "completeness": 5, "readability": 5}
    draft, wrong = B.corrupt_bio(random.Random(0), p, n_wrong=1)
    short = " ".join(B.split_claims(draft)[:3]) + " " + B.split_claims(draft)[0]
    fb = JUDGE.judge(ex.prompt, short + " Jin Ora writes.", aspects, ex)
    assert fb.score("completeness") < 5 and fb.score("readability") < 5
    assert "'Jin Ora writes.'" in fb.aspects[2].critique  # quoted text keeps its case
    fb = JUDGE.judge(ex.prompt, draft, aspects, ex)
    assert fb.score("factuality") == 4 and p[wrong[0]] in fb.aspects[0].critique
    assert JUDGE.judge(ex.prompt, "", aspects, ex).score("factuality") == 1


def test_verifier_refuses_unknown_aspects_and_missing_ground_truth():
    with pytest.raises(ValueError, match="cannot judge aspect"):
        JUDGE.judge(MATH.prompt, MATH.reference, ["helpfulness"], MATH)
    with pytest.raises(ValueError, match="needs the example"):
        JUDGE.judge(MATH.prompt, MATH.reference, ASPECTS)


def test_aspect_selection_from_tags_and_fallback():
    assert select_aspects(MATH, RUBRICS) == (["logical_correctness", "completeness"], "tags")
    untagged = Example("x", "instruct", "test", "Write a poem.")
    assert select_aspects(untagged, RUBRICS)[1] == "fallback"

    class Picker:
        def select_aspects(self, prompt, candidates):
            return ["depth", "not_an_aspect"], "raw"

    assert select_aspects(untagged, RUBRICS, Picker()) == (["depth"], "judge")


def test_scalar_reward_weights_and_parse_failures():
    from rlrf_nb.feedback import AspectFeedback

    fb = Feedback("j", "v", [AspectFeedback("a", 5, 1, 5, "c"), AspectFeedback("b", 1, 1, 5, "c")])
    assert scalar_reward(fb) == 0.5 and scalar_reward(fb, {"a": 3.0, "b": 1.0}) == 0.75
    failed = Feedback("j", "v", [AspectFeedback("a", 5, 1, 5, "c"),
                                 AspectFeedback("b", None, 1, 5, "", parse_ok=False, error="invalid JSON")])
    assert scalar_reward(failed) is None
    with pytest.raises(ValueError, match="score must be None exactly when parse_ok"):
        AspectFeedback("a", None, 1, 5, "c")


def test_judging_stage_records_resume_and_summary(tmp_path):
    from rlrf_nb.feedback import feedback_frame, feedback_summary, judge_responses, parse_table
    from rlrf_nb.store import RunStore

    store = RunStore(tmp_path / "run")
    lucky = "A 8-5=<<8-5=4>>4.\nB 4*3=<<4*3=9>>9.\n#### 9"  # two wrong steps, right final answer
    rows = [{"example": MATH, "response_id": f"r{i}", "response": t}
            for i, t in enumerate([MATH.reference, lucky, "#### 7"])]
    twin = [{"example": MATH, "response_id": "twin", "response": lucky}]  # same text as r1: judged once
    recs = judge_responses(store, "feedback", JUDGE, rows + twin, RUBRICS, {"logical_correctness": 2.0})
    assert [r["response_id"] for r in recs] == ["r0", "r1", "r2", "twin"] and len(store.artifact("feedback")) == 3
    recs = recs[:3]
    assert [r["aspects_how"] for r in recs] == ["tags"] * 3 and recs[0]["rubric_version"] == RUBRICS.version
    assert recs[0]["reward"] == 1.0 and recs[1]["reward"] < 1.0
    calls = []
    judge_responses(store, "feedback", type("J", (), {"id": "verifier/v2", "judge": lambda *a, **k: calls.append(1)})(),
                    rows, RUBRICS)
    assert calls == []  # a rerun is served from the store
    s = feedback_summary(recs, [], {MATH.id: MATH})
    assert s["verifier_vs_answer"] == {"verifier_5__answer_right": 1, "verifier_5__answer_wrong": 0,
                                       "verifier_below_5__answer_right": 1, "verifier_below_5__answer_wrong": 1}
    assert s["verifier_precision"]["rate"] == 1.0 and s["right_answer_wrong_steps"]["rate"] == 0.5
    table = parse_table(feedback_frame(recs))
    assert set(table["aspect"]) == {"logical_correctness", "completeness"} and (table["parse_rate"] == 1.0).all()


def test_http_judge_reply_length_is_feedback_max_new_tokens():
    """Issue 15, item 11: the HTTP judge's max_tokens was fixed at 512 whatever feedback.max_new_tokens said."""
    from rlrf_nb.config import FeedbackConfig
    from rlrf_nb.llm_judge import make_llm_judge

    cfg = FeedbackConfig(judge="llm", judge_url="http://127.0.0.1:9/v1", judge_model="m", max_new_tokens=77)
    judge = make_llm_judge(cfg, load_rubric_set())
    assert judge.transport.max_tokens == 77 and judge.transport.describe()["max_tokens"] == 77
    consensus = make_llm_judge(FeedbackConfig(judge="llm", judge_url="http://127.0.0.1:9/v1", judge_model="m",
                                              max_new_tokens=1024, consensus_k=3), load_rubric_set())
    assert [j.transport.max_tokens for j in consensus.judges] == [1024] * 3


def test_http_judge_takes_feedback_concurrency_and_a_local_one_stays_sequential():
    """feedback.concurrency: requests in flight for an HTTP judge (judge_responses passes it to the store's map); a
    local judge is one model in one process and is asked one request at a time."""
    import pickle

    from rlrf_nb.config import ConfigError, FeedbackConfig
    from rlrf_nb.llm_judge import make_llm_judge

    http = dict(judge="llm", judge_url="http://127.0.0.1:9/v1", judge_model="m")
    assert make_llm_judge(FeedbackConfig(**http, concurrency=8), load_rubric_set()).concurrency == 8
    assert make_llm_judge(FeedbackConfig(**http, concurrency=8, consensus_k=3), load_rubric_set()).concurrency == 8
    assert make_llm_judge(FeedbackConfig(judge="llm", concurrency=8), load_rubric_set(), model=object(),
                          tokenizer=object()).concurrency == 1
    with pytest.raises(ConfigError, match="feedback.concurrency"):
        FeedbackConfig(concurrency=0)
    t = make_llm_judge(FeedbackConfig(**http), load_rubric_set()).transport
    copy = pickle.loads(pickle.dumps(t))  # a copy has its own lock and builds its own client
    assert copy._lock is not t._lock and copy._client is None


def test_bio_completeness_counts_the_persons_own_facts():
    """A person with 12 facts (bios.make_people(n_attributes=12)): their six world-v2 facts alone are half complete."""
    (p,) = B.make_people(0, 1, 12)
    judge = VerifierJudge(RUBRICS, {p["name"]: p})
    ex = Example("b12", "bios", "test", B.bio_prompt(p["name"]), tags=["bios"], meta={"entity": p["name"]})
    aspects = ["factuality", "completeness"]
    assert _scores(judge.judge(ex.prompt, B.reference_bio(p), aspects, ex)) == {"factuality": 5, "completeness": 5}
    six = " ".join(B.fact_sentence(p["name"], a, p[a]) for a in B.ATTRIBUTES)
    fb = judge.judge(ex.prompt, six, aspects, ex)
    assert fb.score("completeness") == 3 and "award" in fb.aspects[1].critique


def test_a_bios_judgement_is_keyed_by_the_persons_kb_record(tmp_path):
    """Two worlds can name one person with other facts (``make_people`` with 6 and 12 facts draws the same first
    name): in one store each gets its own verdict, none served from the other."""
    from rlrf_nb.feedback import judge_responses
    from rlrf_nb.store import RunStore

    six, twelve = B.make_people(0, 1)[0], B.make_people(0, 1, 12)[0]
    assert six["name"] == twelve["name"]
    ex = Example("b0", "bios", "test", B.bio_prompt(six["name"]), tags=["bios"], meta={"entity": six["name"]})
    rows = [{"example": ex, "response_id": "r0", "response": B.reference_bio(six)}]
    store = RunStore(tmp_path / "run")
    scores = []
    for p in (six, twelve, six):
        fb = judge_responses(store, "feedback", VerifierJudge(RUBRICS, {p["name"]: p}), rows, RUBRICS)[0]
        scores.append({a["aspect"]: a["score"] for a in fb["feedback"]["aspects"]}["completeness"])
    assert scores == [5, 3, 5] and len(store.artifact("feedback")) == 2
