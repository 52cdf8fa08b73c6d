"""The fast paths are correct (not how fast they are): sampling does not depend on batching, bucketing, engine or
an out-of-memory retry and keeps temperature / top-p semantics; cached reference log-probs equal TRL's own and a
cache hit loads no reference model; the benchmark's quick mode writes its JSON."""

import functools
import json
import logging
import math as pymath
import random
from pathlib import Path

import pytest
import torch

from rlrf_nb import generation
from rlrf_nb.config import DPOStageConfig, load_recipe
from rlrf_nb.generation import RowSampler, generate, generate_to_store, render_prompts, sampling_processes
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.models import load_policy
from rlrf_nb.pairs import Candidate, build_pairs, to_dataset
from rlrf_nb.prompts import chat, refinement_prompt
from rlrf_nb.store import RunStore
from rlrf_nb.tasks import math
from rlrf_nb.tiny_world import build_world

ROOT = Path(__file__).resolve().parents[1]
M0 = ROOT / "data/tiny_world/m0"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread here: the tiny model gains nothing from two, and two OpenMP threads stall whenever another
    process holds the second core (see docs/performance.md). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world():
    return build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)


@pytest.fixture(scope="module")
def m0():
    return load_policy(M0)


@pytest.fixture(scope="module")
def convs(world):
    """Prompts of quite different lengths: questions, and refinement prompts holding a draft."""
    exs = world.math["rl"][:4]
    out = [chat(ex.prompt) for ex in exs]
    out += [chat(refinement_prompt(ex.prompt, ex.reference, [])) for ex in exs[:2]]
    return out


SAMPLE = {"max_new_tokens": 48, "do_sample": True, "temperature": 0.9, "top_p": 0.95, "num_return_sequences": 2,
          "progress": False}


def test_same_samples_with_bucketing_on_or_off_any_batch_size_and_either_engine(m0, convs):
    model, tok = m0
    lens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in render_prompts(tok, convs)]
    assert max(lens) > 2 * min(lens)  # bucketing really reorders and re-pads these
    bucketed = generate(model, tok, convs, seed=3, **SAMPLE)
    assert bucketed == generate(model, tok, convs, seed=3, bucket=False, batch_size=2, **SAMPLE)
    assert bucketed == generate(model, tok, convs, seed=3, max_batch_rows=1, **SAMPLE)
    assert bucketed == generate(model, tok, convs, seed=3, engine="hf", **SAMPLE)  # model.generate, same sampler
    assert len(bucketed) == len(convs) and all(len(o) == 2 for o in bucketed)
    assert bucketed != generate(model, tok, convs, seed=4, **SAMPLE)
    assert any(a != b for a, b in bucketed)  # two samples of one prompt differ: separate random streams
    # a conversation's samples depend on its own seed, not on its neighbours
    alone = generate(model, tok, convs[2:3], seeds=[11], **SAMPLE)
    assert generate(model, tok, convs, seeds=list(range(9, 15)), **SAMPLE)[2] == alone[0]


def test_transformers_cache_fallback_gives_the_same_samples(m0, convs, monkeypatch):
    """Models whose cache is not plain full-attention layers keep transformers' DynamicCache and 2D mask."""
    model, tok = m0
    fast = generate(model, tok, convs, seed=3, **SAMPLE)
    monkeypatch.setattr(generation, "_block_kv_ok", lambda model: False)
    assert generate(model, tok, convs, seed=3, **SAMPLE) == fast


