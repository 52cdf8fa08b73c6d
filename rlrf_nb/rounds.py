"""Iterated RLRF (paper §3.3): M0 -> M1 -> M2, each round = reflection search on fresh prompts with the current
policy, preference pairs, then DPO (or the configured baseline) through TRL.

The round policy is configurable and recorded with every checkpoint: which policy a round starts from
(``rounds.start_from``: the previous round's or M0), which is the DPO reference (``dpo.reference``: pi_{t-1}
or pi_0) and whether earlier rounds' pairs are trained on again (``rounds.carry_over``). Checkpoints are
``save_pretrained`` directories under ``<run>/checkpoints/rounds/M<t>``, marked complete only after saving:
a rerun skips finished rounds, and a run killed during round 2 resumes at round 2 with the search records it
already has. After each round the new policy is evaluated on the held-out dev split: greedy math exact match
and the verifier's per-bio factual precision (FactScore-style), each with a 95% interval.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rlrf_nb.config import EvalConfig
from rlrf_nb.generation import load_sampler
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.models import load_policy
from rlrf_nb.pairs import build_pairs, load_decisions, pair_yield, save_pairs
from rlrf_nb.reflection import reflection_search, search_stats
from rlrf_nb.store import COMPLETE_MARKER, is_complete
from rlrf_nb.tiny_world import evaluate_bios, evaluate_math, model_fingerprint
from rlrf_nb.training import dpo_diagnostics, save_checkpoint, train_stage

log = logging.getLogger(__name__)


def round_prompts(world, rcfg, t: int) -> list:
    """Round ``t``'s prompts: the t-th disjoint slice of the rl split (fresh prompts every round)."""
    n, b = rcfg.prompts_per_round, rcfg.bios_per_round
    math_rl, bios_rl = world.math["rl"], world.bios["rl"]
    if t * n > len(math_rl) or t * b > len(bios_rl):
        raise ValueError(f"round {t} needs rl prompts up to math {t * n} / bios {t * b}, but the rl split has "
                         f"{len(math_rl)} / {len(bios_rl)}: lower rounds.prompts_per_round or raise world.math_rl")
    return math_rl[(t - 1) * n: t * n] + bios_rl[(t - 1) * b: t * b]


def evaluate_policy(model, tok, fingerprint: str, world, store, policy_id: str, rcfg, ecfg) -> dict:
    """Held-out dev checks of one policy (cached in the store by model fingerprint)."""
    t0 = time.monotonic()
    cfg = EvalConfig(split="dev", n_math=rcfg.eval_n_math, n_bios=max(1, rcfg.eval_n_bios),
                     max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size)
    m = evaluate_math(model, tok, fingerprint, world, cfg, store, policy_id=policy_id, refine=False)
    out = {"math_accuracy": m["accuracy"]}
    if rcfg.eval_n_bios:
        b = evaluate_bios(model, tok, fingerprint, world, cfg, store, policy_id=policy_id)
        out.update(bio_precision=b["precision_mean"], bio_claims_supported=b["claims"],
                   claims_per_bio=b["claims_per_bio"])
    out["eval_seconds"] = round(time.monotonic() - t0, 1)
    return out


def checkpoint_path(store, t: int) -> Path:
    return store.path("checkpoints", "rounds", f"M{t}")


def run_rounds(recipe, store, world, judge, rubrics, m0_path: str, *, say=print) -> list[dict]:
    """Run (or resume) ``rounds.n_rounds`` RLRF rounds from the policy at ``m0_path``; returns one row per
    policy (M0 first) with its dev metrics, pair counts and wall times, also written to ``results.json``."""
    rcfg = recipe.rounds
    decisions = load_decisions(store.path(recipe.pairs.decisions))
    paths = {0: str(m0_path)}
    m0, tok = load_policy(m0_path)
    rows = [{"round": 0, "policy": "M0", **evaluate_policy(m0, tok, model_fingerprint(m0_path), world, store, "M0",
                                                           rcfg, recipe.eval)}]
    say(f"M0: dev math {rows[0]['math_accuracy']['rate']:.3f}")
    for t in range(1, rcfg.n_rounds + 1):
        ckpt = checkpoint_path(store, t)
        if is_complete(ckpt):
            info = json.loads((ckpt / "training_log.json").read_text())
            say(f"round {t}: M{t} already trained, loading {ckpt}")
        else:
            info = _train_round(recipe, store, world, judge, rubrics, t, paths, decisions, say)
        paths[t] = str(ckpt)
        model, tok = load_policy(ckpt)
        ev = evaluate_policy(model, tok, model_fingerprint(ckpt), world, store, f"M{t}", rcfg, recipe.eval)
        rows.append({"round": t, "policy": f"M{t}", **ev,
                     **{k: info[k] for k in ("start_from", "reference", "carry_over", "method", "pairs",
                                             "pairs_this_round", "search_seconds", "train_seconds", "round_seconds",
                                             "refinement_beats_parent", "steps") if k in info}})
        say(f"round {t}: dev math {ev['math_accuracy']['rate']:.3f} ({info.get('pairs', 0)} pairs, "
            f"{info.get('round_seconds', 0):.0f} s)")
        store.update_results({"rounds": rows})
    return rows


