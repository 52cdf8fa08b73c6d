"""RLRF rounds: the loop resumes after a kill (a real subprocess killed during round 2), and the DPO stage's
script entry point runs under ``accelerate launch`` on CPU with one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrf_nb.jsonl import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["m0.retrain=false", "rounds.prompts_per_round=6", "rounds.eval_n_math=12", "rounds.eval_n_bios=2",
         "reflection.n_bios=0", "reflection.max_rounds=1", "dpo.epochs=1", "dpo.batch_size=4"]


def _rounds(tmp_path, extra=()):
    args = [str(BIN / "rlrf-nb"), "rounds", "--recipe", "recipes/tiny-smoke.yaml", "--name", "r"]
    for s in [f"run.runs_dir={tmp_path}", *SMALL, *extra]:
        args += ["--set", s]
    return args


@pytest.mark.timeout(600)
def test_round_loop_resumes_after_a_kill_during_round_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    run = tmp_path / "r"
    proc = subprocess.Popen(_rounds(tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    m1 = run / "checkpoints/rounds/M1/COMPLETE.json"
    r2 = run / "rounds/r2/samples.jsonl"
    while not (m1.exists() and r2.exists() and r2.stat().st_size > 0):  # round 2 has started sampling
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "round 2 never started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints/rounds/M2/COMPLETE.json").exists()
    m1_done = m1.read_text()
    r2_before = [r["key"] for r in read_jsonl(r2, allow_torn_tail=True)]
    out = subprocess.run(_rounds(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "round 1: M1 already trained" in out.stdout and "round 2: search with M1" in out.stdout
    assert m1.read_text() == m1_done  # round 1 was not redone
    assert (run / "checkpoints/rounds/M2/COMPLETE.json").exists()
    for name in ("samples", "refinements", "feedback"):
        keys = [r["key"] for r in read_jsonl(run / f"rounds/r2/{name}.jsonl")]
        assert len(keys) == len(set(keys)), f"duplicate {name} records after the resume"
    keys = [r["key"] for r in read_jsonl(r2)]
    assert keys[: len(r2_before)] == r2_before  # kept what it had, added the rest
    rows = json.loads((run / "results.json").read_text())["rounds"]
    assert [r["policy"] for r in rows] == ["M0", "M1", "M2"]
    for r in rows[1:]:
        assert r["start_from"].endswith(f"M{r['round'] - 1}") or r["start_from"].endswith("m0")
        assert r["reference"] == r["start_from"] and r["carry_over"] is False
        assert 0 <= r["math_accuracy"]["ci_low"] <= r["math_accuracy"]["rate"] <= r["math_accuracy"]["ci_high"]
    # a third run recomputes nothing
    again = subprocess.run(_rounds(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "round 2: M2 already trained" in again.stdout
    def strip(rs):
        return [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rs]

    assert strip(json.loads((run / "results.json").read_text())["rounds"]) == strip(rows)


@pytest.mark.timeout(300)
def test_dpo_entry_point_runs_under_accelerate_launch_on_cpu(tmp_path):
    from rlrf_nb.pairs import Candidate, build_pairs

    q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"
    pool = [Candidate(f"{i}{k}", f"p{i}", q, t, "sample", r, {}, correct=c) for i in range(4)
            for k, t, r, c in (("a", "She buys 2 more apples, so Ava has 3+2=<<3+2=5>>5 apples.\n#### 5", 1.0, True),
                               ("b", "She buys 2 more apples, so Ava has 3+2=<<3+2=6>>6 apples.\n#### 6", 0.5, False))]
    write_jsonl(tmp_path / "pairs.jsonl", build_pairs(pool, "best_vs_worst"))
    out = tmp_path / "M1"
    cmd = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlrf_nb.train_dpo",
           "--model", "data/tiny_world/m0", "--pairs", str(tmp_path / "pairs.jsonl"), "--out", str(out),
           "--set", "dpo.epochs=2", "--set", "dpo.batch_size=2", "--set", "dpo.learning_rate=1e-3"]
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                         timeout=280)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["method"] == "dpo" and summary["steps"] == 4 and summary["processes"] == 1
    assert (out / "COMPLETE.json").exists() and (out / "model.safetensors").exists()
    from rlrf_nb.models import model_fingerprint

    assert model_fingerprint(out) != model_fingerprint(ROOT / "data/tiny_world/m0")


def test_notebook_03s_one_round_variants_are_the_round_loops_variants(monkeypatch):
    """Issue 17: notebook 03 trains the ablations that rounds.variant_setup defines (the loop of notebook 04),
    under the checkpoint names it used before; a variant without training data is reported, not trained."""
    import dataclasses

    from rlrf_nb import rounds
    from rlrf_nb.config import Recipe
    from rlrf_nb.pairs import Candidate

    calls = []

    def fake_train(store, name, start, pool, pairs, cfg, place=None):
        calls.append((name, cfg.method, sorted({p["pair_policy"] for p in pairs})))
        return {"name": name}

    monkeypatch.setattr(rounds, "train_cached", fake_train)
    q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"
    pool = [Candidate("a", "p", q, "3+2=5\n#### 5", "sample", 0.9, {}, correct=True, overall=1.0),
            Candidate("b", "p", q, "3+2=6\n#### 6", "sample", 0.2, {}, correct=False, overall=0.0)]
    trained, empty = rounds.train_variants("store", "m0", pool, Recipe())
    assert list(trained) == ["no reflection", "scalar reward"] and empty == ["RS-SFT"]  # no candidate reaches 1.0
    assert calls == [("dpo-no_reflection-M1", "dpo", ["no_reflection"]), ("dpo-scalar-M1", "dpo", ["scalar"])]
    calls.clear()
    trained, empty = rounds.train_variants("store", "m0", [dataclasses.replace(pool[0], reward=1.0), pool[1]],
                                           Recipe())
    assert empty == [] and calls[-1] == ("rs_sft-best_vs_worst-M1", "rs_sft", ["best_vs_worst"])
    calls.clear()  # with RS-SFT as RLRF's own step, the RS-SFT baseline would be RLRF's M1 again: not trained
    rs = Recipe.from_dict({"dpo": {"method": "rs_sft"}})
    trained, empty = rounds.train_variants("store", "m0", [dataclasses.replace(pool[0], reward=1.0), pool[1]], rs)
    assert list(trained) == ["no reflection", "scalar reward"] and empty == []
    assert [c[0] for c in calls] == ["rs_sft-no_reflection-M1", "rs_sft-scalar-M1"]


def test_no_reflection_trains_on_samples_only_whatever_the_method(monkeypatch):
    """Stop 46: round 1's search is shared by every variant and holds refinements. The no-reflection ablation's pair
    policy keeps samples only, but RS-SFT reads the pool itself: with ``dpo.method: rs_sft`` the ablation trained on
    refinements in round 1 (its M1 was RLRF's). Notebook 03's variants and the round loop now hand it samples only."""
    import dataclasses

    from rlrf_nb import rounds
    from rlrf_nb.config import Recipe
    from rlrf_nb.pairs import Candidate
    from rlrf_nb.training import rs_sft_rows

    q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"
    pool = [Candidate("s", "p", q, "3+2=6\n#### 6", "sample", 0.2, {}, correct=False),
            Candidate("r", "p", q, "3+2=5\n#### 5", "refinement", 1.0, {}, parent_id="s", correct=True)]
    assert [c.candidate_id for c in rounds.variant_pool(pool, "no_reflection")] == ["s"]
    assert rounds.variant_pool(pool, "rlrf") == pool and rounds.variant_pool(pool, "rs_sft") == pool
    assert rs_sft_rows(rounds.variant_pool(pool, "no_reflection")) == []  # the refinement is not imitated

    seen = {}

    def fake_train(store, name, start, pool, pairs, cfg, place=None):
        seen[name] = [c.candidate_id for c in pool]
        return {"name": name}

    monkeypatch.setattr(rounds, "train_cached", fake_train)
    recipe = Recipe()
    recipe.dpo = dataclasses.replace(recipe.dpo, method="rs_sft")
    pool.append(Candidate("s2", "p", q, "3+2=5\n#### 5", "sample", 1.0, {}, correct=True))
    rounds.train_variants("store", "m0", pool, recipe)
    assert seen["rs_sft-no_reflection-M1"] == ["s", "s2"]
    assert "rs_sft-best_vs_worst-M1" not in seen  # with RS-SFT as RLRF's own step the RS baseline is RLRF's M1


def test_scalar_rs_sft_selects_by_the_overall_score():
    """Stop 47: RS-SFT picks each prompt's best candidate by its reward, which is the fine-grained one. The scalar
    ablation ranks its pairs by the overall score, but with ``dpo.method: rs_sft`` it imitated what RLRF imitates. Its
    view of the pool now carries the overall score as the reward: a lucky right answer (wrong steps) and a perfect
    one both score 1 overall, and the first of the tie wins, as the scalar judge cannot tell them apart."""
    from rlrf_nb import rounds
    from rlrf_nb.pairs import Candidate
    from rlrf_nb.training import rs_sft_rows

    q = "Ava has 3 apples. She buys 2 more apples. How many apples does Ava have now?"
    lucky = Candidate("s", "p", q, "3+2=4\n4+1=5\n#### 5", "sample", 0.5, {}, correct=True, overall=1.0,
                      first_error=1)
    perfect = Candidate("r", "p", q, "3+2=5\n#### 5", "refinement", 1.0, {}, parent_id="s", correct=True,
                        overall=1.0, first_error=0)
    unparsed = Candidate("u", "p2", q, "3+2=5\n#### 5", "sample", 1.0, {}, correct=True, overall=None)
    pool = [lucky, perfect, unparsed]
    assert [r["candidate_id"] for r in rs_sft_rows(rounds.variant_pool(pool, "rlrf"))] == ["r", "u"]
    scalar = rounds.variant_pool(pool, "scalar")
    assert [c.reward for c in scalar] == [1.0, 1.0, None] and [c.overall for c in scalar] == [1.0, 1.0, None]
    assert [r["candidate_id"] for r in rs_sft_rows(scalar)] == ["s"]  # no overall score: not a reward of 1
    assert pool[0].reward == 0.5  # the shared search's candidates are not changed


def test_control_data_follows_dpo_control_prompts(monkeypatch, tmp_path):
    """Issue 16: the positive controls train on the search's own prompts and pool, or, with dpo.control_prompts N,
    on the first N math prompts of the search's source with one T = 1.0 policy sample each as the rejected answer,
    kept only when wrong; the field is in no checkpoint key, and must be >= 1."""
    from rlrf_nb import rounds
    from rlrf_nb.config import ConfigError, DPOStageConfig, Recipe, WorldConfig
    from rlrf_nb.tiny_world import build_world
    from rlrf_nb.training import stage_config_key

    world = build_world(WorldConfig(math_test=6, math_dev=6, math_rl=6, math_train=6))
    recipe = Recipe.from_dict({"reflection": {"n_prompts": 2, "n_bios": 0}})
    searched = rounds.task_data.search_examples(recipe, world)
    assert rounds.control_data(recipe, world, None, None, None, "fp", searched, ["pool"]) == (searched, ["pool"])
    asked = {}

    def fake_generate(store, name, model, tok, fp, items, *, n, temperature, **kw):
        asked.update(name=name, ids=[it["id"] for it in items], n=n, temperature=temperature)
        exs = {ex.id: ex for ex in world.math["rl"]}  # even prompts answered right, odd ones wrong
        return [{"response_id": f"{it['id']}/s0", "source_id": it["id"],
                 "text": exs[it["id"]].reference if i % 2 == 0 else "#### 1"} for i, it in enumerate(items)]

    monkeypatch.setattr(rounds, "generate_to_store", fake_generate)
    recipe = Recipe.from_dict({"reflection": {"n_prompts": 2, "n_bios": 0, "processes": 1},
                               "dpo": {"control_prompts": 5}})
    exs, pool = rounds.control_data(recipe, world, None, None, None, "fp", searched, ["search pool"])
    assert [ex.id for ex in exs] == [ex.id for ex in world.math["rl"][:5]] == asked["ids"]
    assert asked["n"] == 1 and asked["temperature"] == 1.0 and asked["name"] == "control-m0-samples"
    assert [c.prompt_id for c in pool] == [exs[1].id, exs[3].id] and all(c.correct is False for c in pool)
    assert "control_prompts" not in stage_config_key(recipe.dpo)
    with pytest.raises(ConfigError, match="dpo.control_prompts"):
        DPOStageConfig(control_prompts=0)


def test_a_finished_round_trained_under_other_inputs_is_refused(tmp_path, caplog):
    """A round checkpoint records what determined it (rounds.round_inputs); a rerun under the same run name with
    another world or training step refuses it, naming the fields, instead of serving it as this recipe's round.
    Perf-only settings change nothing; a field the stored log lacks (added to the kit since) is not compared. A
    checkpoint from before the inputs were kept is refused when it started from another M0 or trained with another
    method, else used with a warning."""
    import json as _json

    from rlrf_nb import rounds
    from rlrf_nb.config import ConfigError, load_recipe

    m0 = str(ROOT / "data/tiny_world/m0")
    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml")
    inputs = rounds.round_inputs(recipe, 1, "rlrf", m0)
    ckpt = tmp_path / "M1"
    ckpt.mkdir()

    def stored(log):
        (ckpt / "training_log.json").write_text(_json.dumps(log))

    stored({"round": 1, "inputs": inputs})
    rounds.check_round_inputs(ckpt, inputs, m0)  # the same recipe: used
    faster = load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"reflection.processes": 2, "reflection.batch_size": 7})
    assert rounds.round_inputs(faster, 1, "rlrf", m0) == inputs
    other = load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"world.max_steps": 3, "dpo.learning_rate": 1e-3})
    with pytest.raises(ValueError, match=r"M1 was trained under other inputs \(world.max_steps, "
                                         r"training.learning_rate differ"):
        rounds.check_round_inputs(ckpt, rounds.round_inputs(other, 1, "rlrf", m0), m0)
    assert rounds.round_inputs(recipe, 2, "rlrf", m0)["rounds"] != inputs["rounds"]
    older = {**inputs, "world": {k: v for k, v in inputs["world"].items() if k != "max_steps"}}
    stored({"round": 1, "inputs": older})  # a kit from before world.max_steps: that field is not compared
    rounds.check_round_inputs(ckpt, rounds.round_inputs(other, 1, "rlrf", m0) | {"training": inputs["training"]}, m0)
    stored({"round": 1, "start_from": str(ROOT / "data/tiny_world_v2/m0"), "method": "dpo"})
    with pytest.raises(ValueError, match="was trained from .*tiny_world_v2/m0, not from this recipe's M0"):
        rounds.check_round_inputs(ckpt, inputs, m0)
    stored({"round": 1, "start_from": m0, "method": "rs_sft"})
    with pytest.raises(ValueError, match="was trained with rs_sft, not with this recipe's dpo.method dpo"):
        rounds.check_round_inputs(ckpt, inputs, m0)
    stored({"round": 1, "start_from": m0, "method": "dpo"})
    with caplog.at_level("WARNING"):
        rounds.check_round_inputs(ckpt, inputs, m0)
    assert "records no inputs" in caplog.text
    with pytest.raises(ConfigError, match="rounds.variants lists rs_sft, but dpo.method is rs_sft"):
        load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"dpo.method": "rs_sft", "rounds.variants": ["rlrf", "rs_sft"]})


def test_control_prompts_beyond_the_source_name_the_field():
    from rlrf_nb import rounds
    from rlrf_nb.config import Recipe, WorldConfig
    from rlrf_nb.tiny_world import build_world

    world = build_world(WorldConfig(math_test=6, math_dev=6, math_rl=6, math_train=6))
    recipe = Recipe.from_dict({"reflection": {"n_prompts": 2, "n_bios": 0}, "dpo": {"control_prompts": 9}})
    with pytest.raises(ValueError, match=r"dpo.control_prompts = 9: need math prompts 0..9 but .* has 6; lower "
                                         r"dpo.control_prompts"):
        rounds.control_data(recipe, world, None, None, None, "fp", [], [])


def test_notebook_03s_checkpoints_get_their_variants_names():
    """With dpo.method rs_sft notebook 03's ablations are rs_sft-no_reflection-M1-... and rs_sft-scalar-M1-...:
    notebook 05 names them as the ablations, not as the RS baseline."""
    from rlrf_nb.evals.suite import variant_name

    assert variant_name("dpo-M1-ab12") == "RLRF 1 round"
    assert variant_name("rs_sft-no_reflection-M1-ab12") == variant_name("dpo-no_reflection-M1-x") == "no reflection"
    assert variant_name("rs_sft-scalar-M1-ab12") == "scalar reward"
    assert variant_name("rs_sft-best_vs_worst-M1-ab12") == "RS baseline"
    assert variant_name("control-gold-sft-ab12") is None
