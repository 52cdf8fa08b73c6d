"""The feedback browser: pure filters, the HTML view, and the ipywidgets view driven like a user would."""

import pytest

from rlrf_nb.feedback import AspectFeedback, Feedback, feedback_frame
from rlrf_nb.widgets import FeedbackBrowser, feedback_html, filter_feedback, static_feedback_table


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
