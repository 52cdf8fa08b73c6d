"""Devices and precision chosen in one place (models.placement), and the vLLM backend's one engine per process that
sleeps while TRL trains (issue 15, items 12 and 13). vLLM is not installed here (it needs CUDA): its engine is a
fake object with vLLM's documented sleep-mode API, which records what the kit asks of it."""

import sys
import types
from pathlib import Path

import pytest
import torch

from rlrf_nb import generation
from rlrf_nb.config import RunConfig, load_recipe
from rlrf_nb.models import Placement, load_policy, placement

ROOT = Path(__file__).resolve().parents[1]
M0 = ROOT / "data/tiny_world/m0"


def test_placement_is_fp32_cpu_here_and_bf16_cuda_on_a_gpu(monkeypatch):
    place = placement(RunConfig())
    assert (place.device, place.dtype) == ("cpu", torch.float32) or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = placement(RunConfig())
    assert (gpu.device, gpu.dtype, gpu.train_dtype) == ("cuda", torch.bfloat16, torch.bfloat16)
    assert gpu.trainer_args() == {"bf16": True, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    old = placement(RunConfig())  # fp16 for sampling; fp32 weights under fp16 autocast for training
    assert (old.dtype, old.train_dtype, old.trainer_args()) == (torch.float16, torch.float32,
                                                                {"bf16": False, "fp16": True})
    assert placement(RunConfig(device="cpu")).trainer_args() == {"use_cpu": True, "bf16": False, "fp16": False}


def test_cuda_without_a_gpu_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="run.device is 'cuda' but torch sees no GPU"):
        placement(RunConfig(device="cuda"))


def test_load_policy_places_the_model_and_trainers_follow_the_same_choice():
    """Item 12: from_pretrained leaves a model on the CPU in fp32; a policy loaded for a run goes where the run's
    placement says, and TRL's precision arguments come from that same placement."""
    from rlrf_nb.config import DPOStageConfig
    from rlrf_nb.training import _common_args

    model, _ = load_policy(M0, place=Placement("cpu", torch.bfloat16))
    assert next(model.parameters()).dtype == torch.bfloat16 and next(model.parameters()).device.type == "cpu"
    args = _common_args(DPOStageConfig(), "out", Placement("cuda", torch.bfloat16))
    assert args["bf16"] and not args["fp16"] and "use_cpu" not in args and args["activation_checkpointing"]
    assert _common_args(DPOStageConfig(), "out", Placement("cpu", torch.float32))["use_cpu"]


def test_get_m0_and_the_rounds_load_on_the_runs_placement(tmp_path, monkeypatch):
    from rlrf_nb import models
    from rlrf_nb.store import RunStore
    from rlrf_nb.tiny_world import get_m0

    seen = []
    original = models.load_policy
    monkeypatch.setattr(models, "load_policy", lambda *a, **k: seen.append(k.get("place")) or original(*a, **k))
    recipe = load_recipe(ROOT / "recipes/tiny.yaml", {"run.dtype": "float32", "run.device": "cpu"})
    _, _, info = get_m0(recipe, RunStore(tmp_path))
    assert info["placement"] == "cpu, float32" and seen == [Placement("cpu", torch.float32)]


# ---------------------------------------------------------------------------------------------------------------
# vLLM: one engine per process, asleep while TRL trains
# ---------------------------------------------------------------------------------------------------------------


class FakeLLM:
    """``vllm.LLM`` as the kit uses it: ``chat``, ``sleep(level)``, ``wake_up(tags)``, ``reset_prefix_cache`` and the
    in-process model's ``load_weights`` (TRL's colocate path). It records every call."""

    instances: list = []

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls, self.served = model, kwargs, [], 0
        runner = types.SimpleNamespace(model=self)
        self.llm_engine = types.SimpleNamespace(
            model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(model_runner=runner)))
        FakeLLM.instances.append(self)

    def load_weights(self, weights):
        names = sorted(name for name, _ in weights)
        self.calls.append(("load_weights", len(names)))

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ())))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def chat(self, conversations, params, use_tqdm=False):
        self.calls.append(("chat", len(conversations)))
        out = types.SimpleNamespace
        texts = ["#### 0", "1+1=<<1+1=2>>2\n2+2=<<2+2=4>>4\n3+3=<<3+3=6>>6\n#### 6"]  # scored apart: pairs
        outs = []
        for _ in conversations:
            outs.append(out(outputs=[out(text=texts[(self.served + i) % 2]) for i in range(params["n"])]))
            self.served += 1
        return outs


