"""Review decisions (decisions.jsonl): swap, reject, edit and accept take effect when applied, survive a rebuild,
go through TRL's DPO data processing, and bad lines are named by file and line."""

import json

import pytest

from rlrf_nb.pairs import (
    Candidate,
    DecisionError,
    apply_decisions,
    build_pairs,
    load_decisions,
    pair_id,
    record_decision,
)
from rlrf_nb.widgets import PairReviewer, pair_html, static_pair_table

Q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"


def c(cid, reward, pid="p1", correct=None):
    return Candidate(cid, pid, Q, f"Ava has 3+2=5 apples ({cid}).\n#### 5", "sample", reward,
                     {"logical_correctness": 3}, correct=correct)


POOL = [c("a", 0.9), c("b", 0.1), c("x", 0.8, "p2"), c("y", 0.2, "p2"), c("u", 0.7, "p3"), c("v", 0.3, "p3")]


def by_prompt(pairs):
    return {p["prompt_id"]: p for p in pairs}


def test_swap_reject_edit_and_accept_take_effect(tmp_path, trl_tokenize):
    path = tmp_path / "decisions.jsonl"
    pairs = by_prompt(build_pairs(POOL, "best_vs_worst"))
    assert record_decision(path, pairs["p1"], "swap")["candidate_id"] == "b"
    record_decision(path, pairs["p2"], "reject", note="both wrong")
    record_decision(path, pairs["p3"], "edit", text="Ava has 3+2=5 apples.\n#### 5", note="tidy")
    assert pairs["p1"]["chosen_id"] == "a"  # recording changes nothing until the decisions are applied
    decided = by_prompt(trl_tokenize(build_pairs(POOL, "best_vs_worst", decisions=load_decisions(path))))
    assert set(decided) == {"p1", "p3"}  # p2 rejected
    p1 = decided["p1"]
    assert (p1["chosen_id"], p1["rejected_id"]) == ("b", "a") and p1["margin"] == pytest.approx(-0.8)
    assert p1["chosen_reward"] == 0.1 and p1["review"] == ["swap"]
    assert p1["chosen"][0]["content"] == pairs["p1"]["rejected"][0]["content"]
    p3 = decided["p3"]
    assert p3["chosen"][0]["content"] == "Ava has 3+2=5 apples.\n#### 5" and p3["chosen_id"] == "u"
    assert p3["original_texts"] == [{"candidate_id": "u", "text": "Ava has 3+2=5 apples (u).\n#### 5"}]
    # the last of reject/accept wins; swapping twice is back to the original order
    record_decision(path, pairs["p2"], "accept")
    record_decision(path, pairs["p1"], "swap", candidate_id="a")
    again = by_prompt(apply_decisions(build_pairs(POOL, "best_vs_worst"), load_decisions(path)))
    assert set(again) == {"p1", "p2", "p3"} and again["p1"]["chosen_id"] == "a"
    assert again["p1"]["review"] == ["swap", "swap"] and again["p2"]["review"] == ["reject", "accept"]


def test_decisions_hold_across_pair_policies_and_rebuilds(tmp_path):
    path = tmp_path / "decisions.jsonl"
    (p,) = build_pairs(POOL[:2], "best_vs_worst")
    assert p["pair_id"] == pair_id("p1", "b", "a")  # identity ignores the order
    record_decision(path, p, "reject")
    assert build_pairs(POOL[:2], "no_reflection", decisions=load_decisions(path)) == []
    assert len(build_pairs(POOL[:2], "no_reflection")) == 1


def test_invalid_decisions_name_the_file_and_line(tmp_path):
    (p,) = build_pairs(POOL[:2], "best_vs_worst")
    path = tmp_path / "decisions.jsonl"
    record_decision(path, p, "accept")
    with open(path, "a") as fh:
        fh.write(json.dumps({"pair_id": p["pair_id"], "action": "approve"}) + "\n")
    with pytest.raises(DecisionError, match=r"decisions.jsonl: decision 2: field 'action' must be one of"):
        load_decisions(path)
    path.write_text('{"pair_id": "x", "action": "edit", "candidate_id": "a"}\n')
    with pytest.raises(DecisionError, match="decision 1: an edit needs a non-empty string field 'text'"):
        load_decisions(path)
    path.write_text('{"pair_id": "x", "action": "reject"}\n{oops\n')
    with pytest.raises(DecisionError, match=r"decisions.jsonl:2: invalid JSON"):
        load_decisions(path)
    with pytest.raises(DecisionError, match="not in pair"):
        record_decision(tmp_path / "d2.jsonl", p, "swap", candidate_id="zzz")
    assert load_decisions(tmp_path / "absent.jsonl") == {}


def test_pair_reviewer_buttons_append_decisions(tmp_path):
    path = tmp_path / "decisions.jsonl"
    pairs = build_pairs(POOL, "best_vs_worst")
    rv = PairReviewer(pairs, path, reviewer="me")
    assert rv.status.value == "1 / 3" and pairs[0]["pair_id"] in rv.view.value
    rv.next.click()
    rv.side.value = "rejected"
    assert rv.text.value == pairs[1]["rejected"][0]["content"]  # the edit box holds the side's current text
    rv.text.value = "Ava has 5 apples.\n#### 5"
    rv.save.click()
    rv.prev.click()
    rv.decide("reject")
    saved = load_decisions(path)
    assert [d["action"] for ds in saved.values() for d in ds] == ["edit", "reject"]
    assert saved[pairs[1]["pair_id"]][0]["candidate_id"] == pairs[1]["rejected_id"]
    assert "recorded decisions" in rv.view.value  # the view lists what was recorded for this pair
    applied = by_prompt(apply_decisions(pairs, saved))
    assert set(applied) == {"p2", "p3"} and applied["p2"]["rejected"][0]["content"] == "Ava has 5 apples.\n#### 5"
    assert "&lt;" not in pair_html(pairs[0]) and len(static_pair_table(pairs)) == 3