def test_lean_decode_step_gives_the_models_own_logits_bit_for_bit(m0, convs, monkeypatch):
    """The decode steps of Llama-type models skip the model's forward plumbing (``_BlockKV._lean_forward``): the
    samples equal those of the model's own forward, for the tiny Llama and a Qwen2 with grouped-query heads and
    q/k/v biases."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model, tok = m0
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=model.config.vocab_size, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        eos_token_id=model.config.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    for net in (model, qwen):
        lean = generate(net, tok, convs, seed=3, **SAMPLE)
        with monkeypatch.context() as m:
            m.setattr(generation, "LEAN_MODELS", ())
            assert generate(net, tok, convs, seed=3, **SAMPLE) == lean
        assert generate(net, tok, convs, max_new_tokens=24, progress=False) == generate(
            net, tok, convs, max_new_tokens=24, progress=False, engine="hf")


def test_greedy_equals_unpadded_per_prompt_generate(m0, convs):
    model, tok = m0
    ours = generate(model, tok, convs, max_new_tokens=40, progress=False)
    with torch.inference_mode():
        for text, o in zip(render_prompts(tok, convs), ours):
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            ref = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
            assert o[0] == tok.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_row_sampler_keeps_temperature_and_top_p_semantics():
    """Each row's token is the inverse CDF of softmax(logits / T) after top-p, at the row's own uniform: over
    many rows the frequencies are those probabilities, and tokens top-p cuts never appear."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    temperature, top_p, n = 0.7, 0.8, 20000
    probs = torch.softmax(logits / temperature, -1)
    keep = probs.sort(descending=True)
    cum = keep.values.cumsum(0)
    kept = keep.indices[: int((cum < top_p).sum()) + 1]  # HF's rule: the smallest set reaching top_p
    expected = torch.zeros_like(probs)
    expected[kept] = probs[kept] / probs[kept].sum()
    sampler = RowSampler(list(range(n)), 1, do_sample=True, temperature=temperature, top_p=top_p)
    toks = sampler.pick(logits.expand(n, -1), None, 0)
    freq = torch.bincount(toks, minlength=5).double() / n
    assert set(toks.unique().tolist()) == set(kept.tolist())
    assert torch.allclose(freq, expected.double(), atol=4 * pymath.sqrt(0.25 / n))
    again = RowSampler(list(range(n)), 1, do_sample=True, temperature=temperature, top_p=top_p)
    assert torch.equal(again.pick(logits.expand(n, -1), None, 0), toks)  # seeded: reproducible


def test_generate_to_store_records_do_not_depend_on_the_batch(m0, world, tmp_path):
    model, tok = m0
    items = [{"id": ex.id, "prompt": ex.prompt} for ex in world.math["rl"][:3]]
    kw = {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, "seed": 0}
    one = generate_to_store(RunStore(tmp_path / "a"), "samples", model, tok, "fp", items, batch_size=1, **kw)
    three = generate_to_store(RunStore(tmp_path / "b"), "samples", model, tok, "fp", items, batch_size=3, **kw)
    assert [r["text"] for r in one] == [r["text"] for r in three]
    assert [r["key"] for r in one] == [r["key"] for r in three]


def test_sampling_processes_store_the_same_records_and_start_only_when_there_is_work(m0, world, tmp_path):
    """Two worker processes (issue 21) compute the same batches as the caller would: identical records, in order;
    a rerun that finds every record starts no process."""
    model, tok = m0
    items = [{"id": ex.id, "prompt": ex.prompt} for ex in world.math["rl"][:5]]
    kw = {"n": 3, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, "seed": 0, "batch_size": 2}
    alone = generate_to_store(RunStore(tmp_path / "a"), "samples", model, tok, "fp", items, **kw)
    with sampling_processes(model, tok, 2) as workers:
        pooled = generate_to_store(RunStore(tmp_path / "b"), "samples", model, tok, "fp", items, workers=workers,
                                   **kw)
        assert workers.pool is not None
    assert pooled == alone
    assert [r["key"] for r in read_jsonl(tmp_path / "b/samples.jsonl")] == [r["key"] for r in alone]
    with sampling_processes(model, tok, 2) as workers:
        again = generate_to_store(RunStore(tmp_path / "b"), "samples", model, tok, "fp", items, workers=workers,
                                  **kw)
        assert workers.pool is None
    assert again == alone
    with sampling_processes(model, tok, 1) as none:
        assert none is None


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_out_of_memory_halves_the_batch_and_retries_only_that_batch(m0, convs, engine, monkeypatch, caplog):
    model, tok = m0
    kw = {**SAMPLE, "seed": 5, "engine": engine, "max_batch_rows": 8}
    expected = generate(model, tok, convs, **kw)  # 6 prompts x 2 rows: batches of 8 rows, then 4
    seen = []  # rows per batch attempt (prefill for the fast engine, the whole call for model.generate)
    name = "forward" if engine == "fast" else "generate"
    original = getattr(model, name)

    @functools.wraps(original)
    def flaky(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if engine == "hf" or ids.shape[1] > 1:  # a batch starts
            seen.append(ids.shape[0])
        if ids.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)") if engine == "fast" else \
                RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ... out of memory")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, name, flaky)
    monkeypatch.setattr(generation, "LEAN_MODELS", ())  # decode steps through model.forward, where the OOM is raised
    with caplog.at_level(logging.WARNING, logger="rlrf_nb.generation"):
        got = generate(model, tok, convs, **kw)
    assert got == expected
    assert "out of memory on a batch of 8 sequences; retrying that batch" in caplog.text
    assert caplog.text.count("out of memory") == 1
    if engine == "fast":  # prefill of 4 prompts (8 rows after the copy: OOM), 2 + 2 retried, the last batch of 2
        assert seen == [4, 2, 2, 2]
    else:  # model.generate gets one row per sequence
        assert seen == [8, 4, 4, 4]