@pytest.fixture()
def fake_vllm(monkeypatch):
    FakeLLM.instances = []
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(generation, "_ENGINE", None)
    # vllm_engine sets the one-rank process-group variables in os.environ (vLLM's in-process executor needs them);
    # undo them after the test, or every later DPOConfig of this pytest process starts a process group on that
    # port and holds it, and subprocesses (rlrf-nb rounds, accelerate launch) inherit the variables and collide
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded as unset, so teardown removes whatever the engine sets
        monkeypatch.delenv(key)
    return FakeLLM


def _checkpoint(path: Path, value: float) -> str:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"model.w": torch.full((2, 2), value), "model.b": torch.zeros(2)}, str(path / "model.safetensors"))
    return str(path)


def test_one_vllm_engine_per_process_sleeps_and_swaps_weights_in_place(fake_vllm, tmp_path):
    """Item 13: a new vLLM engine per round and variant, in the process that trains with TRL, would run one GPU out
    of memory. One engine serves each checkpoint in turn (weights loaded in place) and sleeps while TRL trains."""
    a, b = _checkpoint(tmp_path / "M0", 0.0), _checkpoint(tmp_path / "M1", 1.0)
    p0 = generation.load_vllm(a, torch.bfloat16)
    (llm,) = fake_vllm.instances
    assert llm.kwargs["enable_sleep_mode"] and llm.kwargs["dtype"] == "bfloat16"
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher"
    out = generation.generate(p0, None, [[{"role": "user", "content": "q"}]], do_sample=True, num_return_sequences=2,
                              seed=3)
    assert [o[0] for o in out] == ["#### 0"] and len(out[0]) == 2 and llm.calls == [("chat", 1)]
    generation.release_vllm()  # TRL trains now: weights and KV cache freed
    assert llm.calls[-1] == ("sleep", 2) and generation._ENGINE.asleep
    llm.calls.clear()
    p1 = generation.load_vllm(b)  # the next round's policy: same engine, new weights
    assert len(fake_vllm.instances) == 1
    assert llm.calls == [("wake_up", ("weights",)), ("load_weights", 2), ("wake_up", ("kv_cache",)),
                         ("reset_prefix_cache",)]
    llm.calls.clear()
    generation.generate(p1, None, [[{"role": "user", "content": "q"}]] * 3, max_new_tokens=4)
    assert llm.calls == [("chat", 3)]  # already serving M1: nothing reloaded
    generation.generate(p0, None, [[{"role": "user", "content": "q"}]], max_new_tokens=4)  # back to M0
    assert llm.calls[1:] == [("sleep", 2), ("wake_up", ("weights",)), ("load_weights", 2),
                             ("wake_up", ("kv_cache",)), ("reset_prefix_cache",), ("chat", 1)]


def test_rounds_with_the_vllm_backend_train_while_the_engine_sleeps(fake_vllm, tmp_path, monkeypatch):
    """Two rounds with reflection.backend: vllm: one engine for both searches, asleep whenever training runs, and
    round 2 searches with M1's weights loaded into it."""
    from rlrf_nb import rounds
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.store import RunStore
    from rlrf_nb.tiny_world import build_world
    from rlrf_nb.verifier import make_judge

    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml", {
        "m0.retrain": False, "m0.pretrained": str(M0), "reflection.backend": "vllm", "reflection.n_samples": 2,
        "reflection.top_k": 1, "reflection.m_refinements": 1, "reflection.max_rounds": 1, "rounds.n_rounds": 2,
        "rounds.prompts_per_round": 2, "rounds.bios_per_round": 0, "rounds.variants": ["rlrf"],
        "rounds.eval_n_math": 2, "rounds.eval_n_bios": 0, "eval.max_new_tokens": 8})
    trained_while_asleep = []

    def fake_train(model, tok, pool, pairs, cfg, out_dir, **kw):
        trained_while_asleep.append(generation._ENGINE.asleep)
        return {"model": model, "history": [], "seconds": 0.0, "steps": 0, "method": "dpo"}

    monkeypatch.setattr(rounds, "train_stage", fake_train)
    world = build_world(recipe.world)
    rubrics = load_rubric_set()
    judge = make_judge(recipe.feedback, rubrics, {p["name"]: p for p in world.people})
    store = RunStore(tmp_path / "run")
    rows = rounds.run_rounds(recipe, store, world, judge, rubrics, str(M0))
    assert [r["policy"] for r in rows] == ["M0", "M1", "M2"]
    (llm,) = fake_vllm.instances
    assert trained_while_asleep == [True, True] and generation._ENGINE.loads == 1
    assert generation._ENGINE.path == str(rounds.checkpoint_path(store, 1))  # round 2 searched with M1
