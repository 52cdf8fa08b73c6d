"""Every checkpoint of a run (:func:`discover_policies`) on the three benchmarks of notebook 05, GSM8K, FactScore and
Just-Eval, through the run store: per-item values on the *same* items for every model (:func:`evaluate_suite`), ready
for :func:`rlrf_nb.analysis.results_table`'s paired tests against M0."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from rlrf_nb.config import VARIANT_LABELS
from rlrf_nb.evals.factscore import evaluate_factscore
from rlrf_nb.evals.gsm8k import evaluate_gsm8k
from rlrf_nb.evals.just_eval import ASPECTS, JustEvalJudge, VerifierJustEvalJudge, evaluate_just_eval
from rlrf_nb.feedback import Feedback
from rlrf_nb.generation import sampling_processes
from rlrf_nb.llm_judge import judge_transport
from rlrf_nb.models import load_policy, model_fingerprint, training_log
from rlrf_nb.store import is_complete

log = logging.getLogger(__name__)

# notebook 03's checkpoint name prefixes -> the names the paper's table uses; a checkpoint takes its longest matching
# prefix (with dpo.method rs_sft the ablations are rs_sft-no_reflection-M1-... and rs_sft-scalar-M1-..., not the RS
# baseline, rs_sft-<pair policy>-M1-...)
VARIANTS = {"dpo-M1-": "RLRF 1 round", "dpo-no_reflection-M1-": "no reflection", "dpo-scalar-M1-": "scalar reward",
            "rs_sft-no_reflection-M1-": "no reflection", "rs_sft-scalar-M1-": "scalar reward",
            "rs_sft-": "RS baseline", "grpo-M1-": "GRPO 1 round", "rloo-M1-": "RLOO 1 round",
            "grpo_reflect-M1-": "GRPO + reflection 1 round"}


def variant_name(checkpoint: str) -> str | None:
    """The table name of notebook 03's checkpoint directory ``checkpoint`` (its longest :data:`VARIANTS` prefix), or
    None for another checkpoint (a control, an M0)."""
    prefix = max((p for p in VARIANTS if checkpoint.startswith(p)), key=len, default=None)
    return None if prefix is None else VARIANTS[prefix]


def _round_dirs(directory: Path) -> list[Path]:
    """The complete ``M<t>`` checkpoints directly under ``directory``, by round."""
    if not directory.is_dir():
        return []
    found = [d for d in directory.iterdir() if d.name[:1] == "M" and d.name[1:].isdigit() and is_complete(d)]
    return sorted(found, key=lambda d: int(d.name[1:]))


def discover_policies(store, m0_path: str) -> dict[str, str]:
    """``{name: checkpoint path}`` of the run's finished policies: M0, rounds M1, M2, ..., the round-loop ablations'
    last rounds (``no reflection M2``, ``scalar reward M2``, ``RS-SFT M2``), then notebook 03's one-round variants (the
    most recent checkpoint of each, if several configs were trained)."""
    out = {"M0": str(m0_path)}
    rounds = store.path("checkpoints", "rounds")
    for d in _round_dirs(rounds):
        out[d.name] = str(d)
    for variant, label in VARIANT_LABELS.items():
        if variant == "rlrf":
            continue
        for d in _round_dirs(rounds / variant)[-1:]:
            out[f"{label} {d.name}"] = str(d)
    ckpts = store.path("checkpoints")
    done = [d for d in ckpts.iterdir() if variant_name(d.name) and is_complete(d)] if ckpts.is_dir() else []
    for name in dict.fromkeys(VARIANTS.values()):
        found = sorted((d for d in done if variant_name(d.name) == name),
                       key=lambda d: (d / "COMPLETE.json").stat().st_mtime)
        if len(found) > 1:
            log.info("%d checkpoints for %s; using the newest, %s", len(found), name, found[-1].name)
        if found:
            out[name] = str(found[-1])
    return out


def policy_info(path: str) -> dict:
    """What a checkpoint says about how it was made (method, pairs, start and reference), if it says anything."""
    log_ = training_log(path) or {}
    return {k: log_.get(k) for k in ("method", "pairs", "start_from", "reference", "train_seconds") if k in log_}


def just_eval_judge(recipe, world, rubrics):
    """Notebook 05's Just-Eval judge: with an LLM feedback judge (``feedback.judge: llm``), Just-Eval's prompt and
    parser on that judge's transport (the server at ``feedback.judge_url``, or ``judge_model`` locally), with its reply
    cap and re-asks; with the verifier, the tiny world's stand-in (on a real task's problem, final answer only)."""
    if recipe.feedback.judge != "llm":
        return VerifierJustEvalJudge(world, rubrics)
    return JustEvalJudge(judge_transport(recipe.feedback, run=recipe.run), max_repairs=recipe.feedback.max_repairs)


def evaluate_suite(policies: dict[str, str], world, store, *, math_examples: list, bio_examples: list,
                   just_eval_judge, gsm8k_kwargs: dict | None = None, max_new_tokens: int = 160,
                   batch_size: int = 100, place=None, processes: int = 1) -> dict:
    """GSM8K, FactScore and Just-Eval for each policy, loaded on ``place`` (:func:`rlrf_nb.models.placement`). Returns
    ``{"per_item": {model: {metric: [...]}}, "summary": {model: {...}}, "records": {model: {...}}}``; per-item lists are
    aligned across models (None = not scored: an abstention or a parse failure), and ``summary`` adds ``placement`` and
    GSM8K ``tokens_per_s`` (tokens generated now over the wall time; None when every record came from the store). A
    progress bar counts the policies, and each one's GSM8K and FactScore numbers are logged as it finishes. With
    ``processes`` > 1 on a CPU, each policy's greedy answers are generated by that many one-thread processes (the same
    answers)."""
    per_item, summary, records = {}, {}, {}
    for name, path in tqdm(policies.items(), desc="evaluating policies", unit="policy"):
        model, tok = load_policy(path, place=place)
        fp = model_fingerprint(path)
        pid = name.replace(" ", "_")
        before = len(store.artifact(f"eval/{pid}/gsm8k"))
        t0 = time.monotonic()
        with sampling_processes(model, tok, processes) as workers:
            g = evaluate_gsm8k(model, tok, fp, math_examples, store, pid, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, workers=workers, **(gsm8k_kwargs or {}))
            seconds = time.monotonic() - t0
            f = evaluate_factscore(model, tok, fp, bio_examples, world, store, pid, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, workers=workers) if bio_examples else None
        new = store.artifact(f"eval/{pid}/gsm8k").records()[before:]  # generated now, not served from the store
        tokens = sum(len(tok(r["output"], add_special_tokens=False)["input_ids"]) for r in new)
        speed = {"device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype),
                 "tokens_per_s": round(tokens / seconds, 1) if new and seconds > 0 else None}
        by_id = {ex.id: ex for ex in math_examples + bio_examples}
        responses = [{"id": r["id"], "instruction": by_id[r["id"]].prompt, "response": r["response"], "kind": "general",
                      "example": by_id[r["id"]]} for r in g["records"] + (f["records"] if f else [])]
        je_recs, je = evaluate_just_eval(responses, just_eval_judge, store, f"eval/{pid}/just_eval")
        items = {f"gsm8k_{m}": [float(r[f"{m}_correct"]) for r in g["records"]]
                 for m in ("strict", "flexible", "lm_eval_strict", "lm_eval_flexible")}
        if "perfect" in g:  # the tiny world: every step right
            items["math_perfect"] = [float(r["perfect"]) for r in g["records"]]
        if f is not None:
            items["factscore"] = [row["score"] for row in f["rows"]]
        for a in ASPECTS:
            if je["aspects"][a]["n"]:
                items[f"just_eval_{a}"] = [Feedback.from_dict(r["judgement"]).score(a) for r in je_recs]
        per_item[name] = items
        summary[name] = {"gsm8k_strict": g["strict"], "gsm8k_flexible": g["flexible"],
                         **({"math_perfect": g["perfect"]} if "perfect" in g else {}),
                         "gsm8k_lm_eval_strict": g["lm_eval_strict"], "gsm8k_lm_eval_flexible": g["lm_eval_flexible"],
                         "gsm8k_truncated": g["truncated"],
                         **({"factscore": {k: f[k] for k in ("score", "ci_low", "ci_high", "init_score",
                                                             "respond_ratio", "facts_per_response", "n",
                                                             "n_scored")}} if f else {}),
                         "just_eval": {a: je["aspects"][a] for a in ASPECTS}, "just_eval_judge": je["judge_id"],
                         "placement": speed, **policy_info(path)}
        records[name] = {"gsm8k": g["records"], "factscore": f["rows"] if f else [], "just_eval": je_recs}
        log.info("%s: GSM8K strict %.3f, flexible %.3f (lm-eval strict-match %.3f, flexible-extract %.3f)%s", name,
                 g["strict"]["rate"], g["flexible"]["rate"], g["lm_eval_strict"]["rate"], g["lm_eval_flexible"]["rate"],
                 f", FactScore {f['score']:.3f}" if f else "")
    return {"per_item": per_item, "summary": summary, "records": records}