@pytest.mark.parametrize("do_sample", [False, True])
def test_batches_and_outputs_do_not_depend_on_the_free_memory(m0, convs, do_sample, monkeypatch, caplog):
    """Issue 15, E: batch sizes followed the free memory, so a loaded machine cut other batches (other matmul
    shapes, other float rounding) than an idle one. Now the recipe alone sets them; scarce memory only warns."""
    model, tok = m0
    kw = {**SAMPLE, "do_sample": do_sample, "seed": 7, "batch_size": 3}
    original = model.forward
    runs = {}
    for free in (64 * 2**30, 2**20, 1):  # an idle machine, a loaded one, an exhausted one
        shapes = []

        @functools.wraps(original)
        def spy(*args, _shapes=shapes, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            _shapes.append(tuple(ids.shape))
            return original(*args, **kwargs)

        monkeypatch.setattr(generation, "free_memory", lambda device, _free=free: _free)
        monkeypatch.setattr(model, "forward", spy)
        with caplog.at_level(logging.WARNING, logger="rlrf_nb.generation"):
            runs[free] = (generate(model, tok, convs, **kw), [s for s in shapes if s[1] > 1])  # outputs, prefills
        monkeypatch.setattr(model, "forward", original)
    (idle, idle_batches), *loaded = runs.values()
    assert [p[0] for p in idle_batches] == [3, 3]  # two batches of 3 prompts (their rows share the prefill)
    for outs, batches in loaded:
        assert batches == idle_batches and outs == idle
    assert "lower batch_size if it runs out of memory" in caplog.text


def test_a_real_error_is_not_retried(m0, convs, monkeypatch):
    model, tok = m0

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(model, tok, convs, max_new_tokens=4, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# DPO: cached reference log-probs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(world):
    rng = random.Random(0)
    pool = []
    for ex in world.math["dev"][:6]:
        bad, _ = math.corrupt_solution(rng, ex)
        pool += [Candidate(f"{ex.id}/good", ex.id, ex.prompt, ex.reference, "sample", 1.0, {}, correct=True),
                 Candidate(f"{ex.id}/bad", ex.id, ex.prompt, bad, "sample", 0.25, {}, correct=False)]
    return build_pairs(pool, "best_vs_worst")


CFG = DPOStageConfig(epochs=1, batch_size=4, logging_steps=1, loss_type=["sigmoid"], warmup_ratio=0.0)


def _trl_fresh_ref_logps(pairs, ref_model, out_dir):
    """TRL's own precompute (stock DPOTrainer) with ``ref_model`` as the reference."""
    from trl import DPOConfig, DPOTrainer

    from rlrf_nb.training import _common_args

    model, tok = load_policy(M0)
    args = DPOConfig(**_common_args(CFG, out_dir), precompute_ref_log_probs=True)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=to_dataset(pairs),
                         processing_class=tok)
    ds = trainer.train_dataset
    return ds["ref_chosen_logps"], ds["ref_rejected_logps"]


def test_cached_reference_log_probs_equal_fresh_ones_and_a_hit_loads_no_reference(pairs, tmp_path):
    from rlrf_nb.training import REF_LOGPS_ARTIFACT, build_dpo_trainer

    store = RunStore(tmp_path / "run")
    loads = []

    def loader():
        loads.append(1)
        return load_policy(M0)[0]

    model, tok = load_policy(M0)
    cold = build_dpo_trainer(model, tok, pairs, CFG, tmp_path / "t1", ref_store=store, ref_fingerprint="ref-A",
                             ref_loader=loader)
    assert loads == [1] and cold.ref_cache_stats["computed"] == len(pairs) and cold.ref_model is None
    assert len(store.artifact(REF_LOGPS_ARTIFACT)) == len(pairs)  # probe = the same pairs: computed once
    fresh_c, fresh_r = _trl_fresh_ref_logps(pairs, load_policy(M0)[0], tmp_path / "t0")
    for got, want in ((cold.train_dataset["ref_chosen_logps"], fresh_c),
                      (cold.train_dataset["ref_rejected_logps"], fresh_r)):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-4)
    assert all(c > r for c, r in zip(fresh_c, fresh_r))  # sanity: M0 prefers the right solutions

    # a rerun (new process: reopen the store) serves them all and loads no reference model
    store2 = RunStore(tmp_path / "run")
    model, tok = load_policy(M0)
    warm = build_dpo_trainer(model, tok, pairs, CFG, tmp_path / "t2", ref_store=store2, ref_fingerprint="ref-A",
                             ref_loader=loader)
    assert loads == [1] and warm.ref_model is None
    assert warm.ref_cache_stats == {"reused": 2 * len(pairs), "computed": 0, "reference_loaded": False}
    assert warm.train_dataset["ref_chosen_logps"] == cold.train_dataset["ref_chosen_logps"]
    warm.train()  # trains on the cached values (no reference forward) and learns
    assert warm.state.global_step == pytest.approx(len(pairs) / CFG.batch_size, abs=1)

    # another reference (other weights) or max_length is another key: computed, not served
    model, tok = load_policy(M0)
    other = build_dpo_trainer(model, tok, pairs, CFG, tmp_path / "t3", ref_store=store2, ref_fingerprint="ref-B")
    assert other.ref_cache_stats["computed"] == len(pairs)  # no loader: the policy itself is the reference
    assert torch.allclose(torch.tensor(other.train_dataset["ref_chosen_logps"]), torch.tensor(fresh_c), atol=1e-4)


