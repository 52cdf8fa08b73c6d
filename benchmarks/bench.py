"""Speed of the kit's fast paths, side by side in one process against what a user would otherwise write.

``python benchmarks/bench.py [--quick] [--out runs/bench.json]`` (``make bench``) measures, on the
committed tiny M0 (``data/tiny_world/m0``) and tiny-world prompts:

- **sampling**: :func:`rlrf_nb.generation.generate` (length-bucketed batches, one prefill per prompt, the lean
  KV-cache loop) against a plain per-prompt ``model.generate`` loop with the same prompts and settings
  (``num_return_sequences`` samples per prompt, temperature, top-p, max new tokens); generated tokens
  (EOS included) per second;
- **DPO**: :func:`rlrf_nb.training.build_dpo_trainer` with reference log-probs from the run store (cold: the
  first run computes and stores them; warm: a rerun), against TRL's ``DPOTrainer`` with its defaults and a
  frozen reference copy, on the same pairs and stage config; pairs x epochs per second over trainer
  construction + ``train()``, and the final DPO loss of each trained model on all pairs;
- **a repeated stage**: :func:`rlrf_nb.reflection.reflection_search` into a fresh run store, then the same call
  again on a reopened store (a rerun of a completed stage);

each at 1x, 2x and 4x the prompts (pairs), with medians of ``--reps`` repetitions (variants interleaved, so
background load hits them alike). It prints a table with absolute numbers and ratios and writes a JSON.

Torch runs with ``--threads`` intra-op threads (default 1) for every variant: on a shared 2-core machine, two
OpenMP threads per process stall whenever another process is busy, which made any timing meaningless.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
M0 = ROOT / "data/tiny_world/m0"

# 1x sampling = 16 prompts x 10 samples = 160 sequences, the smallest generate() call of the default reflection
# stage (32 refinement prompts x 5); its sample calls are 32 prompts x 10 (2x).
FULL = {"reps": 3, "sampling": {"prompts": 16, "n": 10, "max_new_tokens": 160},
        "dpo": {"pairs": 32, "ablation_scale": 1},
        "stage": {"prompts": 4, "n_samples": 4, "top_k": 2, "m_refinements": 2, "max_new_tokens": 160}}
QUICK = {"reps": 1, "sampling": {"prompts": 1, "n": 2, "max_new_tokens": 8},
         "dpo": {"pairs": 2, "ablation_scale": None, "epochs": 1, "batch_size": 2},
         "stage": {"prompts": 1, "n_samples": 2, "top_k": 1, "m_refinements": 1, "max_new_tokens": 8}}
SCALES = (1, 2, 4)
BARS = {"sampling": 5.0, "sampling_tokens_per_s": 14_000, "dpo": 1.5, "dpo_loss_rel": 0.01, "stage": 50.0}
#: CPU flags that change which kernels torch runs (matmul and attention speed follow them).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def machine_facts(threads: int) -> dict:
    """What the sampling speed depends on: CPU model, the vector-instruction flags torch can use, the cores this
    process may run on, torch's threads and the kernels it picked (its CPU capability), and the load when the
    bench starts (another busy process halves a 2-core machine)."""
    import os

    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "?")()
    return {"cpu": model or platform.processor() or "?", "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "cores": _cpus(), "torch_threads": threads, "torch_cpu_capability": capability,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def describe_machine(m: dict) -> str:
    return (f"machine: {m['cpu']}; flags {' '.join(m['cpu_flags']) or 'none of ' + '/'.join(CPU_FLAGS)}; "
            f"{m['cores']} cores, torch threads {m['torch_threads']}, torch CPU kernels {m['torch_cpu_capability']}; "
            f"load average at start {m['load_average']}")


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------


def _count(gen_rows: list[list[int]], eos: int) -> int:
    """Generated tokens up to and including the first EOS of each row."""
    return sum(next((k + 1 for k, t in enumerate(row) if t == eos), len(row)) for row in gen_rows)


def sampling_baseline(model, tok, convs, *, n, max_new_tokens, temperature, top_p, seed) -> tuple[int, list]:
    """What a user writes: one ``model.generate`` per prompt, ``num_return_sequences=n``."""
    from rlrf_nb.generation import render_prompts

    torch.manual_seed(seed)
    tokens, texts = 0, []
    with torch.inference_mode():
        for text in render_prompts(tok, convs):
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p, num_return_sequences=n,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
            gen = out[:, enc["input_ids"].shape[1]:]
            tokens += _count(gen.tolist(), tok.eos_token_id)
            texts.append(tok.batch_decode(gen, skip_special_tokens=True))
    return tokens, texts


def sampling_ours(model, tok, convs, *, n, max_new_tokens, temperature, top_p, seed) -> tuple[int, list]:
    """:func:`generate`'s work (token ids, then the same decode), with the token count beside it."""
    from rlrf_nb.generation import generate_ids

    ids = generate_ids(model, tok, convs, max_new_tokens=max_new_tokens, batch_size=len(convs), do_sample=True,
                       temperature=temperature, top_p=top_p, num_return_sequences=n, seed=seed)
    flat = [g for gs in ids for g in gs]
    texts = tok.batch_decode(flat, skip_special_tokens=True)
    return sum(len(g) for g in flat), texts


