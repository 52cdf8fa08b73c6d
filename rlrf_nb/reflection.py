"""Fine-grained self-reflection search (paper §3.2): sample, judge, refine the most promising, judge again.

Per prompt the policy samples n responses, judged per aspect; the top-k distinct by reward are refined m times each by
the policy itself from the question, the draft and its critiques (:func:`rlrf_nb.prompts.refinement_prompt`),
refinements are judged too, and further rounds refine the previous round's best until a stop rule fires (the round cap,
a candidate with no aspect below the threshold, or a plateau of the best reward). Every sample, judgement and refinement
is a run-store record (``samples``, ``refinements``, ``feedback``) keyed by its inputs, so a rerun recomputes nothing
and a killed search resumes. With ``refine_budget`` the refinement generations are a capped budget spent on prompts in
``priority`` order (``variance``: the most varied sample rewards first; ``low_best``: the lowest best sample first);
:func:`budget_curve` replays a finished search in any prompt order to show the pair yield each budget buys.
"""

from __future__ import annotations

import logging
import random
import statistics
import time

from rlrf_nb.feedback import judge_responses
from rlrf_nb.generation import generate_to_store, sampling_processes
from rlrf_nb.pairs import Candidate, build_pairs, group_by_prompt
from rlrf_nb.prompts import AspectNote, refinement_prompt
from rlrf_nb.rubrics import OVERALL
from rlrf_nb.stats import rate
from rlrf_nb.tasks import math

log = logging.getLogger(__name__)


def notes_from_feedback(fb: dict, rubrics) -> list[AspectNote]:
    """The stored feedback of a candidate as the notes a refinement prompt shows (rubric titles, scores)."""
    return [AspectNote(rubrics[a["aspect"]].title, a["score"], a["max_score"],
                       a["critique"] if a["parse_ok"] else "(the judge's feedback could not be parsed)")
            for a in fb["aspects"]]


def prompt_priority(rewards: list[float | None], how: str) -> float:
    """A prompt's claim on the refinement budget from its samples' rewards (higher goes first).
    variance: the population variance of the rewards; low_best: minus the best reward; none: 0."""
    vals = [r for r in rewards if r is not None]
    if how == "none":
        return 0.0
    if how == "variance":
        return statistics.pvariance(vals) if len(vals) > 1 else 0.0
    if how == "low_best":
        return -max(vals) if vals else 1.0  # no parseable sample: nothing to rank, refine it first
    raise ValueError(f"unknown priority {how!r}; choose none, variance or low_best")


def priority_order(rewards_by_prompt: dict[str, list], how: str) -> list[str]:
    """Prompt ids in the order they get the refinement budget: by :func:`prompt_priority`, ties (and
    ``none``) in input order."""
    return sorted(rewards_by_prompt, key=lambda pid: -prompt_priority(rewards_by_prompt[pid], how))  # stable