def test_train_dpo_with_the_store_matches_the_default_reference(pairs, tmp_path):
    """Same pairs, same config without batching by length: the loss curve with cached reference log-probs is the
    loss curve with TRL's frozen reference copy."""
    import dataclasses

    from rlrf_nb.training import train_dpo

    cfg = dataclasses.replace(CFG, group_by_length=False)
    model, tok = load_policy(M0)
    default = train_dpo(model, tok, pairs, cfg, tmp_path / "d")
    model, tok = load_policy(M0)
    cached = train_dpo(model, tok, pairs, cfg, tmp_path / "c", ref_store=RunStore(tmp_path / "run"),
                       ref_fingerprint="m0")
    assert cached["ref_cache"]["computed"] == len(pairs)
    losses = [[h["loss"] for h in r["history"] if "loss" in h and "train_runtime" not in h] for r in (default, cached)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert cached["eval"]["after"]["eval_loss"] == pytest.approx(default["eval"]["after"]["eval_loss"], rel=1e-4)


def test_train_cached_reuses_reference_log_probs_and_loads_no_reference_on_a_hit(pairs, tmp_path, monkeypatch):
    import dataclasses

    from rlrf_nb import models
    from rlrf_nb.training import REF_LOGPS_ARTIFACT, train_cached

    ref_path = tmp_path / "ref"  # a reference that is not the starting policy: other weights
    ref, tok = load_policy(M0)
    with torch.no_grad():
        next(ref.parameters()).add_(0.01)
    models.save_policy(ref, tok, ref_path)
    loads = []
    real = models.load_policy
    monkeypatch.setattr(models, "load_policy", lambda path, **kw: loads.append(Path(path)) or real(path, **kw))
    store = RunStore(tmp_path / "run")
    first = train_cached(store, "dpo", M0, [], pairs[:4], CFG, ref_path=ref_path)
    assert not first["cached"] and loads.count(ref_path) == 1  # loaded once, for the missing log-probs
    assert first["info"]["ref_cache"]["computed"] == 4 and len(store.artifact(REF_LOGPS_ARTIFACT)) == 4
    loads.clear()
    other = train_cached(RunStore(tmp_path / "run"), "dpo", M0, [], pairs[:4], dataclasses.replace(CFG, beta=0.2),
                         ref_path=ref_path)  # another stage config on the same pairs and reference
    assert not other["cached"] and ref_path not in loads
    assert other["info"]["ref_cache"] == {"reused": 8, "computed": 0, "reference_loaded": False}
    loads.clear()
    again = train_cached(RunStore(tmp_path / "run"), "dpo", M0, [], pairs[:4], CFG, ref_path=ref_path)
    assert again["cached"] and loads == [again["path"]]  # a rerun of the stage: only the checkpoint is loaded


def test_length_batch_sampler_groups_lengths_and_shuffles_batches():
    from rlrf_nb.training import LengthBatchSampler

    lengths = [random.Random(i).randint(10, 300) for i in range(64)]
    sampler = LengthBatchSampler(lengths, 8, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(64)) and first != second

    def padded(order):
        return sum(8 * max(lengths[j] for j in order[i:i + 8]) for i in range(0, 64, 8))

    shuffled = random.Random(1).sample(range(64), 64)
    assert padded(first) < 0.8 * padded(shuffled)
    batch_max = [max(lengths[j] for j in first[i:i + 8]) for i in range(0, 64, 8)]
    assert batch_max != sorted(batch_max, reverse=True)  # not longest-to-shortest: the batch order is random


def test_bench_quick_writes_its_json(tmp_path):
    import importlib.util

    # benchmarks/bench.py is a script beside the package (make bench), not part of rlrf_nb: load it from its file
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    res = bench.main(["--quick", "--out", str(out)])
    assert torch.get_num_threads() == threads  # restored
    data = json.loads(out.read_text())
    assert set(data) >= {"sampling", "dpo", "stage", "acceptance", "meta", "table"}
    assert [r["scale"] for r in data["sampling"]] == [r["scale"] for r in data["dpo"]] == [1, 2, 4]
    for r in data["sampling"]:
        assert r["base_tokens_per_s"] > 0 and r["ours_tokens_per_s"] > 0 and r["ratio"] > 0
        if data["meta"]["machine"]["cores"] > 1:  # the whole-machine row: as many threads vs as many processes
            assert r["ours_machine_tokens_per_s"] > 0 and r["ratio_machine"] > 0 and r["cores"] == 2
    for r in data["dpo"]:
        assert {"base_pairs_per_s", "warm_pairs_per_s", "cold_pairs_per_s", "base_final_loss", "warm_final_loss",
                "ratio_warm", "loss_rel_diff"} <= set(r)
        assert r["ref_cache"]["warm"]["computed"] == 0 and not r["ref_cache"]["warm"]["reference_loaded"]
    for r in data["stage"]:
        assert r["rerun_seconds"] < r["first_seconds"]
    assert len(data["acceptance"]) == 6 and data["meta"]["quick"] is True
    assert "sampling tokens/s" in data["table"] and res["meta"]["reps"] == 1
    machine = data["meta"]["machine"]  # the facts the fast path's speed depends on, printed with the table
    assert {"cpu", "cpu_flags", "cores", "torch_threads", "torch_cpu_capability", "load_average"} <= set(machine)
    assert "machine: " in data["table"] and "decode rows" in data["table"]
    if not torch.cuda.is_available():
        assert data["vllm"] == [] and data["meta"]["vllm_skipped"] == "no CUDA device"
        assert "vLLM row not run: no CUDA device" in data["table"]


def test_decoding_restores_the_models_attention_setting(m0, convs):
    """The decode loop runs eager attention on CPU and must give the model its own setting back."""
    model, tok = m0
    before = model.config._attn_implementation
    generate(model, tok, convs[:1], max_new_tokens=4, progress=False)
    assert model.config._attn_implementation == before and generation.fast_engine_ok(model)


def test_greedy_evaluation_in_processes_stores_the_same_answers(m0, world, tmp_path):
    """``eval.processes`` and ``diagnose.processes``: notebook 00's checks, the round's dev and test checks (through
    ``evaluate_math``), notebook 05's GSM8K and FactScore and the diagnose's greedy answers, computed in two
    one-thread processes, are the records one process writes; a model off the CPU gets no processes."""
    from rlrf_nb.config import EvalConfig
    from rlrf_nb.diagnose import _greedy
    from rlrf_nb.evals.factscore import evaluate_factscore
    from rlrf_nb.evals.gsm8k import evaluate_gsm8k
    from rlrf_nb.tiny_world import evaluate_math

    model, tok = m0
    exs, bios = world.math["dev"][:5], world.bios["dev"][:3]

    def run(root, processes):
        store = RunStore(tmp_path / root)
        cfg = EvalConfig(split="dev", n_math=5, n_bios=0, max_new_tokens=16, batch_size=2, n_refine=2,
                         processes=processes)
        out = {"math": evaluate_math(model, tok, "fp", world, cfg, store)}
        with sampling_processes(model, tok, processes) as workers:
            out["gsm8k"] = evaluate_gsm8k(model, tok, "fp", exs, store, "M0", max_new_tokens=16, batch_size=2,
                                          workers=workers)["records"]
            out["factscore"] = evaluate_factscore(model, tok, "fp", bios, world, store, "M0", max_new_tokens=16,
                                                  batch_size=2, workers=workers)["records"]
            out["diagnose"] = _greedy(store, "diag", model, tok, "fp", [(e.id, e.prompt) for e in exs], 16, 2,
                                      workers)
        return out

    assert run("two", 2) == run("one", 1)

    class OnGPU(torch.nn.Module):  # a model whose parameters sit on another device is never forked
        def parameters(self, recurse=True):
            yield torch.nn.Parameter(torch.zeros(1, device="meta"))

    with sampling_processes(OnGPU(), tok, 2) as none:
        assert none is None


def test_cached_reference_log_probs_do_not_depend_on_which_pairs_were_computed_with_them(pairs, tmp_path):
    """A pair's reference log-probs are the same bits whether the store computed it with all the pairs or with a
    few others (on CPU each pair is its own forward pass: no padding to a batch-mate's length), so a DPO run gives
    the same weights whatever another stage left in the store (issue 16: a control trained on one store's values and
    on a fresh clone's differed by one test problem)."""
    from rlrf_nb.training import REF_LOGPS_ARTIFACT, build_dpo_trainer, ref_logps_key

    values = []
    for name, subset in (("all", pairs), ("some", pairs[::-3] + pairs[1:2]), ("odd", pairs[1::2])):
        store = RunStore(tmp_path / name)
        model, tok = load_policy(ROOT / "data/tiny_world_v2/m0-phase7b")  # batched, its log-probs moved by 1e-5
        trainer = build_dpo_trainer(model, tok, subset, CFG, tmp_path / f"t-{name}", ref_store=store,
                                    ref_fingerprint="ref-A")
        values.append({r["key"]: (r["ref_chosen_logps"], r["ref_rejected_logps"])
                       for r in store.artifact(REF_LOGPS_ARTIFACT).records()})
    for other in values[1:]:
        common = set(values[0]) & set(other)
        assert len(common) >= 3 and all(values[0][k] == other[k] for k in common)

    # values a store computed in batches (before per-pair passes; their key has no "forward") are not served
    old = RunStore(tmp_path / "old")
    old.artifact(REF_LOGPS_ARTIFACT).extend([
        {"key": ref_logps_key("ref-A", row, trainer.args.max_length, trainer.args.truncation_mode, "fp32"),
         "ref": "ref-A", "ref_chosen_logps": -999.0, "ref_rejected_logps": -999.0}
        for row in trainer.train_dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])])
    model, tok = load_policy(ROOT / "data/tiny_world_v2/m0-phase7b")
    fresh = build_dpo_trainer(model, tok, pairs[1::2], CFG, tmp_path / "t-old", ref_store=old,
                              ref_fingerprint="ref-A")
    assert fresh.ref_cache_stats["computed"] == len(pairs[1::2])  # the probe (the same pairs) reuses these
    assert -999.0 not in fresh.train_dataset["ref_chosen_logps"]