def sampling_ours_processes(workers, tok, convs, *, n, max_new_tokens, temperature, top_p, seed):
    """:func:`sampling_ours` on the whole machine: the prompts split between ``workers``' processes
    (:class:`rlrf_nb.generation.SamplingProcesses`, one thread each), one ``generate_ids`` call per process."""
    from rlrf_nb.generation import generate_ids

    k = workers.processes
    parts = [convs[i::k] for i in range(k)]
    kw = {"max_new_tokens": max_new_tokens, "do_sample": True, "temperature": temperature, "top_p": top_p,
          "num_return_sequences": n, "seed": seed}
    ids = [g for part in workers.imap([(p, {**kw, "batch_size": len(p)}) for p in parts], fn=generate_ids)
           for gs in part for g in gs]
    return sum(len(g) for g in ids), tok.batch_decode(ids, skip_special_tokens=True)


def bench_sampling(model, tok, world, spec, reps, say, cores: int = 1) -> list[dict]:
    """Per scale: the baseline and :func:`generate` with the bench's threads (one core), and, with ``cores`` > 1,
    the whole machine: the baseline with ``cores`` threads against ``cores`` sampling processes."""
    from rlrf_nb.generation import SamplingProcesses
    from rlrf_nb.prompts import chat

    rows = []
    threads = torch.get_num_threads()
    with SamplingProcesses(model, tok, cores) as workers:
        for scale in SCALES:
            convs = [chat(ex.prompt) for ex in world.math["rl"][: spec["prompts"] * scale]]
            kw = {"n": spec["n"], "max_new_tokens": spec["max_new_tokens"], "temperature": 1.0, "top_p": 1.0}
            variants = {"base": (sampling_baseline, model, threads), "ours": (sampling_ours, model, threads)}
            if cores > 1:
                variants.update({"base_machine": (sampling_baseline, model, cores),
                                 "ours_machine": (sampling_ours_processes, workers, threads)})
            t = {k: [] for k in variants}
            toks = {k: [] for k in variants}
            for rep in range(reps):
                for name, (fn, first, n_threads) in variants.items():
                    torch.set_num_threads(n_threads)
                    t0 = time.perf_counter()
                    n_tok, _ = fn(first, tok, convs, seed=rep, **kw)
                    t[name].append(time.perf_counter() - t0)
                    toks[name].append(n_tok)
                    torch.set_num_threads(threads)
            rate = {k: _median([a / b for a, b in zip(toks[k], t[k])]) for k in t}
            row = {"scale": scale, "prompts": len(convs), "samples_per_prompt": spec["n"],
                   "max_new_tokens": spec["max_new_tokens"], "base_seconds": _median(t["base"]),
                   "ours_seconds": _median(t["ours"]), "base_tokens": _median(toks["base"]),
                   "ours_tokens": _median(toks["ours"]), "base_tokens_per_s": rate["base"],
                   "ours_tokens_per_s": rate["ours"], "ratio": rate["ours"] / rate["base"],
                   "base_runs_s": t["base"], "ours_runs_s": t["ours"],
                   "decode_rows": len(convs) * spec["n"]}  # one generate() call: every prompt's samples together
            msg = (f"  sampling {scale}x: {row['base_tokens_per_s']:.0f} -> {row['ours_tokens_per_s']:.0f} tokens/s "
                   f"({row['ratio']:.1f}x)")
            if cores > 1:
                row.update({"cores": cores, "base_machine_seconds": _median(t["base_machine"]),
                            "ours_machine_seconds": _median(t["ours_machine"]),
                            "base_machine_tokens_per_s": rate["base_machine"],
                            "ours_machine_tokens_per_s": rate["ours_machine"],
                            "ratio_machine": rate["ours_machine"] / rate["base_machine"]})
                msg += (f"; whole machine ({cores} threads vs {cores} processes): "
                        f"{row['base_machine_tokens_per_s']:.0f} -> {row['ours_machine_tokens_per_s']:.0f} tokens/s "
                        f"({row['ratio_machine']:.1f}x)")
            say(msg)
            rows.append(row)
    return rows


