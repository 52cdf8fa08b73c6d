"""The reflection search on the committed M0: budget, lineage, stop rules, resume without duplicates."""

import json
from pathlib import Path

import pytest

from rlrf_nb.config import ReflectionConfig, load_recipe
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.judges import VerifierJudge
from rlrf_nb.models import load_policy
from rlrf_nb.pairs import build_pairs
from rlrf_nb.reflection import reflection_search, search_stats
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.store import RunStore
from rlrf_nb.tasks.world import build_world
from rlrf_nb.tiny_world import model_fingerprint

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
    assert stats["refinements"] == len(refs) and 0 <= stats["refinement_beats_parent"] <= 1
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
