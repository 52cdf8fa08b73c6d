"""The reflection search on the committed M0: budget, lineage, stop rules, resume without duplicates."""

import dataclasses
import json
from pathlib import Path

import pytest

from rlrf_nb.config import ReflectionConfig, load_recipe
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.models import load_policy, model_fingerprint
from rlrf_nb.pairs import build_pairs
from rlrf_nb.reflection import budget_comparison, budget_curve, priority_order, reflection_search, search_stats
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.store import RunStore
from rlrf_nb.tiny_world import build_world
from rlrf_nb.verifier import VerifierJudge

ROOT = Path(__file__).resolve().parents[1]
CFG = ReflectionConfig(n_prompts=4, n_samples=3, top_k=2, m_refinements=2, max_rounds=1, max_new_tokens=96)


@pytest.fixture(scope="module")
def setup():
    world = build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    rubrics = load_rubric_set()
    judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    return world, model, tok, rubrics, judge, model_fingerprint(ROOT / "data/tiny_world/m0")


def _run(setup, run_dir, cfg=CFG):
    world, model, tok, rubrics, judge, fp = setup
    return reflection_search(RunStore(run_dir), model, tok, fp, world.math["rl"][: cfg.n_prompts], judge, rubrics, cfg)


def test_search_budget_lineage_and_pairs(setup, tmp_path):
    res = _run(setup, tmp_path / "run")
    pool = res["pool"]
    samples = [c for c in pool if c.kind == "sample"]
    refs = [c for c in pool if c.kind == "refinement"]
    assert len(samples) == 4 * 3
    done = {c.prompt_id for c in samples if c.scores == {"logical_correctness": 5, "completeness": 5}}
    assert len(refs) == (4 - len(done)) * 2 * 2  # k*m per prompt not stopped by the threshold rule
    by_id = {c.candidate_id: c for c in pool}
    assert all(by_id[r.parent_id].kind == "sample" and by_id[r.parent_id].prompt_id == r.prompt_id for r in refs)
    stats = search_stats(pool)
    beat = stats["refinement_beats_parent"]
    assert stats["refinements"] == beat["n"] == len(refs) and 0 <= beat["ci_low"] <= beat["rate"] <= beat["ci_high"]
    assert beat["k"] == sum(r.reward > by_id[r.parent_id].reward for r in refs)
    assert stats["samples"] == 12 and stats["candidates"] == len(pool) and stats["prompts"] == 4
    pairs = build_pairs(pool, "best_refined_vs_worst_sample")
    assert all(p["chosen_kind"] == "refinement" and p["rejected_kind"] == "sample" for p in pairs)


def test_rerun_and_resume_after_a_crash_leave_no_duplicates(setup, tmp_path):
    run = tmp_path / "run"
    first = _run(setup, run)
    lines = {n: (run / f"{n}.jsonl").read_text().splitlines() for n in ("samples", "refinements", "feedback")}
    # simulate a crash: drop the last refinements and their judgements, and tear the last line
    (run / "refinements.jsonl").write_text("\n".join(lines["refinements"][:-3]) + "\n" + lines["refinements"][-3][:20])
    (run / "feedback.jsonl").write_text("\n".join(lines["feedback"][:-2]) + "\n")
    second = _run(setup, run)
    for name in ("samples", "refinements", "feedback"):
        keys = [r["key"] for r in read_jsonl(run / f"{name}.jsonl")]
        assert len(keys) == len(set(keys)) == len(lines[name]), name
    assert [c.candidate_id for c in second["pool"]] == [c.candidate_id for c in first["pool"]]
    assert sorted(r["text"] for r in read_jsonl(run / "refinements.jsonl")) == \
        sorted(json.loads(x)["text"] for x in lines["refinements"])


def test_max_rounds_zero_is_the_no_reflection_pool(setup, tmp_path):
    res = _run(setup, tmp_path / "run", ReflectionConfig(n_prompts=2, n_samples=2, top_k=1, m_refinements=1,
                                                          max_rounds=0, max_new_tokens=64))
    assert {c.kind for c in res["pool"]} == {"sample"} and len(res["rounds"]) == 1