def bench_vllm(world, spec, reps, say) -> tuple[list[dict], str | None]:
    """Sampling through :class:`rlrf_nb.generation.VLLMEngine` (``reflection.backend: vllm``) on the committed M0,
    where vLLM and CUDA exist; else no rows and the reason. Same prompts and settings as the CPU rows."""
    import importlib.util

    if not torch.cuda.is_available():
        return [], "no CUDA device"
    if importlib.util.find_spec("vllm") is None:
        return [], "vllm is not installed"
    from rlrf_nb.generation import load_vllm
    from rlrf_nb.prompts import chat

    policy = load_vllm(str(M0), torch.bfloat16)
    tok = policy.engine.llm.get_tokenizer()
    rows = []
    for scale in SCALES:
        convs = [chat(ex.prompt) for ex in world.math["rl"][: spec["prompts"] * scale]]
        runs = []
        for rep in range(reps):
            t0 = time.perf_counter()
            texts = policy.generate(convs, max_new_tokens=spec["max_new_tokens"], do_sample=True, temperature=1.0,
                                    top_p=1.0, num_return_sequences=spec["n"], seed=rep)
            n_tok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for ts in texts for t in ts)  # + EOS
            runs.append((n_tok, time.perf_counter() - t0))
        row = {"scale": scale, "prompts": len(convs), "samples_per_prompt": spec["n"],
               "seconds": _median([s for _, s in runs]), "tokens_per_s": _median([n / s for n, s in runs])}
        say(f"  vLLM sampling {scale}x: {row['tokens_per_s']:.0f} tokens/s")
        rows.append(row)
    return rows, None


# ---------------------------------------------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------------------------------------------


def bench_pairs(world, n: int) -> list[dict]:
    """``n`` preference pairs on tiny-world math: the reference solution over one with an injected wrong step."""
    from rlrf_nb.pairs import Candidate, build_pairs
    from rlrf_nb.tasks import math

    rng = random.Random(0)
    pool = []
    for ex in (world.math["rl"] + world.math["dev"])[:n]:
        bad, _ = math.corrupt_solution(rng, ex)
        pool += [Candidate(f"{ex.id}/good", ex.id, ex.prompt, ex.reference, "sample", 1.0, {}, correct=True),
                 Candidate(f"{ex.id}/bad", ex.id, ex.prompt, bad, "sample", 0.25, {},
                           correct=math.is_correct(bad, ex.answer))]
    return build_pairs(pool, "best_vs_worst")


def _final_loss(trainer) -> float:
    return float(trainer.evaluate()["eval_loss"])


def dpo_baseline(pairs, cfg, out_dir) -> tuple[float, object]:
    """TRL's ``DPOTrainer`` with default reference handling: a frozen copy of the policy beside it, TRL's
    defaults otherwise (random batches, gradient checkpointing); the same stage config as ours."""
    from trl import DPOConfig, DPOTrainer

    from rlrf_nb.models import load_policy
    from rlrf_nb.pairs import to_dataset
    from rlrf_nb.training import _common_args, for_method

    model, tok = load_policy(M0)
    cfg = for_method(cfg, "dpo")  # DPO's rate: dpo.dpo_learning_rate when set
    common = {k: v for k, v in _common_args(cfg, out_dir).items() if k != "activation_checkpointing"}
    t0 = time.perf_counter()
    args = DPOConfig(**common, beta=cfg.beta, loss_type=list(cfg.loss_type), loss_weights=cfg.loss_weights)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=to_dataset(pairs),
                         eval_dataset=to_dataset(pairs), processing_class=tok)
    trainer.train()
    return time.perf_counter() - t0, trainer


def dpo_ours(pairs, cfg, out_dir, store) -> tuple[float, object]:
    """The kit's DPO trainer with reference log-probs from ``store`` (computed there on a miss)."""
    from rlrf_nb.models import load_policy, model_fingerprint
    from rlrf_nb.training import build_dpo_trainer

    fingerprint = model_fingerprint(M0)
    model, tok = load_policy(M0)
    t0 = time.perf_counter()
    trainer = build_dpo_trainer(model, tok, pairs, cfg, out_dir, eval_pairs=pairs, ref_store=store,
                                ref_fingerprint=fingerprint)
    trainer.train()
    return time.perf_counter() - t0, trainer


