"""The tiny world as a whole: determinism, the committed data/tiny_world/ snapshot, the training mix."""

import random
from pathlib import Path

import pytest

from rlrf_nb.config import WorldConfig, load_recipe
from rlrf_nb.jsonl import JsonlError
from rlrf_nb.tasks import math as M
from rlrf_nb.tiny_world import SAVED, build_world, load_kb, load_split, math_refinement_example

ROOT = Path(__file__).resolve().parents[1]
SMALL = WorldConfig(math_test=30, math_dev=10, math_rl=10, math_train=50, n_people=200)


def test_world_is_deterministic_per_seed():
    a, b = build_world(SMALL), build_world(SMALL)
    c = build_world(WorldConfig(**{**SMALL.__dict__, "seed": 1}))
    for task in ("math", "bios"):
        for split in getattr(a, task):
            assert [e.to_dict() for e in a.examples(task, split)] == [e.to_dict() for e in b.examples(task, split)]
    assert a.people == b.people and a.web_docs == b.web_docs
    assert [e.prompt for e in a.math["test"]] != [e.prompt for e in c.math["test"]]
    assert a.people != c.people


def test_committed_snapshot_is_what_the_generator_makes():
    """data/tiny_world/ was written by `rlrf-nb world` from recipes/tiny.yaml; it must be reproducible."""
    cfg = load_recipe(ROOT / "recipes/tiny.yaml").world
    world = build_world(cfg)
    d = ROOT / "data/tiny_world"
    assert list(load_kb(d).values()) == world.people
    for task, splits in SAVED.items():
        for split in splits:
            assert [e.to_dict() for e in load_split(d, task, split)] == \
                [e.to_dict() for e in world.examples(task, split)], f"{task}_{split}.jsonl differs"
    assert len(load_split(d, "math", "test")) >= 500 and len(world.people) >= 200


def test_all_splits_are_disjoint():
    w = build_world(SMALL)
    for task in ("math", "bios"):
        seen = {}
        for split, exs in getattr(w, task).items():
            for e in exs:
                key = e.meta.get("entity", e.prompt)
                assert key not in seen, f"{task}: {key!r} in both {seen.get(key)} and {split}"
                seen[key] = split


def test_refinement_examples_name_the_wrong_step_and_target_the_reference():
    w = build_world(SMALL)
    rng = random.Random(0)
    n_flawed = 0
    for ex in w.math["train"]:
        item = math_refinement_example(rng, ex)
        user, target = item["messages"][0]["content"], item["messages"][1]["content"]
        assert target == ex.reference and user.startswith(ex.prompt)
        draft = user.split("Draft:\n", 1)[1].split("\n\nFeedback:", 1)[0]
        check = M.check_solution(draft, ex.meta["steps"], ex.answer)
        assert check.critique in user
        n_flawed += not check.correct
    assert 0.5 * len(w.math["train"]) < n_flawed < len(w.math["train"])


def test_load_split_errors_name_file_and_line(tmp_path):
    good = '{"id": "a", "task": "math", "split": "test", "prompt": "q"}\n'
    (tmp_path / "math_test.jsonl").write_text(good + "{not json\n")
    with pytest.raises(JsonlError, match=r"math_test.jsonl:2"):
        load_split(tmp_path, "math", "test")
    (tmp_path / "math_test.jsonl").write_text(good + '{"id": "b", "task": "math", "split": "test"}\n')
    with pytest.raises(ValueError, match=r"math_test.jsonl:2: missing field\(s\) \['prompt'\]"):
        load_split(tmp_path, "math", "test")
    (tmp_path / "math_test.jsonl").write_bytes(good.encode() + b'{"id": "\xff"}\n')
    with pytest.raises(JsonlError, match=r"math_test.jsonl:2: not valid UTF-8"):
        load_split(tmp_path, "math", "test")
    with pytest.raises(FileNotFoundError, match="math_dev.jsonl"):
        load_split(tmp_path, "math", "dev")


def test_eval_n_refine_caps_notebook_00s_refinement_checks(tmp_path):
    """``eval.n_refine`` refines only the first n wrong greedy answers and the first n injected drafts; those are the
    same drafts the uncapped check refines first."""
    from rlrf_nb.config import EvalConfig
    from rlrf_nb.models import load_policy, model_fingerprint
    from rlrf_nb.store import RunStore
    from rlrf_nb.tiny_world import evaluate_math

    with pytest.raises(ValueError, match="eval.n_refine"):
        EvalConfig(n_refine=0)
    world = build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)
    m0 = ROOT / "data/tiny_world/m0"
    model, tok = load_policy(m0)
    runs = {}
    for n_refine in (None, 2):
        cfg = EvalConfig(split="dev", n_math=6, n_bios=0, max_new_tokens=96, batch_size=8, n_refine=n_refine)
        store = RunStore(tmp_path / str(n_refine))
        runs[n_refine] = evaluate_math(model, tok, model_fingerprint(m0), world, cfg, store)
    full, capped = runs[None], runs[2]
    assert capped["refine_injected"]["n"] == 2 and full["refine_injected"]["n"] == 6
    assert capped["refine_own"]["n"] == min(2, full["refine_own"]["n"])
    first = full["refine_injected_records"][:2]
    assert [(r["id"], r["response"]) for r in capped["refine_injected_records"]] == \
        [(r["id"], r["response"]) for r in first]