def reflection_search(store, model, tokenizer, fingerprint: str, examples: list, judge, rubrics, cfg, *,
                      seed: int = 0, weights: dict | None = None, policy_id: str = "M0", prefix: str = "") -> dict:
    """Run the search on ``examples`` with a ``ReflectionConfig``. Returns the candidate pool (for
    :func:`rlrf_nb.pairs.build_pairs`), every judged record, and per-round statistics with timings.
    Artifacts are ``<prefix>samples``, ``<prefix>refinements``, ``<prefix>feedback`` and
    ``<prefix>feedback_overall`` (a prefix such as ``rounds/r1/`` keeps RLRF rounds apart)."""
    overall = {}

    def judge_rows(recs: list[dict], rnd: int, example_of: dict[str, str]) -> list[dict]:
        rows = [{"example": by_id[example_of[r["source_id"]]], "response_id": r["response_id"], "response": r["text"]}
                for r in recs]
        judged = judge_responses(store, f"{prefix}feedback", judge, rows, rubrics, weights, round_=rnd)
        if cfg.overall_score:  # the scalar ablation's single overall score per response id, in [0, 1]
            scalar = judge_responses(store, f"{prefix}feedback_overall", judge, rows, rubrics, round_=rnd,
                                     aspects=[OVERALL])
            overall.update({r["response_id"]: r["reward"] for r in scalar})
        return judged

    def generate(name: str, items: list[dict], rnd: int, example_of: dict[str, str], **kw) -> list[dict]:
        """Round ``rnd``'s generations; with sampling processes, the parent judges each batch while they generate the
        next ones (the records are stored by key, so judging them all afterwards only reads them back)."""
        return generate_to_store(store, prefix + name, model, tokenizer, fingerprint, items, seed=seed + rnd,
                                 temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                 batch_size=cfg.batch_size, policy_id=policy_id, workers=workers, **kw,
                                 on_batch=None if workers is None else lambda recs: judge_rows(recs, rnd, example_of))

    with sampling_processes(model, tokenizer, cfg.processes) as workers:
        t0 = time.monotonic()
        by_id, own = {ex.id: ex for ex in examples}, {ex.id: ex.id for ex in examples}
        samples = generate("samples", [{"id": ex.id, "prompt": ex.prompt} for ex in examples], 0, own, n=cfg.n_samples)
        judged = judge_rows(samples, 0, own)
        parents = {r["response_id"]: None for r in judged}  # response id -> parent id
        rounds = [{"round": 0, "candidates": len(judged), "seconds": round(time.monotonic() - t0, 1)}]
        frontier = {ex.id: [r for r in judged if r["example_id"] == ex.id] for ex in examples}
        best = {pid: max((r["reward"] for r in recs if r["reward"] is not None), default=None)
                for pid, recs in frontier.items()}
        order = priority_order({pid: [r["reward"] for r in recs] for pid, recs in frontier.items()}, cfg.priority)
        rank = {pid: i for i, pid in enumerate(order)}
        budget = {"cap": cfg.refine_budget or None, "spent": 0, "prompts_refined": [], "prompts_over_budget": [],
                  "prompts_stopped_by_threshold": 0, "priority": cfg.priority}
        for rnd in range(1, cfg.max_rounds + 1):
            t1 = time.monotonic()
            todo = []
            for pid in sorted(frontier, key=rank.__getitem__):
                recs = frontier[pid]
                # stop rule: a candidate already has every aspect parsed and none below the threshold
                if any(all(a["parse_ok"] and a["score"] >= cfg.threshold for a in r["feedback"]["aspects"])
                       for r in recs):
                    budget["prompts_stopped_by_threshold"] += rnd == 1
                    continue
                distinct = {r["response"]: r for r in reversed(recs) if r["reward"] is not None}  # first of duplicates
                ranked = sorted(distinct.values(), key=lambda r: -r["reward"])[: cfg.top_k]
                cost = len(ranked) * cfg.m_refinements
                if budget["cap"] is not None and budget["spent"] + cost > budget["cap"]:
                    budget["prompts_over_budget"].append(pid)
                    continue  # this prompt's refinements would overrun the budget; a cheaper one may still fit
                budget["spent"] += cost
                if ranked and pid not in budget["prompts_refined"]:
                    budget["prompts_refined"].append(pid)
                for r in ranked:
                    notes = notes_from_feedback(r["feedback"], rubrics)
                    prompt = refinement_prompt(by_id[pid].prompt, r["response"], notes)
                    todo.append({"id": r["response_id"], "prompt": prompt, "example_id": pid})
            if not todo:
                break
            ex_of = {t["id"]: t["example_id"] for t in todo}
            refs = generate("refinements", todo, rnd, ex_of, n=cfg.m_refinements, tag=f"r{rnd}.")
            ref_judged = judge_rows(refs, rnd, ex_of)
            parents.update({r["response_id"]: r["source_id"] for r in refs})
            judged += ref_judged
            frontier = {}
            for r in ref_judged:
                frontier.setdefault(r["example_id"], []).append(r)
            for pid, recs in list(frontier.items()):  # plateau: stop prompts whose best reward did not improve
                new_best = max((r["reward"] for r in recs if r["reward"] is not None), default=None)
                old = best[pid]
                if new_best is not None and (old is None or new_best > old + cfg.plateau):
                    best[pid] = new_best
                else:
                    del frontier[pid]
            rounds.append({"round": rnd, "candidates": len(ref_judged), "refined_parents": len(todo),
                           "refinements": len(refs), "seconds": round(time.monotonic() - t1, 1)})
        pool = [Candidate(r["response_id"], r["example_id"], r["prompt"], r["response"],
                          "sample" if parents[r["response_id"]] is None else "refinement", r["reward"],
                          {a["aspect"]: a["score"] for a in r["feedback"]["aspects"]},
                          parent_id=parents[r["response_id"]],
                          correct=(math.is_correct(r["response"], by_id[r["example_id"]].answer)
                                   if by_id[r["example_id"]].task == "math" else None),
                          overall=overall.get(r["response_id"]),
                          first_error=first_wrong_line(r["response"], by_id[r["example_id"]]))
                for r in judged]
        log.info("reflection search: %d candidates for %d prompts in %.0f s", len(pool), len(examples),
                 time.monotonic() - t0)
        budget["over_budget"] = len(budget["prompts_over_budget"])
        return {"pool": pool, "records": judged, "rounds": rounds, "budget": budget, "order": order,
                "seconds": round(time.monotonic() - t0, 1)}


