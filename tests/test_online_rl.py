"""Online RL round variants (issue 20): the judge's reward gives no reward for a parse failure and counts it with its
raw text; a GRPO round of the round loop, on the smoke recipe, trains through TRL's GRPOTrainer (the parameters
move), records its compute and its judge's parse failures; RLOO runs through TRL's RLOOTrainer; the online_rl section
is validated naming the field; the real recipe can select GRPO with the LLM judge's reward without downloading."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlrf_nb.config import ConfigError, OnlineRLConfig, load_recipe
from rlrf_nb.feedback import scalar_reward, select_aspects
from rlrf_nb.llm_judge import LLMJudge
from rlrf_nb.rubrics import aspect_specs, load_rubric_set
from rlrf_nb.tiny_world import build_world
from rlrf_nb.verifier import VerifierJudge

ROOT = Path(__file__).resolve().parents[1]
M0 = ROOT / "data/tiny_world/m0"
GARBAGE = "I would give this a 4 out of 5, nice work"  # prose, not the JSON object the judge must reply with
SMALL = {"m0.retrain": False, "rounds.n_rounds": 1, "rounds.prompts_per_round": 2, "rounds.eval_n_math": 4,
         "rounds.eval_n_bios": 0, "rounds.bios_per_round": 0, "reflection.n_bios": 0, "reflection.n_samples": 2,
         "reflection.top_k": 1, "reflection.m_refinements": 1, "reflection.max_rounds": 1, "dpo.batch_size": 2,
         "eval.max_new_tokens": 64, "online_rl.max_completion_length": 64}


class GarbageTransport:
    """A judge model whose every reply is prose instead of the JSON object (a real parse failure in the real
    parser, :func:`rlrf_nb.llm_judge.parse_judgement`)."""

    def complete(self, messages):
        return GARBAGE


class EveryOtherUnparsed:
    """The verifier, except that every second response goes to an LLM judge that never replies in JSON."""

    def __init__(self, verifier, rubrics):
        self.verifier = verifier
        self.broken = LLMJudge(GarbageTransport(), lambda names: aspect_specs(rubrics, names), rubrics.version,
                               "llm:garbage", max_repairs=0)
        self.id, self.calls = "every-other-unparsed", 0

    def judge(self, prompt, response, aspects, example=None):
        self.calls += 1
        judge = self.broken if self.calls % 2 == 0 else self.verifier
        return judge.judge(prompt, response, aspects, example=example)


@pytest.fixture(scope="module")
def world():
    return build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)


@pytest.fixture(scope="module")
def rubrics():
    return load_rubric_set(ROOT / "data/rubrics")


def test_a_parse_failure_gives_no_reward_and_is_counted_with_its_raw_text(world, rubrics):
    from rlrf_nb.online_rl import JudgeReward

    verifier = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    judge = EveryOtherUnparsed(verifier, rubrics)
    exs = world.math["rl"][:2]
    weights = {"logical_correctness": 2.0}
    reward = JudgeReward(judge, rubrics, exs, weights)
    completions = [[{"role": "assistant", "content": text}] for ex in exs
                   for text in (ex.reference, ex.reference.replace("####", "The answer is"))]
    ids = [ex.id for ex in exs for _ in range(2)]
    logged = []
    out = reward(prompts=[None] * 4, completions=completions, example_id=ids, completion_ids=[[1, 2, 3]] * 4,
                 log_metric=lambda name, value: logged.append((name, value)), trainer_state=None)
    assert out[1] is None and out[3] is None  # never a score: TRL gives None no reward and zero advantage
    ex = exs[0]
    expected = scalar_reward(verifier.judge(ex.prompt, ex.reference, select_aspects(ex, rubrics)[0], example=ex),
                             weights)
    assert out[0] == expected == 1.0 and out[2] == 1.0  # the reference solution is perfect on every aspect
    assert reward.completions == reward.judged == 4 and reward.n_failures == 2 and reward.generated_tokens == 12
    assert logged == [("judge/parse_failure_rate", 0.5)]
    fail = reward.stats()["failure_examples"][0]
    assert fail["raw"] == GARBAGE and fail["judge_id"] == "llm:garbage" and fail["example_id"] == exs[0].id
    assert "invalid JSON" in fail["error"] or "extra text" in fail["error"]
    assert reward.stats()["parse_failure_rate"] == 0.5


@pytest.mark.timeout(120)
def test_a_grpo_round_on_the_smoke_recipe_moves_the_parameters_and_counts_parse_failures(world, rubrics, tmp_path):
    from rlrf_nb.rounds import checkpoint_path, run_rounds
    from rlrf_nb.store import RunStore

    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml",
                         {**SMALL, "run.runs_dir": str(tmp_path), "rounds.variants": ["rlrf", "grpo"]})
    store = RunStore(tmp_path / "run")
    judge = EveryOtherUnparsed(VerifierJudge(rubrics, {p["name"]: p for p in world.people}), rubrics)
    run_rounds(recipe, store, world, judge, rubrics, str(M0))
    ckpt = checkpoint_path(store, 1, "grpo")
    assert ckpt == store.path("checkpoints", "rounds", "grpo", "M1") and (ckpt / "COMPLETE.json").exists()
    before, after = load_file(M0 / "model.safetensors"), load_file(ckpt / "model.safetensors")
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before)  # every tensor moved (GRPO, beta 0: no reference model)
    info = json.loads((ckpt / "training_log.json").read_text())
    cfg = recipe.online_rl
    assert info["method"] == "grpo" and info["steps"] == cfg.max_steps and info["kl_coef"] == 0.0
    assert info["completions"] == cfg.max_steps * cfg.batch_size and 1 <= info["judged"] <= info["completions"]
    assert info["parse_failures"] >= 1
    assert info["failure_examples"][0]["raw"] == GARBAGE and info["generated_tokens"] > 0
    metrics = [h for h in info["history"] if "judge/parse_failure_rate" in h]
    assert metrics and all(0 < h["judge/parse_failure_rate"] < 1 for h in metrics)
    rows = json.loads((store.path("results.json")).read_text())["round_variants"]
    grpo = rows["grpo"][1]
    assert grpo["policy"] == "M1" and grpo["method"] == "grpo" and grpo["pairs"] == 0
    assert grpo["generated_tokens"] == info["generated_tokens"] and grpo["parse_failures"] == info["parse_failures"]
    assert grpo["train_seconds"] > 0 and grpo["round_seconds"] >= grpo["train_seconds"]
    rlrf = rows["rlrf"][1]  # RLRF's row reports the same compute for the comparison per unit of compute
    assert rlrf["generated_tokens"] > 0 and rlrf["judged"] > 0 and "search_seconds" in rlrf


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method,lora", [("rloo", False), ("grpo", True)])
def test_rloo_and_lora_grpo_train_with_a_kl_reference(world, rubrics, tmp_path, method, lora):
    """RLOO through TRL's RLOOTrainer (TRL's default KL 0.05: a reference built from the checkpoint's path), and
    GRPO with a LoRA adapter and a KL term (the reference is the adapter-disabled base), merged after training."""
    from rlrf_nb.models import load_policy
    from rlrf_nb.online_rl import train_online

    cfg = OnlineRLConfig(num_generations=4, batch_size=4, max_completion_length=96, max_steps=2, lora=lora,
                         learning_rate=1e-3 if lora else 1e-4, kl_coef=0.04 if lora else None)
    model, tok = load_policy(M0, train=True)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    out = train_online(model, tok, world.math["rl"][:4], judge, rubrics, cfg, tmp_path, method=method)
    assert out["method"] == method and out["steps"] == 2
    after = dict(out["model"].named_parameters())
    moved = {k for k, v in before.items() if not torch.equal(v, after[k].detach())}
    linear = {k for k in before if k.endswith("proj.weight")}
    assert moved == set(before) if not lora else moved == linear  # LoRA: all-linear adapters, merged
    assert out["reward"]["completions"] == 8 and out["reward"]["parse_failures"] == 0


def test_online_rl_section_is_validated_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"online_rl.num_generations must be >= 2"):
        OnlineRLConfig(num_generations=1)
    with pytest.raises(ConfigError, match=r"online_rl.batch_size \* online_rl.grad_accum \(6 \* 1\) must be a "
                                          r"multiple of online_rl.num_generations \(4\)"):
        OnlineRLConfig(num_generations=4, batch_size=6)
    with pytest.raises(ConfigError, match=r"online_rl.max_steps must be -1"):
        OnlineRLConfig(max_steps=0)
    p = tmp_path / "r.yaml"
    p.write_text("online_rl:\n  kl_coef: -0.1\n")
    with pytest.raises(ConfigError, match=r"r.yaml: online_rl.kl_coef must be >= 0"):
        load_recipe(p)
    p.write_text("online_rl:\n  num_generation: 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'online_rl.num_generation' \(did you mean 'num_generations'"):
        load_recipe(p)
    with pytest.raises(ConfigError, match=r"rounds.variants must be distinct names from .*'grpo', 'rloo'"):
        load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"rounds.variants": ["grpo"]})


def test_trl_configs_built_from_the_section(tmp_path):
    from trl import GRPOConfig, RLOOConfig

    from rlrf_nb.online_rl import online_args

    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml")
    g = GRPOConfig(**online_args(recipe.online_rl, "grpo", tmp_path, seed=3))
    assert (g.num_generations, g.per_device_train_batch_size, g.max_completion_length, g.max_steps) == (4, 4, 96, 2)
    assert g.beta == 0.0 and g.seed == 3 and not g.bf16 and g.generation_batch_size == 4
    r = RLOOConfig(**online_args(recipe.online_rl, "rloo", tmp_path))
    assert r.beta == 0.05  # TRL's RLOO default, since kl_coef is None
    with pytest.raises(ValueError, match="must be one of"):
        online_args(recipe.online_rl, "ppo", tmp_path)


def test_vllm_sampling_is_trls_colocate_mode_on_a_gpu_and_a_named_error_elsewhere(tmp_path, monkeypatch):
    import dataclasses
    import importlib.util
    from types import SimpleNamespace

    from rlrf_nb.online_rl import online_args

    cfg = dataclasses.replace(load_recipe(ROOT / "recipes/tiny-smoke.yaml").online_rl, vllm=True)
    with pytest.raises(ValueError, match=r"online_rl\.vllm: .* on cpu"):
        online_args(cfg, "grpo", tmp_path)
    assert "use_vllm" not in online_args(cfg, "grpo_reflect", tmp_path)  # its rollout samples with the kit
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else
                        real_find_spec(name, *a))
    gpu = SimpleNamespace(device="cuda", dtype="bfloat16")
    monkeypatch.setattr("rlrf_nb.training.device_precision", lambda place: {"bf16": True})
    args = online_args(cfg, "rloo", tmp_path, place=gpu)
    assert (args["use_vllm"], args["vllm_mode"], args["vllm_gpu_memory_utilization"]) == (True, "colocate", 0.3)
    with pytest.raises(Exception, match="vllm_gpu_memory_utilization"):
        load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"online_rl.vllm_gpu_memory_utilization": 0})


def test_the_real_recipe_can_select_grpo_with_the_llm_judges_reward(monkeypatch, tmp_path):
    """Validated without downloading: the recipe's judge is the LLM judge (its URL from the environment) and its
    online_rl section, selected by one override, maps onto TRL's GRPOConfig."""
    from trl import GRPOConfig

    from rlrf_nb.online_rl import online_args

    monkeypatch.setenv("RLRF_JUDGE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = load_recipe(ROOT / "recipes/qwen2.5-1.5b-gsm8k.yaml", {"rounds.variants": ["rlrf", "grpo"]})
    assert r.rounds.variants == ["rlrf", "grpo"] and r.feedback.judge == "llm"
    assert r.feedback.judge_url == "http://127.0.0.1:9/v1" and r.online_rl.lora
    args = online_args(r.online_rl, "grpo", tmp_path)
    args.update(use_cpu=True, bf16=False)  # this machine has no GPU; the recipe's precision is chosen at run time
    g = GRPOConfig(**args)
    assert g.num_generations == 8 and g.generation_batch_size == 32 and g.max_completion_length == 512


@pytest.mark.timeout(120)
def test_notebook_03s_variants_train_grpo_once_when_the_recipe_lists_it(world, rubrics, tmp_path, monkeypatch):
    """train_variants trains the online variants that rounds.variants lists (on the search's prompts, no pool
    needed), into a content-keyed checkpoint that a rerun loads; without a judge it says what it needs."""
    from rlrf_nb import rounds
    from rlrf_nb.store import RunStore

    monkeypatch.setattr(rounds, "train_cached", lambda *a, **k: {"name": "offline"})  # the pair-based ones
    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml", {**SMALL, "rounds.variants": ["rlrf", "grpo"],
                                                           "reflection.n_prompts": 2})
    store = RunStore(tmp_path / "run")
    judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    with pytest.raises(ValueError, match=r"lists \['grpo'\]: train_variants needs judge= and rubrics="):
        rounds.train_variants(store, str(M0), [], recipe)
    trained, _ = rounds.train_variants(store, str(M0), [], recipe, judge=judge, rubrics=rubrics, world=world)
    g = trained["GRPO"]
    assert not g["cached"] and g["path"].name.startswith("grpo-M1-") and g["info"]["method"] == "grpo"
    assert g["info"]["prompts"] == 2 and g["info"]["completions"] == 8 and g["info"]["generated_tokens"] > 0
    again, _ = rounds.train_variants(store, str(M0), [], recipe, judge=judge, rubrics=rubrics, world=world)
    assert again["GRPO"]["cached"] and again["GRPO"]["path"] == g["path"]


