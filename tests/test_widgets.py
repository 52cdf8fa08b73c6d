"""The feedback browser: pure filters, the HTML view, and the ipywidgets view driven like a user would."""

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
