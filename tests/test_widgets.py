"""The feedback browser: pure filters, the HTML view, and the ipywidgets view driven like a user would."""

import pytest

from rlrf_nb.feedback import AspectFeedback, Feedback, feedback_frame
from rlrf_nb.widgets import FeedbackBrowser, feedback_html, feedback_keys, judge_disagreements, static_feedback_table


def _rec(rid, scores, raw=""):
    aspects = [AspectFeedback(a, s, 1, 5, f"{a} critique <{s}>", s is not None, None if s else "invalid JSON")
               for a, s in scores.items()]
    fb = Feedback("j", "v1", aspects, raw=raw)
    return {"response_id": rid, "example_id": rid.split("/")[0], "task": "math", "prompt": "Q?", "response": "A <b>",
            "aspects_how": "tags", "judge_id": "j", "rubric_version": "v1", "round": 0, "parse_ok": fb.parse_ok,
            "reward": None, "feedback": fb.to_dict()}


RECS = [_rec("p1/s0", {"logic": 5, "comp": 4}), _rec("p1/s1", {"logic": 2, "comp": 5}),
        _rec("p2/s0", {"logic": None, "comp": 3}, raw="Score: 5 trust me")]
FRAME = feedback_frame(RECS)


def filter_feedback(frame, aspect=None, lo=1, hi=5, failures_only=False):
    """Response ids of :func:`feedback_keys` (moved here from rlrf_nb.widgets unchanged: only this test used it)."""
    return list(dict.fromkeys(rid for _, rid in feedback_keys(frame, aspect, lo, hi, failures_only)))


def test_filter_feedback():
    assert filter_feedback(FRAME, "logic", 1, 3) == ["p1/s1"]
    assert filter_feedback(FRAME, "logic", 4, 5) == ["p1/s0"]
    assert filter_feedback(FRAME, None, 3, 3) == ["p2/s0"]
    assert filter_feedback(FRAME, "logic", failures_only=True) == ["p2/s0"]


def test_html_escapes_and_shows_parse_failures_with_raw_text():
    h = feedback_html(RECS[2])
    assert "parse failure" in h and "Score: 5 trust me" in h and "A &lt;b&gt;" in h and "<b>" not in h.split("</b>")[-1]
    assert "comp critique &lt;3&gt;" in h


def test_browser_filters_and_pages_like_a_user():
    b = FeedbackBrowser(RECS, FRAME)
    assert b.status.value == "1 / 3"
    b.next.click()
    assert b.status.value == "2 / 3" and "p1" in b.view.value
    b.aspect.value = "logic"
    b.scores.value = (1, 2)
    assert b.ids == ["p1/s1"] and "logic critique &lt;2&gt;" in b.view.value
    b.failures.value = True
    assert b.ids == ["p2/s0"] and "parse failure" in b.view.value
    b.aspect.value = "comp"
    assert b.status.value == "no response matches" and b.view.value == ""


def test_browser_opens_on_the_responses_two_judges_disagree_on():
    other = [dict(r, judge_id="k", feedback=dict(r["feedback"], judge_id="k")) for r in
             [_rec("p1/s0", {"logic": 5, "comp": 4}), _rec("p1/s1", {"logic": 4, "comp": 5}),
              _rec("p2/s0", {"logic": 1, "comp": 3})]]
    frame = feedback_frame(RECS + other)
    # p1/s1 differs on logic; p2/s0's logic has one parsed vote (a failure is no vote), its comp agrees
    assert judge_disagreements(frame) == {"p1/s1"} and judge_disagreements(frame, "comp") == set()
    keys = feedback_keys(frame, disagreements_only=True)
    assert keys == [("j", "p1/s1"), ("k", "p1/s1")]  # both judges' cards of the response, side by side
    b = FeedbackBrowser(RECS + other, frame, disagreements_only=True)
    assert b.disagree.value and b.status.value == "1 / 2" and b.ids == ["p1/s1", "p1/s1"]
    b.disagree.value = False
    assert b.status.value == "1 / 6"