@pytest.mark.timeout(120)
def test_reflective_grpo_groups_are_drafts_and_their_critique_driven_refinements(world, rubrics, tmp_path,
                                                                                  monkeypatch):
    """grpo_reflect: half of each group are drafts, half the policy's refinements of those drafts written from the
    judge's critiques (the kit's refinement prompt); all are rewarded as completions of the original prompt, the
    drafts' judgements are reused (one judge call each), and the parameters move."""
    from rlrf_nb import prompts as P
    from rlrf_nb.models import load_policy
    from rlrf_nb.online_rl import train_online

    seen = []

    def spy(question, draft, notes):
        seen.append((question, draft, notes))
        return real(question, draft, notes)

    real = P.refinement_prompt
    monkeypatch.setattr(P, "refinement_prompt", spy)
    cfg = OnlineRLConfig(num_generations=4, batch_size=4, max_completion_length=96, learning_rate=1e-4, max_steps=2)
    model, tok = load_policy(M0, train=True)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    verifier = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    exs = world.math["rl"][:4]
    out = train_online(model, tok, exs, verifier, rubrics, cfg, tmp_path, method="grpo_reflect")
    assert out["method"] == "grpo_reflect" and out["steps"] == 2
    after = dict(out["model"].named_parameters())
    assert sum(not torch.equal(v, after[k].detach()) for k, v in before.items()) == len(before)
    r = out["reward"]
    assert len(seen) == 4 and r["completions"] == 8  # 2 steps x 1 group x (2 drafts + 2 refinements)
    assert r["judged"] <= 8 and r["draft_reward_mean"] is not None and r["refinement_reward_mean"] is not None
    by_prompt = {ex.prompt: ex for ex in exs}
    for question, draft, notes in seen:  # each refinement saw its draft's own critique, from the verifier
        ex = by_prompt[question]
        fb = verifier.judge(ex.prompt, draft, select_aspects(ex, rubrics)[0], example=ex)
        assert [n.critique for n in notes] == [a.critique for a in fb.aspects]