def test_prioritised_prompts_spend_a_capped_budget_in_priority_order(setup, tmp_path):
    full = _run(setup, tmp_path / "full", dataclasses.replace(CFG, n_prompts=6))
    rewards = {}
    for c in full["pool"]:
        if c.kind == "sample":
            rewards.setdefault(c.prompt_id, []).append(c.reward)
    eligible = [p for p in priority_order(rewards, "low_best")
                if not any(k.scores == {"logical_correctness": 5, "completeness": 5}
                           for k in full["pool"] if k.prompt_id == p and k.kind == "sample")]
    assert len(eligible) >= 2, "the fixture needs at least two prompts to refine"
    cost = CFG.top_k * CFG.m_refinements  # every eligible prompt has >= top_k parseable samples here
    cfg = dataclasses.replace(CFG, n_prompts=6, priority="low_best", refine_budget=cost + cost // 2)
    res = _run(setup, tmp_path / "capped", cfg)
    b = res["budget"]
    refs = [c for c in res["pool"] if c.kind == "refinement"]
    assert b["spent"] == len(refs) == cost <= b["cap"]  # one prompt fits, the second would overrun
    assert b["prompts_refined"] == eligible[:1] and b["prompts_over_budget"] == eligible[1:]
    assert b["prompts_stopped_by_threshold"] == 6 - len(eligible)
    assert {c.prompt_id for c in refs} == {eligible[0]}
    assert len(list(read_jsonl(tmp_path / "capped/refinements.jsonl"))) == b["spent"]
    # the budget curve replays the uncapped search: cost is cumulative refinements, yield never drops below
    # the samples-only pool, and the last point is the full pool's yield
    curve = budget_curve(full["pool"], priority_order(rewards, "low_best"))
    assert curve[0]["budget"] == 0 and curve[-1]["budget"] == sum(c.kind == "refinement" for c in full["pool"])
    assert curve[-1]["pairs"] == len(build_pairs(full["pool"], "best_vs_worst"))
    assert curve[0]["pairs"] == len(build_pairs([c for c in full["pool"] if c.kind == "sample"], "best_vs_worst"))
    assert [p["budget"] for p in curve] == sorted(p["budget"] for p in curve)


def test_priority_order_and_budget_comparison_on_a_hand_made_pool():
    from rlrf_nb.pairs import Candidate

    def k(cid, pid, reward, kind="sample", parent=None, correct=False):
        return Candidate(cid, pid, "Q", f"t {cid}", kind, reward, {}, parent_id=parent, correct=correct)

    # p_hard: every sample wrong, a refinement gets it right (a new right-over-wrong pair); p_easy: mixed
    # samples, refinement adds nothing; p_flat: all wrong and refinement does not help.
    pool = [k("h0", "p_hard", 0.1), k("h1", "p_hard", 0.2), k("hr", "p_hard", 1.0, "refinement", "h1", True),
            k("e0", "p_easy", 0.2), k("e1", "p_easy", 1.0, correct=True),
            k("er", "p_easy", 0.5, "refinement", "e0"),
            k("f0", "p_flat", 0.5), k("f1", "p_flat", 0.5), k("fr", "p_flat", 0.5, "refinement", "f0")]
    rewards = {"p_easy": [0.2, 1.0], "p_flat": [0.5, 0.5], "p_hard": [0.1, 0.2]}
    assert priority_order(rewards, "none") == ["p_easy", "p_flat", "p_hard"]
    assert priority_order(rewards, "low_best") == ["p_hard", "p_flat", "p_easy"]
    assert priority_order(rewards, "variance")[0] == "p_easy"
    curve = budget_curve(pool, priority_order(rewards, "low_best"))
    assert [(p["budget"], p["right_over_wrong"]) for p in curve] == [(0, 1), (1, 2), (2, 2), (3, 2)]
    cmp = budget_comparison(pool, rewards, fraction=1.0, n_random=50)
    assert cmp["samples_only"] == 1 and cmp["full"] == 2 and cmp["low_best_budget"] == 1
    assert cmp["variance_budget"] == 2 and 1 < cmp["random_budget"] < 3  # variance puts p_easy first; random: ~2
    assert cmp["low_best_saving"] == pytest.approx(1 - 1 / cmp["random_budget"])


def test_overall_scores_feed_the_scalar_ablation(setup, tmp_path):
    res = _run(setup, tmp_path / "run")
    samples = [c for c in res["pool"] if c.kind == "sample"]
    assert all(c.overall in (0.0, 0.25, 1.0) for c in samples)  # outcome-only: none / wrong / right answer
    assert all((c.overall == 1.0) == c.correct for c in samples)
    overall = list(read_jsonl(tmp_path / "run/feedback_overall.jsonl"))
    assert overall and all(r["aspects_how"] == "fixed" and
                           [a["aspect"] for a in r["feedback"]["aspects"]] == ["overall_quality"] for r in overall)
    assert build_pairs(res["pool"], "scalar") or len({c.overall for c in samples}) == 1