def bench_dpo(world, cfg, spec, reps, work: Path, say) -> list[dict]:
    from rlrf_nb.store import RunStore

    rows = []
    for scale in SCALES:
        pairs = bench_pairs(world, spec["pairs"] * scale)
        variants = ["base", "cold", "warm"]
        if spec.get("ablation_scale") == scale:
            variants.append("warm_ckpt")  # ours with TRL's gradient checkpointing: what the cache + batching give
        t = {v: [] for v in variants}
        loss = {v: [] for v in variants}
        train_loss = {v: [] for v in variants}
        stats = {}
        for rep in range(reps):
            store = RunStore(work / f"dpo-{scale}-{rep}")  # cold: a fresh store
            for v in variants:
                out = work / f"trainer-{v}"
                if v == "base":
                    seconds, trainer = dpo_baseline(pairs, cfg, out)
                else:
                    c = dataclasses.replace(cfg, gradient_checkpointing=True) if v == "warm_ckpt" else cfg
                    seconds, trainer = dpo_ours(pairs, c, out, store)
                    stats[v] = dict(trainer.ref_cache_stats)
                t[v].append(seconds)
                train_loss[v].append(float(trainer.state.log_history[-1].get("train_loss", float("nan"))))
                loss[v].append(_final_loss(trainer))
                del trainer
        work_pairs = len(pairs) * cfg.epochs
        rate = {v: work_pairs / _median(t[v]) for v in variants}
        row = {"scale": scale, "pairs": len(pairs), "epochs": cfg.epochs, "batch_size": cfg.batch_size,
               **{f"{v}_seconds": _median(t[v]) for v in variants},
               **{f"{v}_pairs_per_s": rate[v] for v in variants},
               **{f"{v}_final_loss": _median(loss[v]) for v in variants},
               **{f"{v}_train_loss": _median(train_loss[v]) for v in variants},
               "ratio_warm": rate["warm"] / rate["base"], "ratio_cold": rate["cold"] / rate["base"],
               "loss_rel_diff": abs(_median(loss["warm"]) - _median(loss["base"])) / abs(_median(loss["base"])),
               "ref_cache": stats}
        if "warm_ckpt" in variants:
            row["ratio_warm_ckpt"] = rate["warm_ckpt"] / rate["base"]
        say(f"  dpo {scale}x: {rate['base']:.1f} -> {rate['warm']:.1f} pairs/s ({row['ratio_warm']:.2f}x warm, "
            f"{row['ratio_cold']:.2f}x cold); loss {row['base_final_loss']:.4f} vs {row['warm_final_loss']:.4f}")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# A repeated stage
# ---------------------------------------------------------------------------------------------------------------