def first_wrong_line(text: str, ex) -> int | None:
    """A candidate's ``first_error`` (:attr:`rlrf_nb.tasks.math.MathCheck.first_wrong_line`) on a problem whose
    ground-truth step chain is known (the tiny world's math); None elsewhere (GSM8K's final answer only, bios)."""
    if ex.task != "math" or "steps" not in (ex.meta or {}):
        return None
    return math.check_example(text, ex).first_wrong_line


def search_stats(pool: list[Candidate]) -> dict:
    """Refinement success (refinements that beat their parent's reward), how often the best candidate of a
    prompt is a refinement, and, on verifiable tasks, how often a refinement of a wrong draft is right. Each
    rate is a ``stats.rate`` dict with its 95% interval; parse failures (reward None) are counted, not scored."""
    by_id = {c.candidate_id: c for c in pool}
    refs = [c for c in pool if c.kind == "refinement" and c.reward is not None
            and by_id[c.parent_id].reward is not None]
    beat = sum(c.reward > by_id[c.parent_id].reward for c in refs)
    worse = sum(c.reward < by_id[c.parent_id].reward for c in refs)
    gain = [c.reward - by_id[c.parent_id].reward for c in refs]
    prompts = group_by_prompt(c for c in pool if c.reward is not None)
    refined_prompts = {c.prompt_id for c in pool if c.kind == "refinement"}
    best_kind = {pid: max(cs, key=lambda c: (c.correct is True, c.reward)).kind for pid, cs in prompts.items()}
    best_is_ref = sum(k == "refinement" for k in best_kind.values())
    best_is_ref_refined = sum(best_kind[pid] == "refinement" for pid in refined_prompts & set(prompts))
    from_wrong = [c for c in pool if c.kind == "refinement" and by_id[c.parent_id].correct is False]
    return {"refinements": len(refs), "refinement_beats_parent": rate(beat, len(refs)),
            "refinement_worse_than_parent": rate(worse, len(refs)),
            "mean_reward_gain": sum(gain) / len(gain) if gain else float("nan"),
            "prompts": len(prompts), "best_is_refinement": rate(best_is_ref, len(prompts)),
            "best_is_refinement_among_refined": rate(best_is_ref_refined, len(refined_prompts & set(prompts))),
            "wrong_draft_fixed": rate(sum(c.correct is True for c in from_wrong), len(from_wrong)),
            "parse_failures": sum(c.reward is None for c in pool),
            "candidates": len(pool), "samples": sum(c.kind == "sample" for c in pool)}


