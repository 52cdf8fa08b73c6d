"""Iterated RLRF (paper §3.3): M0 -> M1 -> M2, each round = reflection search on fresh prompts with the current policy,
preference pairs, then DPO (or the configured baseline) through TRL.

The round policy is recorded with every checkpoint: the start (``rounds.start_from``: the previous round's policy or
M0), the DPO reference (``dpo.reference``: pi_{t-1} or pi_0) and whether earlier rounds' pairs are trained on again
(``rounds.carry_over``). Checkpoints (``save_pretrained`` directories under ``<run>/checkpoints/rounds/M<t>``) are
marked complete only after saving, so a rerun skips finished rounds and a run killed in round 2 resumes there with the
search records it has. The online variants (``rounds.variants`` grpo, rloo, grpo_reflect: :mod:`rlrf_nb.online_rl`)
replace search, pairs and DPO by TRL's GRPO or RLOO on the round's fresh prompts, rewarded by the same judge. On one
GPU (:func:`rlrf_nb.models.placement`) a round holds one model at a time: the searcher (a vLLM engine sleeps after the
search), the trainer, then the policy being evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from rlrf_nb import task_data
from rlrf_nb.config import ONLINE_VARIANTS, VARIANT_LABELS, EvalConfig
from rlrf_nb.generation import generate, generate_to_store, load_searcher, release_vllm, sampling_processes
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.models import load_policy, model_fingerprint, placement, training_log
from rlrf_nb.online_rl import run_online, train_online_cached
from rlrf_nb.pairs import Candidate, build_pairs, load_decisions, pair_yield, save_pairs
from rlrf_nb.prompts import chat
from rlrf_nb.reflection import reflection_search, search_stats
from rlrf_nb.store import is_complete
from rlrf_nb.tasks import math
from rlrf_nb.tiny_world import evaluate_bios, evaluate_math
from rlrf_nb.training import (
    has_training_data,
    release_memory,
    save_checkpoint,
    stage_config_key,
    stage_diagnostics,
    train_cached,
    train_stage,
)

log = logging.getLogger(__name__)


def round_prompts(recipe, world, t: int) -> list:
    """Round ``t``'s prompts: the t-th disjoint slice of the search prompts (fresh prompts every round), from
    ``reflection.prompt_source`` (the tiny world's rl split by default; :func:`rlrf_nb.task_data.search_examples`)."""
    n, b = recipe.rounds.prompts_per_round, recipe.rounds.bios_per_round
    return task_data.search_examples(recipe, world, n_math=n, n_bios=b, offset_math=(t - 1) * n,
                                     offset_bios=(t - 1) * b)


def evaluate_policy(model, tok, fingerprint: str, recipe, world, store, policy_id: str) -> dict:
    """Held-out dev checks of one policy, cached by model fingerprint: greedy math exact match on the dev slice
    (:func:`rlrf_nb.task_data.dev_math`: the tiny world's dev split, or the tail of a real task's training data) and,
    with ``rounds.eval_n_bios``, the tiny world's bio claim precision."""
    rcfg, ecfg = recipe.rounds, recipe.eval
    t0 = time.monotonic()
    cfg = EvalConfig(split="dev", n_math=rcfg.eval_n_math, n_bios=rcfg.eval_n_bios,
                     max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size, processes=ecfg.processes)
    m = evaluate_math(model, tok, fingerprint, world, cfg, store, policy_id=policy_id, refine=False,
                      examples=task_data.dev_math(recipe, world, rcfg.eval_n_math))
    out = {"math_accuracy": m["accuracy"]}
    if task_data.dev_bios(recipe, world, rcfg.eval_n_bios):
        b = evaluate_bios(model, tok, fingerprint, world, cfg, store, policy_id=policy_id)
        out.update(bio_precision=b["precision_mean"], bio_claims_supported=b["claims"],
                   claims_per_bio=b["claims_per_bio"])
    out["eval_seconds"] = round(time.monotonic() - t0, 1)
    return out


def evaluate_test_math(model, tok, fingerprint: str, recipe, world, store, policy_id: str, n: int | None = None
                       ) -> list[dict]:
    """Greedy answers to the first ``n`` (default ``eval.n_math``) held-out **test** problems (the split claims are
    read on: the tiny world's test split, or GSM8K test), one record each with ``correct`` (strict final answer) and
    ``perfect`` (every step right; the final answer alone on real GSM8K). Cached in the store like every record."""
    ecfg = recipe.eval
    examples = task_data.gsm8k_test(recipe, world, n or ecfg.n_math)
    cfg = EvalConfig(split="test", n_math=len(examples), n_bios=0, max_new_tokens=ecfg.max_new_tokens,
                     batch_size=ecfg.batch_size, processes=ecfg.processes)
    recs = evaluate_math(model, tok, fingerprint, world, cfg, store, policy_id=policy_id, refine=False,
                         examples=examples)["records"]
    return [{**r, "perfect": bool(r["correct"] and r["first_error"] is None)} for r in recs]


def wrong_samples(store, model, tok, fingerprint: str, examples: list, *, max_new_tokens: int, per_prompt: int = 1,
                  processes: int = 1, name: str = "control-m0-samples") -> list:
    """Gold DPO's rejected answers without a search: ``per_prompt`` samples of the policy per math example at
    T = 1.0 (artifact ``name``; each record's random stream is seeded by its key, so the same samples in any batch or
    process), and those whose final answer is wrong, as candidates of reward 0 (``<id>/s<i>``)."""
    with sampling_processes(model, tok, processes) as workers:
        recs = generate_to_store(store, name, model, tok, fingerprint,
                                 [{"id": ex.id, "prompt": ex.prompt} for ex in examples], n=per_prompt,
                                 temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=0, batch_size=64,
                                 workers=workers)
    asked = [(ex, i) for ex in examples for i in range(per_prompt)]  # the records come back in this order
    return [Candidate(f"{ex.id}/s{i}", ex.id, ex.prompt, r["text"], "sample", 0.0, {}, correct=False)
            for (ex, i), r in zip(asked, recs, strict=True) if not math.check_example(r["text"], ex).correct]


def control_data(recipe, world, store, model, tok, fingerprint: str, examples: list, pool: list) -> tuple[list, list]:
    """The positive controls' data (notebook 03): ``(math examples, candidate pool)`` for ``training.gold_candidates``
    (gold SFT) and ``training.gold_pairs`` (gold DPO). With ``dpo.control_prompts`` unset, the search's own math prompts
    and pool (its lowest-reward wrong candidate is each pair's rejected); with ``N``, the first ``N`` math prompts of
    the search's source (the search's prompts first) and one T = 1.0 sample of the policy per prompt as the rejected
    answer when it is wrong (:func:`wrong_samples`), so the controls' budget does not follow the search's."""
    n = recipe.dpo.control_prompts
    if n is None:
        return [ex for ex in examples if ex.task == "math"], pool
    exs = task_data.search_examples(recipe, world, n_math=n, n_bios=0, budget="dpo.control_prompts")
    return exs, wrong_samples(store, model, tok, fingerprint, exs, max_new_tokens=recipe.eval.max_new_tokens,
                              processes=recipe.reflection.processes)


def checkpoint_path(store, t: int, variant: str = "rlrf") -> Path:
    """``checkpoints/rounds/M<t>`` for RLRF, ``checkpoints/rounds/<variant>/M<t>`` for an ablation or baseline."""
    base = store.path("checkpoints", "rounds") if variant == "rlrf" else store.path("checkpoints", "rounds", variant)
    return base / f"M{t}"


def variant_setup(recipe, variant: str) -> tuple[str, object, object]:
    """(pair policy, DPO stage config, reflection config) of a round-loop variant: ``rlrf`` as written,
    ``no_reflection`` (samples only, no refinement: later rounds cost only the samples), ``scalar`` (one overall score),
    ``rs_sft`` (SFT on the best candidates). The online variants search nothing and have no setup here; any other name
    is a ``ValueError``."""
    policy, dcfg, refl = recipe.pairs.policy, recipe.dpo, recipe.reflection
    if variant == "no_reflection":
        return "no_reflection", dcfg, dataclasses.replace(refl, max_rounds=0)
    if variant == "scalar":
        return "scalar", dcfg, dataclasses.replace(refl, overall_score=True)
    if variant == "rs_sft":
        return policy, dataclasses.replace(dcfg, method="rs_sft"), refl
    if variant != "rlrf":
        raise ValueError(f"unknown pair-based round variant {variant!r}; choose from "
                         f"{[v for v in VARIANT_LABELS if v not in ONLINE_VARIANTS]}")
    return policy, dcfg, refl


def train_variants(store, start_path, pool: list, recipe, *, decisions: dict | None = None, place=None, judge=None,
                   rubrics=None, world=None) -> tuple[dict[str, dict], list[str]]:
    """Notebook 03's one-round ablations: every :func:`variant_setup` variant but RLRF, trained once from ``start_path``
    on notebook 02's ``pool`` (pairs under the variant's pair policy and the review ``decisions``, or the best
    candidates for RS-SFT; :func:`rlrf_nb.training.train_cached`), then the online variants ``rounds.variants`` lists,
    which need no pool: TRL samples from the policy on the search's prompts (those of the pool) and ``judge`` with
    ``rubrics`` rewards it (:func:`rlrf_nb.online_rl.train_online_cached`; ``world``: the tiny world, None in a real
    recipe; a ``ValueError`` when online variants are listed without ``judge`` and ``rubrics``). Returns
    ``{label: trained}`` and the labels of the variants without training data (to report, not hide). With
    ``dpo.method: rs_sft`` the RS-SFT variant is not trained: it would be RLRF's own M1."""
    trained, empty = {}, []
    online = [v for v in recipe.rounds.variants if v in ONLINE_VARIANTS]
    if online and (judge is None or rubrics is None):
        raise ValueError(f"rounds.variants lists {online}: train_variants needs judge= and rubrics= (and world= in "
                         "the tiny world) to train them: their reward is the judge's, on the search prompts")
    for variant in (v for v in VARIANT_LABELS if v != "rlrf" and v not in ONLINE_VARIANTS):
        if variant == "rs_sft" and recipe.dpo.method == "rs_sft":
            continue  # RLRF's own step is RS-SFT here (dpo.method): the RS-SFT baseline would be RLRF's M1 again
        policy, dcfg, _ = variant_setup(recipe, variant)
        vpool = variant_pool(pool, variant)
        pairs = build_pairs(vpool, policy, decisions=decisions, **recipe.pairs.build_kwargs())
        if not has_training_data(vpool, pairs, dcfg):
            empty.append(VARIANT_LABELS[variant])
            continue
        trained[VARIANT_LABELS[variant]] = train_cached(store, f"{dcfg.method}-{policy}-M1", start_path, vpool,
                                                        pairs, dcfg, place=place)
    for variant in online:  # the pool's prompts: reflection.n_prompts (+ n_bios) of the search prompts
        trained[VARIANT_LABELS[variant]] = train_online_cached(store, f"{variant}-M1", start_path,
                                                               task_data.search_examples(recipe, world), judge,
                                                               rubrics, recipe, variant, seed=recipe.run.seed,
                                                               place=place)
    return trained, empty


def variant_pool(pool: list, variant: str) -> list:
    """The candidates a variant may train on, as it sees them. Round 1's search is shared by every variant and RS-SFT
    reads the pool itself (:func:`rlrf_nb.training.rs_sft_rows`), so each variant's view is set here, not only in its
    pair policy: ``no_reflection`` gets the samples only (the search holds refinements); ``scalar`` gets every
    candidate with its overall score as its reward (its pairs already rank by that score, RS-SFT must select by it
    too; a candidate whose overall score did not parse has no reward); any other variant gets the pool as it is."""
    if variant == "no_reflection":
        return [c for c in pool if c.kind == "sample"]
    if variant == "scalar":
        return [dataclasses.replace(c, reward=c.overall) for c in pool]
    return pool


def round_setup(recipe, t: int, variant: str) -> tuple:
    """:func:`variant_setup` for round ``t``: ``(pair policy, dpo config, reflection config)``, with round 1's search
    the recipe's own (M0 searches once for every variant: :func:`search_args`)."""
    policy, dcfg, refl = variant_setup(recipe, variant)
    return policy, dcfg, recipe.reflection if t == 1 else refl


def search_args(recipe, t: int, variant: str) -> tuple[str, int]:
    """(store prefix, seed) of round ``t``'s search. Round 1 searches with M0 for every variant, exactly as
    notebook 02 does (same prompts, seed and artifacts when the sizes agree), so it is run once and shared."""
    if t == 1:
        return "", recipe.run.seed
    return (f"rounds/r{t}/" if variant == "rlrf" else f"rounds/{variant}/r{t}/"), recipe.run.seed + t


def run_rounds(recipe, store, world, judge, rubrics, m0_path: str) -> list[dict]:
    """Run (or resume) ``rounds.n_rounds`` rounds from the policy at ``m0_path`` for every variant in
    ``rounds.variants`` (RLRF first). Returns RLRF's rows (M0 first): dev metrics with 95% intervals, pair counts and
    compute (wall times, generated tokens, judge calls, parse failures); ``results.json`` gets them under ``rounds``
    and every variant's rows under ``round_variants``."""
    rcfg = recipe.rounds
    place = placement(recipe.run)
    decisions = load_decisions(store.path(recipe.pairs.decisions))
    m0, tok = load_policy(m0_path, place=place)
    m0_row = {"round": 0, "policy": "M0", **evaluate_policy(m0, tok, model_fingerprint(m0_path), recipe, world, store,
                                                            "M0")}
    del m0
    release_memory()
    log.info(f"M0: dev math {m0_row['math_accuracy']['rate']:.3f}")
    variants = ["rlrf"] + [v for v in rcfg.variants if v != "rlrf"]
    all_rows: dict[str, list[dict]] = {}
    bar = tqdm(total=len(variants) * rcfg.n_rounds, desc="RLRF rounds", unit="round")
    for variant in variants:
        label = "" if variant == "rlrf" else f"[{VARIANT_LABELS[variant]}] "
        paths = {0: str(m0_path)}
        rows = [{**m0_row, "variant": variant}]
        for t in range(1, rcfg.n_rounds + 1):
            bar.set_postfix_str(f"{VARIANT_LABELS[variant]} M{t}")
            ckpt = checkpoint_path(store, t, variant)
            inputs = round_inputs(recipe, t, variant, paths[0])
            if is_complete(ckpt):
                check_round_inputs(ckpt, inputs, paths[0])
                info = training_log(ckpt)
                log.info(f"{label}round {t}: M{t} already trained, loading {ckpt}")
            else:
                info = _train_round(recipe, store, world, judge, rubrics, t, paths, decisions, variant, inputs)
            paths[t] = str(ckpt)
            model, tok = load_policy(ckpt, place=place)
            pid = f"M{t}" if variant == "rlrf" else f"{variant}/M{t}"
            ev = evaluate_policy(model, tok, model_fingerprint(ckpt), recipe, world, store, pid)
            del model
            release_memory()  # one policy on the GPU at a time: the next round's search and training need it
            rows.append({"round": t, "policy": f"M{t}", "variant": variant, **ev,
                         **{k: info[k] for k in ("start_from", "reference", "carry_over", "method", "pair_policy",
                                                 "pairs", "pairs_this_round", "search_seconds", "train_seconds",
                                                 "round_seconds", "refinement_beats_parent", "steps", "prompts",
                                                 "generated_tokens", "completions", "judged", "parse_failures",
                                                 "kl_coef")
                            if k in info}})
            log.info(f"{label}round {t}: dev math {ev['math_accuracy']['rate']:.3f} ({info.get('pairs', 0)} pairs, "
                f"{info.get('round_seconds', 0):.0f} s)")
            all_rows[variant] = rows
            store.update_results({"rounds": all_rows["rlrf"], "round_variants": all_rows})
            bar.update(1)
    bar.close()
    return all_rows["rlrf"]


#: The judge's settings that decide its judgements, by ``feedback.judge`` (the others are notebook 01's sample sizes or
#: HTTP transport; the verifier reads none of the model fields).
JUDGE_FIELDS = {"verifier": ("judge", "weights"),
                "learned": ("judge", "learned_judge", "learned_max_new_tokens", "max_repairs", "consensus_k",
                            "weights")}
LLM_JUDGE_FIELDS = ("judge", "judge_model", "max_repairs", "max_new_tokens", "consensus_k", "weights")


def _plain(d: dict) -> dict:
    """A dict as JSON keeps it (tuples as lists), so a stored part compares equal to a recomputed one."""
    return json.loads(json.dumps(d, default=str))


def round_inputs(recipe, t: int, variant: str, m0_path: str) -> dict[str, dict]:
    """What determines round ``t``'s checkpoint of ``variant``, part by part: M0's weights, the world, the judge
    (:data:`JUDGE_FIELDS`), the search (``reflection`` but its batch size and processes; round 1's search is the
    recipe's, shared by every variant), the pair policy, the training step (``dpo`` as it enters checkpoint keys, or
    ``online_rl``), the round's prompts and the search seed. Stored in the checkpoint's training log, so a rerun that
    finds a finished round trained under other inputs (another world or recipe under the same run name) refuses it,
    naming the fields (:func:`check_round_inputs`), instead of serving it as this recipe's. Review decisions are not in
    it: a rerun keeps a finished round whatever was decided since."""
    policy, dcfg, refl = (None, None, None) if variant in ONLINE_VARIANTS else round_setup(recipe, t, variant)
    rcfg, fb = recipe.rounds, recipe.feedback
    parts = {
        "m0": {"fingerprint": model_fingerprint(m0_path)},
        "world": dataclasses.asdict(recipe.world),
        "feedback": {k: getattr(fb, k) for k in JUDGE_FIELDS.get(fb.judge, LLM_JUDGE_FIELDS)},
        "reflection": {k: v for k, v in dataclasses.asdict(refl or recipe.reflection).items()
                       if k not in ("processes", "batch_size")},
        "pairs": {"policy": policy, **recipe.pairs.build_kwargs()},
        "training": (dataclasses.asdict(recipe.online_rl) if variant in ONLINE_VARIANTS
                     else stage_config_key(dcfg)),
        "rounds": {"t": t, "variant": variant, "seed": recipe.run.seed, "prompts": rcfg.prompts_per_round,
                   "bios": rcfg.bios_per_round, "start_from": rcfg.start_from, "carry_over": rcfg.carry_over},
    }
    return {k: _plain(v) for k, v in parts.items()}


def check_round_inputs(ckpt: Path, inputs: dict[str, dict], m0_path: str | None = None) -> None:
    """Raise ``ValueError`` when the finished checkpoint ``ckpt`` was trained under other :func:`round_inputs`,
    naming the fields that differ. A field the stored log lacks (one added to the kit since) is not compared, so an
    upgrade keeps finished rounds. A checkpoint from before inputs were kept is refused only when what it does record
    disagrees (round 1 started from another M0 than ``m0_path``, or trained with another method), else used with a
    warning."""
    logged = training_log(ckpt) or {}
    stored = logged.get("inputs")
    if stored is None:
        start, method = logged.get("start_from"), str(logged.get("method", ""))
        dcfg_method = inputs["training"].get("method")
        if (logged.get("round") == 1 and m0_path is not None and start is not None
                and Path(start).resolve() != Path(m0_path).resolve()):
            raise ValueError(f"{ckpt} was trained from {start}, not from this recipe's M0 {m0_path}: it is not this "
                             "run's round. Use another run name (run.name) or delete that directory")
        if dcfg_method and method and not method.startswith("none") and method != dcfg_method:
            raise ValueError(f"{ckpt} was trained with {method}, not with this recipe's dpo.method {dcfg_method}: it "
                             "is not this run's round. Use another run name (run.name) or delete that directory")
        log.warning(f"{ckpt} records no inputs (trained before they were kept): used as it is")
        return
    differ = [f"{part}.{k}" for part, new in inputs.items() if isinstance(stored.get(part), dict)
              for k, v in new.items() if k in stored[part] and stored[part][k] != v]
    if differ:
        raise ValueError(f"{ckpt} was trained under other inputs ({', '.join(differ)} differ from this recipe's): "
                         "it is not this run's round. Use another run name (run.name) or delete that directory")


def _train_round(recipe, store, world, judge, rubrics, t: int, paths: dict, decisions: dict,
                 variant: str = "rlrf", inputs: dict | None = None) -> dict:
    if variant in ONLINE_VARIANTS:
        return _train_online_round(recipe, store, world, judge, rubrics, t, paths, variant, inputs)
    rcfg = recipe.rounds
    policy, dcfg, refl = round_setup(recipe, t, variant)
    label = "" if variant == "rlrf" else f"[{VARIANT_LABELS[variant]}] "
    t0 = time.monotonic()
    start = paths[t - 1] if rcfg.start_from == "previous" else paths[0]
    ref = paths[t - 1] if dcfg.reference == "previous" else paths[0]
    log.info(f"{label}round {t}: search with {Path(paths[t - 1]).name} on {rcfg.prompts_per_round} fresh prompts")
    place = placement(recipe.run)
    # the current policy explores: transformers on the run's device, or the process's one vLLM engine
    searcher, tok = load_searcher(refl.backend, paths[t - 1], place)
    examples = round_prompts(recipe, world, t)
    prefix, seed = search_args(recipe, t, variant)
    res = reflection_search(store, searcher, tok, model_fingerprint(paths[t - 1]), examples, judge, rubrics,
                            refl, seed=seed, weights=recipe.feedback.weights, policy_id=f"M{t - 1}", prefix=prefix)
    # compute, comparable with the online variants': every candidate was generated once and judged once (the scalar
    # ablation's overall score is one more judge call per candidate)
    generated_tokens = sum(len(tok(c.text, add_special_tokens=False)["input_ids"]) for c in res["pool"])
    judged = len(res["pool"]) * (2 if refl.overall_score else 1)
    parse_failures = sum(c.reward is None for c in res["pool"])
    del searcher
    release_vllm()  # the vLLM engine (if any) frees its weights and KV cache while TRL trains on the same GPU
    release_memory()
    search_seconds = time.monotonic() - t0
    pool = variant_pool(res["pool"], variant)
    pairs = build_pairs(pool, policy, round_=t, decisions=decisions, **recipe.pairs.build_kwargs())
    pair_dir = f"rounds/r{t}/pairs" if variant == "rlrf" else f"rounds/{variant}/r{t}/pairs"
    save_pairs(store, pairs, pair_dir)
    this_round = len(pairs)
    if rcfg.carry_over:
        for s in range(1, t):
            prev = f"rounds/r{s}/pairs.jsonl" if variant == "rlrf" else f"rounds/{variant}/r{s}/pairs.jsonl"
            pairs = list(read_jsonl(store.path(prev))) + pairs
    model, tok = load_policy(start, place=place, train=True)
    ref_model = None if dcfg.lora or dcfg.precompute_ref or dcfg.method != "dpo" else \
        load_policy(ref, place=place, train=True)[0]
    t1 = time.monotonic()
    if not has_training_data(pool, pairs, dcfg):
        what = "no pairs" if dcfg.method == "dpo" else "no candidate good enough for RS-SFT"
        log.info(f"{label}round {t}: {what}, so M{t} = its starting policy (nothing to learn from)")
        out = {"model": model, "history": [], "seconds": 0.0, "steps": 0, "method": f"none ({what})"}
    else:
        tmp = f"r{t}" if variant == "rlrf" else f"{variant}-r{t}"
        out = train_stage(model, tok, pool, pairs, dcfg, store.path("trainer_tmp", tmp), ref_model=ref_model,
                          place=place)
    info = {"round": t, "variant": variant, "pair_policy": policy, "start_from": start,
            "reference": ref if dcfg.method == "dpo" else None, "search_prefix": prefix,
            "carry_over": rcfg.carry_over, "method": out["method"], "pairs": len(pairs),
            "pairs_this_round": this_round, "pair_yield": pair_yield(pairs, len(examples)),
            "search_seconds": round(search_seconds, 1), "train_seconds": round(time.monotonic() - t1, 1),
            "round_seconds": round(time.monotonic() - t0, 1), "steps": out["steps"], "placement": place.describe(),
            "lora_merged": bool(dcfg.lora) and not out["method"].startswith("none"),
            "refinement_beats_parent": search_stats(res["pool"])["refinement_beats_parent"],
            "prompts": len(examples), "generated_tokens": generated_tokens, "completions": len(res["pool"]),
            "judged": judged,
            "parse_failures": parse_failures,
            "history": out["history"], "probe": out.get("eval"),
            "diagnostics": stage_diagnostics(out), "inputs": inputs}
    save_checkpoint(out["model"], tok, checkpoint_path(store, t, variant), info)
    del model, ref_model, out
    release_memory()
    return info


def _train_online_round(recipe, store, world, judge, rubrics, t: int, paths: dict, variant: str,
                        inputs: dict | None = None) -> dict:
    """Round ``t`` of an online variant: GRPO or RLOO (:func:`rlrf_nb.online_rl.run_online`) on the round's fresh
    prompts (:func:`round_prompts`, the ones RLRF searches), from ``rounds.start_from``'s policy, rewarded by the
    judge; no search and no pairs. Its compute is what TRL generated and the judge scored during training."""
    label = f"[{VARIANT_LABELS[variant]}] "
    t0 = time.monotonic()
    start = paths[t - 1] if recipe.rounds.start_from == "previous" else paths[0]
    examples = round_prompts(recipe, world, t)
    log.info(f"{label}round {t}: {variant} from {Path(start).name} on {len(examples)} fresh prompts")
    out = run_online(start, examples, judge, rubrics, recipe, variant, store.path("trainer_tmp", f"{variant}-r{t}"),
                     seed=recipe.run.seed + t, place=placement(recipe.run))
    info = {"round": t, "variant": variant, **out["info"], "carry_over": False, "pairs": 0, "pairs_this_round": 0,
            "search_seconds": 0.0, "round_seconds": round(time.monotonic() - t0, 1), "inputs": inputs}
    save_checkpoint(out["model"], out["tokenizer"], checkpoint_path(store, t, variant), info)
    del out
    release_memory()
    return info


def before_after(policies: dict, examples: list, max_new_tokens: int = 160) -> list[dict]:
    """Greedy responses of each policy (``{name: (model, tokenizer)}``) to the same prompts, with final-answer
    correctness on math: the notebook's before/after view."""
    rows = [{"id": ex.id, "prompt": ex.prompt, "gold": ex.answer} for ex in examples]
    for name, (model, tok) in policies.items():
        outs = generate(model, tok, [chat(ex.prompt) for ex in examples], max_new_tokens=max_new_tokens,
                        batch_size=len(examples), progress=False)
        for row, ex, o in zip(rows, examples, outs):
            row[name] = o[0]
            row[f"{name} right"] = math.is_correct(o[0], ex.answer) if ex.task == "math" else None
    return rows