def _train_round(recipe, store, world, judge, rubrics, t: int, paths: dict, decisions: dict, say) -> dict:
    rcfg, dcfg = recipe.rounds, recipe.dpo
    t0 = time.monotonic()
    start = paths[t - 1] if rcfg.start_from == "previous" else paths[0]
    ref = paths[t - 1] if dcfg.reference == "previous" else paths[0]
    say(f"round {t}: search with {Path(paths[t - 1]).name} on {rcfg.prompts_per_round} fresh prompts")
    searcher, tok = load_policy(paths[t - 1])  # the current policy explores (vLLM with reflection.backend: vllm)
    searcher = load_sampler(recipe.reflection.backend, searcher, paths[t - 1])
    examples = round_prompts(world, rcfg, t)
    res = reflection_search(store, searcher, tok, model_fingerprint(paths[t - 1]), examples, judge, rubrics,
                            recipe.reflection, seed=recipe.run.seed + t, weights=recipe.feedback.weights,
                            policy_id=f"M{t - 1}", prefix=f"rounds/r{t}/")
    search_seconds = time.monotonic() - t0
    pairs = build_pairs(res["pool"], recipe.pairs.policy, min_margin=recipe.pairs.min_margin, round_=t,
                        decisions=decisions)
    save_pairs(store, pairs, f"rounds/r{t}/pairs")
    this_round = len(pairs)
    if rcfg.carry_over:
        for s in range(1, t):
            pairs = list(read_jsonl(store.path(f"rounds/r{s}/pairs.jsonl"))) + pairs
    model, tok = load_policy(start)
    ref_model = None if dcfg.lora or dcfg.precompute_ref else load_policy(ref)[0]
    t1 = time.monotonic()
    if not pairs and dcfg.method == "dpo":
        say(f"round {t}: no pairs, so M{t} = its starting policy (nothing to learn from)")
        out = {"model": model, "history": [], "seconds": 0.0, "steps": 0, "method": "none (no pairs)"}
    else:
        out = train_stage(model, tok, res["pool"], pairs, dcfg, store.path("trainer_tmp", f"r{t}"),
                          ref_model=ref_model)
    info = {"round": t, "start_from": start, "reference": ref if dcfg.method == "dpo" else None,
            "carry_over": rcfg.carry_over, "method": out["method"], "pairs": len(pairs),
            "pairs_this_round": this_round, "pair_yield": pair_yield(pairs, len(examples)),
            "search_seconds": round(search_seconds, 1), "train_seconds": round(time.monotonic() - t1, 1),
            "round_seconds": round(time.monotonic() - t0, 1), "steps": out["steps"],
            "refinement_beats_parent": search_stats(res["pool"])["refinement_beats_parent"],
            "history": out["history"], "probe": out.get("eval"),
            "diagnostics": dpo_diagnostics(out["history"], out.get("eval")) if out["method"] == "dpo" else None}
    save_checkpoint(out["model"], tok, checkpoint_path(store, t), info)
    assert (checkpoint_path(store, t) / COMPLETE_MARKER).exists()
    return info


def before_after(policies: dict, examples: list, max_new_tokens: int = 160) -> list[dict]:
    """Greedy responses of each policy (``{name: (model, tokenizer)}``) to the same prompts, with final-answer
    correctness on math: the notebook's before/after view."""
    from rlrf_nb.generation import generate
    from rlrf_nb.prompts import chat
    from rlrf_nb.tasks import math

    rows = [{"id": ex.id, "prompt": ex.prompt, "gold": ex.answer} for ex in examples]
    for name, (model, tok) in policies.items():
        outs = generate(model, tok, [chat(ex.prompt) for ex in examples], max_new_tokens=max_new_tokens,
                        batch_size=len(examples), progress=False)
        for row, ex, o in zip(rows, examples, outs):
            row[name] = o[0]
            row[f"{name} right"] = math.is_correct(o[0], ex.answer) if ex.task == "math" else None
    return rows