def bench_stage(model, tok, world, spec, reps, work: Path, say) -> list[dict]:
    from rlrf_nb.config import ReflectionConfig
    from rlrf_nb.models import model_fingerprint
    from rlrf_nb.reflection import reflection_search
    from rlrf_nb.rubrics import load_rubric_set
    from rlrf_nb.store import RunStore
    from rlrf_nb.verifier import VerifierJudge

    rubrics = load_rubric_set(ROOT / "data/rubrics")
    judge = VerifierJudge(rubrics, {p["name"]: p for p in world.people})
    fingerprint = model_fingerprint(M0)
    rows = []
    for scale in SCALES:
        examples = world.math["rl"][: spec["prompts"] * scale]
        cfg = ReflectionConfig(n_prompts=len(examples), n_samples=spec["n_samples"], top_k=spec["top_k"],
                               m_refinements=spec["m_refinements"], max_rounds=1,
                               max_new_tokens=spec["max_new_tokens"])
        first, rerun, cands = [], [], 0
        for rep in range(reps):
            run_dir = work / f"stage-{scale}-{rep}"
            t0 = time.perf_counter()
            res = reflection_search(RunStore(run_dir), model, tok, fingerprint, examples, judge, rubrics, cfg,
                                    seed=rep)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = reflection_search(RunStore(run_dir), model, tok, fingerprint, examples, judge, rubrics, cfg,
                                      seed=rep)  # a rerun: a new process would reopen the store like this
            rerun.append(time.perf_counter() - t0)
            if [c.text for c in again["pool"]] != [c.text for c in res["pool"]]:
                raise AssertionError("the rerun of the reflection stage returned a different pool")
            cands = len(res["pool"])
        row = {"scale": scale, "prompts": len(examples), "candidates": cands, "first_seconds": _median(first),
               "rerun_seconds": _median(rerun), "ratio": _median(first) / _median(rerun),
               "first_runs_s": first, "rerun_runs_s": rerun}
        say(f"  reflection stage {scale}x: first {row['first_seconds']:.2f} s, rerun {row['rerun_seconds']:.3f} s "
            f"({row['ratio']:.0f}x)")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def table(res: dict) -> str:
    """The printed table: absolute numbers and ratios per benchmark and scale."""
    lines = ["| benchmark | scale | size | baseline | ours | ratio |", "|---|---|---|---|---|---|"]
    for r in res["sampling"]:
        lines.append(f"| sampling tokens/s | {r['scale']}x | {r['prompts']} prompts x {r['samples_per_prompt']} "
                     f"({r.get('decode_rows', '?')} decode rows) | "
                     f"{r['base_tokens_per_s']:.0f} ({r['base_seconds']:.2f} s) | "
                     f"{r['ours_tokens_per_s']:.0f} ({r['ours_seconds']:.2f} s) | {r['ratio']:.2f}x |")
    for r in res["sampling"]:
        if "ratio_machine" in r:
            lines.append(f"| sampling tokens/s, whole machine ({r['cores']} threads / {r['cores']} processes) | "
                         f"{r['scale']}x | {r['prompts']} prompts x {r['samples_per_prompt']} | "
                         f"{r['base_machine_tokens_per_s']:.0f} ({r['base_machine_seconds']:.2f} s) | "
                         f"{r['ours_machine_tokens_per_s']:.0f} ({r['ours_machine_seconds']:.2f} s) | "
                         f"{r['ratio_machine']:.2f}x |")
    for r in res["dpo"]:
        size = f"{r['pairs']} pairs x {r['epochs']:g} ep"
        lines.append(f"| DPO pairs/s, ref cached (warm) | {r['scale']}x | {size} | "
                     f"{r['base_pairs_per_s']:.2f} ({r['base_seconds']:.2f} s) | "
                     f"{r['warm_pairs_per_s']:.2f} ({r['warm_seconds']:.2f} s) | {r['ratio_warm']:.2f}x |")
        lines.append(f"| DPO pairs/s, first run (cold) | {r['scale']}x | {size} | "
                     f"{r['base_pairs_per_s']:.2f} ({r['base_seconds']:.2f} s) | "
                     f"{r['cold_pairs_per_s']:.2f} ({r['cold_seconds']:.2f} s) | {r['ratio_cold']:.2f}x |")
        if "ratio_warm_ckpt" in r:
            lines.append(f"| DPO pairs/s, warm, TRL grad. checkpointing | {r['scale']}x | {size} | "
                         f"{r['base_pairs_per_s']:.2f} ({r['base_seconds']:.2f} s) | "
                         f"{r['warm_ckpt_pairs_per_s']:.2f} ({r['warm_ckpt_seconds']:.2f} s) | "
                         f"{r['ratio_warm_ckpt']:.2f}x |")
        lines.append(f"| DPO final loss (all pairs) | {r['scale']}x | {size} | {r['base_final_loss']:.5f} | "
                     f"{r['warm_final_loss']:.5f} | {100 * r['loss_rel_diff']:.2f}% diff |")
    for r in res.get("vllm", []):
        lines.append(f"| vLLM sampling tokens/s (GPU) | {r['scale']}x | {r['prompts']} prompts x "
                     f"{r['samples_per_prompt']} | - | {r['tokens_per_s']:.0f} ({r['seconds']:.2f} s) | - |")
    for r in res["stage"]:
        lines.append(f"| reflection stage rerun | {r['scale']}x | {r['prompts']} prompts, {r['candidates']} cand. | "
                     f"first run {r['first_seconds']:.2f} s | rerun {r['rerun_seconds']:.3f} s | {r['ratio']:.0f}x |")
    acc = res["acceptance"]
    if res["meta"].get("machine"):
        lines += ["", describe_machine(res["meta"]["machine"])]
    if res["meta"].get("vllm_skipped"):
        lines += [f"vLLM row not run: {res['meta']['vllm_skipped']}"]
    lines += ["", "acceptance (" + res["meta"]["device"] + f", medians of {res['meta']['reps']}):"]
    lines += [f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok in acc.items()]
    return "\n".join(lines)