def test_static_table_marks_failures():
    t = static_feedback_table(RECS)
    assert list(t["logic"]) == [5, 2, "FAIL"] and t.loc[2, "logic critique"] == "invalid JSON"


def test_word_diff_reconstructs_both_texts_and_marks_changed_words():
    from rlrf_nb.widgets import word_diff, word_diff_html

    a, b = "Ava has 3+2=6 apples.\n#### 6", "Ava has 3+2=5 apples.\n#### 5"
    d = word_diff(a, b)
    assert "".join(t for op, t in d if op != "insert") == a and "".join(t for op, t in d if op != "delete") == b
    assert ("delete", "3+2=6") in d and ("insert", "3+2=5") in d and ("equal", "Ava has ") in d
    h = word_diff_html("x <y>", "x <z>")
    assert "<del style='background:#fdd'>&lt;y&gt;</del>" in h and "<ins" in h


def test_reflection_rows_viewer_and_static_table():
    from rlrf_nb.pairs import Candidate
    from rlrf_nb.widgets import (
        ReflectionViewer,
        filter_refinements,
        refinement_frame,
        refinement_rows,
        static_reflection_table,
    )

    recs = [_rec("p1/s0", {"logic": 2, "comp": 4}), _rec("p1/s0/r1.0", {"logic": 5, "comp": 4}),
            _rec("p1/s0/r1.1", {"logic": None, "comp": 4})]
    for r, reward, text in zip(recs, (0.5, 0.9, None), ("Ava has 3+2=6.\n#### 6", "Ava has 3+2=5.\n#### 5", "?")):
        r["reward"], r["response"] = reward, text
    recs[1]["round"] = recs[2]["round"] = 1
    pool = [Candidate("p1/s0", "p1", "Q?", recs[0]["response"], "sample", 0.5, {}, correct=False),
            Candidate("p1/s0/r1.0", "p1", "Q?", recs[1]["response"], "refinement", 0.9, {}, "p1/s0", correct=True),
            Candidate("p1/s0/r1.1", "p1", "Q?", "?", "refinement", None, {}, "p1/s0")]
    rows = refinement_rows(recs, pool)
    assert [r["refinement_id"] for r in rows] == ["p1/s0/r1.0", "p1/s0/r1.1"]
    assert rows[0]["scores"] == {"logic": [2, 5], "comp": [4, 4]} and rows[0]["delta"] == pytest.approx(0.4)
    assert rows[0]["critiques"]["logic"] == "logic critique <2>" and rows[1]["delta"] is None
    frame = refinement_frame(rows)
    assert frame.set_index(["refinement_id", "aspect"]).loc[("p1/s0/r1.0", "logic"), "delta"] == 3
    assert frame["parsed"].tolist() == [True, True, False, True]  # a parse failure is counted, not scored
    assert filter_refinements(rows, "improved") == [0] and filter_refinements(rows, "worse") == []
    v = ReflectionViewer(rows)
    assert v.status.value == "1 / 2" and "<ins" in v.view.value and "+3" in v.view.value
    v.outcome.value = "worse"
    assert v.status.value == "nothing matches"
    v.outcome.value = "improved"
    assert v.status.value == "1 / 1"
    t = static_reflection_table(rows)
    assert t.loc[0, "logic"] == "2 → 5" and t.loc[0, "right before → after"] == "False → True"


def test_disagreements_and_case_browser():
    from rlrf_nb.widgets import CaseBrowser, disagreements, static_case_table

    a = [{"id": i, "prompt": f"Q{i}", "gold": "5", "response": f"a{i}", "correct": i % 2 == 0} for i in range(6)]
    b = [{"id": i, "prompt": f"Q{i}", "gold": "5", "response": f"b{i}", "correct": i < 3} for i in range(6)]
    cases = disagreements("M0", a, "M2", b)
    assert [c["id"] for c in cases["M0 wrong, M2 right"]] == [1]
    assert [c["id"] for c in cases["M0 right, M2 wrong"]] == [4]
    br = CaseBrowser(cases, ("M0", "M2"))
    assert br.status.value == "1 / 1" and "b1" in br.view.value and "a1" in br.view.value
    br.which.value = br.which.options[1]
    assert "b4" in br.view.value
    assert len(static_case_table(cases)) == 2


