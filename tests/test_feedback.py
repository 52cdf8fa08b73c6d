"""Consensus and agreement statistics on known inputs; calibration of one judge against another."""

import math

import pytest

from rlrf_nb.feedback import AspectFeedback, ConsensusJudge, Feedback, agreement, calibrate, cohen_kappa


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 coders x 12 units; interval alpha 0.849.
    n = None
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3]
    c = [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]
    res = agreement([list(u) for u in zip(a, b, c, d)])
    assert res["items"] == 11  # the unit with a single rating is not pairable
    assert res["alpha"] == pytest.approx(0.849, abs=5e-4)
    assert res["exact"] == pytest.approx(8 / 11)


def test_agreement_edge_cases():
    assert agreement([[3, 3], [4, 4]])["alpha"] == 1.0
    assert math.isnan(agreement([[3], [None, 2]])["alpha"])
    assert agreement([[1, 5], [5, 1]])["alpha"] < 0


def test_cohen_kappa_known_values():
    assert cohen_kappa([1, 2, 3], [1, 2, 3]) == 1.0
    assert cohen_kappa([1, 1, 2, 2], [1, 2, 1, 2]) == 0.0
    # 2x2 table [[20, 5], [10, 15]]: po = 0.7, pe = 0.5 -> kappa 0.4 (a textbook example)
    a = [1] * 25 + [2] * 25
    b = [1] * 20 + [2] * 5 + [1] * 10 + [2] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 2, 3, 4], [1, 2, 3, 5], "quadratic") > cohen_kappa([1, 2, 3, 4], [1, 2, 3, 5])


class Fixed:
    """A judge returning fixed scores (None = a parse failure) for aspect 'a'."""

    def __init__(self, jid, score):
        self.id, self.s = jid, score

    def judge(self, prompt, response, aspects, example=None):
        ok = self.s is not None
        return Feedback(self.id, "v1", [AspectFeedback("a", self.s, 1, 5, f"said {self.s}" if ok else "", ok,
                                                       None if ok else "invalid JSON")], raw=f"raw {self.id}")


def test_consensus_takes_the_median_and_keeps_votes():
    fb = ConsensusJudge([Fixed("x", 2), Fixed("y", 5), Fixed("z", 4)]).judge("p", "r", ["a"])
    assert fb.score("a") == 4 and fb.aspects[0].critique == "said 4" and fb.meta["votes"] == {"a": [2, 5, 4]}
    fb = ConsensusJudge([Fixed("x", 2), Fixed("y", None), Fixed("z", 5)]).judge("p", "r", ["a"])
    assert fb.score("a") == 2  # even count: the lower middle, always a rubric level
    fb = ConsensusJudge([Fixed("x", None), Fixed("y", None)]).judge("p", "r", ["a"])
    assert fb.score("a") is None and not fb.parse_ok and "raw x" in fb.raw


class Failing(Fixed):
    """A judge whose aspect 'a' always fails to parse, with its own reason."""

    def __init__(self, jid, error):
        super().__init__(jid, None)
        self.error = error

    def judge(self, prompt, response, aspects, example=None):
        return Feedback(self.id, "v1", [AspectFeedback("a", None, 1, 5, "", False, self.error)], raw=f"raw {self.id}")


def test_consensus_keeps_each_judges_reason_when_all_fail():
    """Issue 15, item 9: consensus_k: 3 recorded only 'all 3 judges failed to parse' and dropped why."""
    reasons = ["invalid JSON: Expecting value", "a: score 7 outside 1-5", "a: missing field 'critique'"]
    fb = ConsensusJudge([Failing(f"j{i}", e) for i, e in enumerate(reasons)]).judge("p", "r", ["a"])
    err = fb.aspects[0].error
    assert err.startswith("all 3 judges failed to parse: ") and all(f"#{i}: {e}" in err for i, e in enumerate(reasons))
    assert fb.meta["member_errors"] == {"a": reasons}
    mixed = ConsensusJudge([Failing("j0", reasons[0]), Fixed("y", 3)]).judge("p", "r", ["a"])
    assert mixed.score("a") == 3 and mixed.meta["member_errors"] == {"a": [reasons[0], None]}


def test_score_table_counts_an_aspect_that_never_parsed():
    """Issue 15, item 4: notebook 01's describe() of an all-None score column has no 'mean': a KeyError when the
    judge never parses. The table counts 0 scores instead."""
    from rlrf_nb.feedback import feedback_frame, score_table

    recs = [{"response_id": f"r{i}", "example_id": "e", "task": "math", "judge_id": "llm:x", "round": 0,
             "reward": None, "feedback": Failing("j", "invalid JSON").judge("p", "r", ["a"]).to_dict()}
            for i in range(3)]
    table = score_table(feedback_frame(recs))
    assert table.loc[("math", "a"), "count"] == 0 and list(table.columns) == ["count", "mean", "min", "max"]


def test_calibrate_against_reference_labels():
    ref = [Fixed("v", s).judge("p", "r", ["a"]) for s in (5, 1, 5, 1)]
    llm = [Fixed("l", s).judge("p", "r", ["a"]) for s in (5, 2, None, 1)]
    row = calibrate(llm, ref).iloc[0]
    assert row["n"] == 4 and row["parsed"] == 3 and row["parse_rate"] == 0.75
    assert row["exact"] == pytest.approx(2 / 3) and row["within_1"] == 1.0 and row["mean_diff"] == pytest.approx(1 / 3)