def acceptance(res: dict) -> dict:
    """Each bar, checked at every scale."""
    return {f"sampling >= {BARS['sampling']:g}x tokens/s at every scale":
                all(r["ratio"] >= BARS["sampling"] for r in res["sampling"]),
            f"sampling >= {BARS['sampling_tokens_per_s']:,} tokens/s at every scale, one thread (2x issue 21's 7k)":
                all(r["ours_tokens_per_s"] >= BARS["sampling_tokens_per_s"] for r in res["sampling"]),
            f"sampling on the whole machine >= {BARS['sampling']:g}x the baseline with as many threads, every scale":
                all(r.get("ratio_machine", BARS["sampling"]) >= BARS["sampling"] for r in res["sampling"]),
            f"DPO (warm cache) >= {BARS['dpo']:g}x pairs/s at every scale":
                all(r["ratio_warm"] >= BARS["dpo"] for r in res["dpo"]),
            f"DPO final loss within {100 * BARS['dpo_loss_rel']:g}% of TRL's default":
                all(r["loss_rel_diff"] <= BARS["dpo_loss_rel"] for r in res["dpo"]),
            f"reflection stage rerun >= {BARS['stage']:g}x faster than its first run at every scale":
                all(r["ratio"] >= BARS["stage"] for r in res["stage"])}


def run(quick: bool = False, reps: int | None = None, threads: int = 1, work_dir: str | None = None,
        say=print) -> dict:
    import datasets
    import transformers

    from rlrf_nb.config import load_recipe
    from rlrf_nb.models import load_policy
    from rlrf_nb.tiny_world import build_world

    spec = QUICK if quick else FULL
    reps = reps or spec["reps"]
    saved = (torch.get_num_threads(), transformers.logging.get_verbosity(),
             datasets.utils.logging.is_progress_bar_enabled(), logging.getLogger("rlrf_nb").level)
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("rlrf_nb").setLevel(logging.WARNING)
    recipe = load_recipe(ROOT / "recipes/tiny.yaml")
    world = build_world(recipe.world)
    dcfg = dataclasses.replace(recipe.dpo, logging_steps=10_000,
                               **{k: spec["dpo"][k] for k in ("epochs", "batch_size") if k in spec["dpo"]})
    work = Path(work_dir or tempfile.mkdtemp(prefix="rlrf-bench-"))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        model, tok = load_policy(M0)
        machine = machine_facts(threads)
        say(describe_machine(machine))
        say(f"bench ({'quick' if quick else 'full'}, {reps} reps, torch threads {threads}) in {work}")
        res = {"sampling": bench_sampling(model, tok, world, spec["sampling"], reps, say,
                                          cores=min(2, _cpus())),
               "dpo": bench_dpo(world, dcfg, spec["dpo"], reps, work, say),
               "stage": bench_stage(model, tok, world, spec["stage"], reps, work, say)}
        res["vllm"], vllm_skipped = bench_vllm(world, spec["sampling"], reps, say)
    finally:
        torch.set_num_threads(saved[0])
        transformers.logging.set_verbosity(saved[1])
        if saved[2]:
            datasets.enable_progress_bars()
        logging.getLogger("rlrf_nb").setLevel(saved[3])
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    res["meta"] = {"quick": quick, "reps": reps, "torch_threads": threads, "started_utc": started,
                   "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
                   "transformers": transformers.__version__, "python": platform.python_version(),
                   "device": "cuda" if torch.cuda.is_available() else f"cpu ({_cpus()} cores)",
                   "dpo_config": dataclasses.asdict(dcfg), "spec": spec, "machine": machine,
                   "vllm_skipped": vllm_skipped}
    res["acceptance"] = acceptance(res)
    return res


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (a smoke test)")
    ap.add_argument("--out", default="runs/bench.json", help="where to write the JSON of results")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3, quick 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every variant")
    ap.add_argument("--work-dir", default=None, help="keep the benchmark's run stores here (default: a temp dir)")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, reps=args.reps, threads=args.threads, work_dir=args.work_dir)
    text = table(res)
    sys.stdout.write(text + "\n")  # a command's output, not a log line
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**res, "table": text}, indent=1, default=str) + "\n")
    sys.stdout.write(f"wrote {out}\n")
    return res


if __name__ == "__main__":
    main()