# ---------------------------------------------------------------------------------------------
# Issue 18: what a researcher meets in JupyterLab
# ---------------------------------------------------------------------------------------------


def _judged(rid, judge, scores):
    r = _rec(rid, scores)
    r["judge_id"] = judge
    r["feedback"]["judge_id"] = judge
    r["reward"] = None if None in scores.values() else sum(scores.values()) / (5 * len(scores))
    return r


# p1/s0 is a verifier 5/5 and an LLM parse failure: two judgements of one response
TWO_JUDGES = [_judged("p1/s0", "verifier/v2", {"logic": 5, "comp": 5}),
              _judged("p1/s1", "verifier/v2", {"logic": 2, "comp": 3}),
              _judged("p1/s0", "llm:m0", {"logic": None, "comp": None})]


def test_browser_keys_cards_by_judge_and_response_so_no_judge_replaces_another():
    frame = feedback_frame(TWO_JUDGES)
    b = FeedbackBrowser(TWO_JUDGES, frame)
    assert len(b.records) == 3  # keyed by (judge, response id): the LLM record does not replace the verifier's
    assert b.card == ("verifier/v2", "p1/s0")  # the first card under the default filters is the verifier's 5/5
    assert "response <b>p1/s0</b>" in b.view.value and "judge <b>verifier/v2</b>" in b.view.value
    assert "parse failure" not in b.view.value and "5/5" in b.view.value
    b.aspect.value, b.scores.value = "logic", (5, 5)  # logical correctness 5-5 opens on the verifier's card
    assert b.card == ("verifier/v2", "p1/s0") and "parse failure" not in b.view.value and b.status.value == "1 / 1"
    b.failures.value = True  # the failure is the LLM judge's, and its card says so
    assert b.card == ("llm:m0", "p1/s0") and "judge <b>llm:m0</b>" in b.view.value and "parse failure" in b.view.value
    b.judge.value = "verifier/v2"
    assert b.card is None and b.status.value == "no response matches"


def test_browser_cards_differ_page_by_page_and_name_the_response():
    b = FeedbackBrowser(TWO_JUDGES, feedback_frame(TWO_JUDGES))
    seen = []
    for _ in range(2):  # scored judgements (parse failures are behind their own checkbox)
        seen.append((b.card, b.view.value))
        b.next.click()
    assert [k for k, _ in seen] == [("verifier/v2", "p1/s0"), ("verifier/v2", "p1/s1")]
    assert len({v.split("<pre")[0] for _, v in seen}) == 2  # the card headers differ: they name the response
    b.failures.value = True
    assert b.ids == ["p1/s0"] and b.card == ("llm:m0", "p1/s0")


def test_browser_dropdowns_start_on_a_visible_any_and_failures_disable_the_score_range():
    b = FeedbackBrowser(TWO_JUDGES, feedback_frame(TWO_JUDGES))
    assert b.aspect.value == "any" and b.aspect.label == "any aspect"  # a None value showed as a blank dropdown
    assert b.judge.value == "any" and b.judge.label == "any judge"
    assert not b.scores.disabled
    b.failures.value = True
    assert b.scores.disabled  # a parse failure has no score: the slider does not silently do nothing
    b.failures.value = False
    assert not b.scores.disabled


def _pairs():
    from rlrf_nb.pairs import Candidate, build_pairs

    def c(cid, pid, reward, correct):
        return Candidate(cid, pid, "Q?", f"answer {cid}\n#### {5 if correct else 4}", "sample", reward,
                         {"logical_correctness": 3}, correct=correct)

    pool = [c("a", "p1", 0.9, True), c("b", "p1", 0.1, False), c("x", "p2", 0.8, True), c("y", "p2", 0.2, True),
            c("u", "p3", 0.7, None), c("v", "p3", 0.3, None)]
    return pool, build_pairs(pool, "best_vs_worst")