def sample_rewards(pool: list[Candidate]) -> dict[str, list]:
    """The rewards of each prompt's samples (what the priorities rank prompts by), in pool order."""
    samples = group_by_prompt(c for c in pool if c.kind == "sample")
    return {pid: [c.reward for c in cs] for pid, cs in samples.items()}


def budget_curve(pool: list[Candidate], order: list[str], policy: str = "best_vs_worst",
                 min_margin: float = 0.0) -> list[dict]:
    """Replay a finished search with its refinements spent on prompts in ``order``: after each prompt, the refinement
    budget used and the pair yield of the pool at that point (every prompt's samples, the reached prompts' refinements);
    prompts the search never refined cost nothing. A counterfactual over the refinements actually generated, so every
    order is compared on the same data. Rows: ``budget``, ``prompts_refined``, ``pairs``, ``right_over_wrong``.
    """
    by_prompt = group_by_prompt(pool)
    if set(order) != set(by_prompt):
        raise ValueError(f"order must list each of the pool's {len(by_prompt)} prompts once, got {len(order)}")

    def count(cands):
        pairs = build_pairs(cands, policy, min_margin=min_margin)
        return len(pairs), sum(p["chosen_correct"] is True and p["rejected_correct"] is False for p in pairs)

    without = {pid: count([c for c in cs if c.kind == "sample"]) for pid, cs in by_prompt.items()}
    full = {pid: count(cs) for pid, cs in by_prompt.items()}
    pairs, row = sum(v[0] for v in without.values()), sum(v[1] for v in without.values())
    spent = refined = 0
    curve = [{"budget": 0, "prompts_refined": 0, "pairs": pairs, "right_over_wrong": row}]
    for pid in order:
        cost = sum(c.kind == "refinement" for c in by_prompt[pid])
        if not cost:
            continue
        spent += cost
        refined += 1
        pairs += full[pid][0] - without[pid][0]
        row += full[pid][1] - without[pid][1]
        curve.append({"budget": spent, "prompts_refined": refined, "pairs": pairs, "right_over_wrong": row})
    return curve


def budget_comparison(pool: list[Candidate], sample_rewards: dict[str, list], policy: str = "best_vs_worst",
                      metric: str = "right_over_wrong", fraction: float = 0.9, n_random: int = 20,
                      seed: int = 0) -> dict:
    """The refinement budget each prompt order needs to reach ``fraction`` of the full search's gain in
    ``metric`` (over the samples-only pool): the priorities against random orders (mean of ``n_random``).
    Returns the curves too, for plotting, and the saving of each priority relative to random order."""
    curves = {how: budget_curve(pool, priority_order(sample_rewards, how), policy) for how in ("variance", "low_best")}
    rng = random.Random(seed)
    ids = list(sample_rewards)
    randoms = []
    for _ in range(n_random):
        rng.shuffle(ids)
        randoms.append(budget_curve(pool, list(ids), policy))
    curves["random"] = randoms[0]
    start, end = curves["random"][0][metric], curves["random"][-1][metric]
    target = start + fraction * (end - start)

    def needed(curve):
        return next((p["budget"] for p in curve if p[metric] >= target), curve[-1]["budget"])

    rand_need = sum(needed(c) for c in randoms) / len(randoms)
    out = {"metric": metric, "policy": policy, "fraction": fraction, "target": target, "samples_only": start,
           "full": end, "full_budget": curves["random"][-1]["budget"], "random_budget": rand_need,
           "curves": curves}
    for how in ("variance", "low_best"):
        out[f"{how}_budget"] = needed(curves[how])
        out[f"{how}_saving"] = 1 - needed(curves[how]) / rand_need if rand_need else float("nan")
    return out