def test_pair_reviewer_advances_counts_and_records_the_reviewer(tmp_path):
    from rlrf_nb.pairs import load_decisions
    from rlrf_nb.widgets import PairReviewer

    _, pairs = _pairs()
    rv = PairReviewer(pairs, tmp_path / "d.jsonl")
    assert rv.counter.value == "· 0 of 3 reviewed"
    rv.buttons["accept"].click()  # no reviewer name: nothing recorded, and the reviewer is told why
    assert not (tmp_path / "d.jsonl").exists() and "reviewer" in rv.message.value and rv.status.value == "1 / 3"
    rv.reviewer.value = "ana"
    rv.buttons["accept"].click()
    assert rv.status.value == "2 / 3" and rv.counter.value == "· 1 of 3 reviewed"  # one click per pair
    rv.buttons["reject"].click()
    assert rv.status.value == "3 / 3" and rv.counter.value == "· 2 of 3 reviewed"
    rv.buttons["accept"].click()  # the last one: every pair reviewed, it wraps to the first
    assert rv.counter.value == "· 3 of 3 reviewed" and rv.status.value == "1 / 3"
    saved = [d for ds in load_decisions(tmp_path / "d.jsonl").values() for d in ds]
    assert [d["action"] for d in saved] == ["accept", "reject", "accept"] and {d["reviewer"] for d in saved} == {"ana"}


def test_pair_reviewer_buttons_sit_above_the_pair():
    from rlrf_nb.widgets import PairReviewer

    _, pairs = _pairs()
    rv = PairReviewer(pairs, "/nonexistent/d.jsonl", reviewer="ana")
    rows = list(rv.widget.children)
    buttons_row = next(i for i, r in enumerate(rows) if rv.buttons["accept"] in getattr(r, "children", ()))
    assert buttons_row < rows.index(rv.view)  # the view's height (long pair, decision list) never moves them


def test_a_swap_that_makes_a_wrong_answer_chosen_warns_first(tmp_path):
    from rlrf_nb.pairs import load_decisions
    from rlrf_nb.widgets import PairReviewer, swap_warning

    _, pairs = _pairs()
    rv = PairReviewer(pairs, tmp_path / "d.jsonl", reviewer="ana")
    assert rv.current["chosen_id"] == "a" and swap_warning(rv.current)
    rv.buttons["swap"].click()
    assert "wrong final answer" in rv.message.value and not (tmp_path / "d.jsonl").exists()
    rv.buttons["swap"].click()  # asked again: recorded, with the warning in its note
    (d,) = load_decisions(tmp_path / "d.jsonl")[pairs[0]["pair_id"]]
    assert d["action"] == "swap" and "confirmed after a warning" in d["note"]
    assert rv.current["chosen_id"] == "b" and "changed" in rv.view.value  # the card shows the pair as swapped
    assert swap_warning(rv.current) is None  # swapping back to right-over-wrong needs no warning
    rv.next.click()  # both right: no warning, recorded at once
    assert swap_warning(rv.current) is None and rv.decide("swap")["candidate_id"] == "y"


def test_a_rejected_pair_can_be_accepted_again_after_a_rebuild(tmp_path):
    from rlrf_nb.pairs import build_pairs, load_decisions
    from rlrf_nb.widgets import PairReviewer

    pool, pairs = _pairs()
    path = tmp_path / "d.jsonl"
    PairReviewer(pairs, path, reviewer="ana").buttons["reject"].click()
    assert len(build_pairs(pool, "best_vs_worst", decisions=load_decisions(path))) == 2  # the rebuild drops it
    rv = PairReviewer(build_pairs(pool, "best_vs_worst"), path, reviewer="ana")  # a new session: built without
    assert rv.status.value == "1 / 3" and "rejected" in rv.view.value and rv.counter.value == "· 1 of 3 reviewed"
    rv.buttons["accept"].click()
    assert len(build_pairs(pool, "best_vs_worst", decisions=load_decisions(path))) == 3  # back in the pairs
