"""Fine-grained self-reflection search (paper §3.2): sample, judge, refine the most promising, judge again.

For each prompt the policy samples n responses, which the feedback model judges per aspect. The top-k
by reward are refined m times each by the policy itself, from a prompt holding the question, the draft
and its per-aspect critiques (:func:`rlrf_nb.prompts.refinement_prompt`). Refinements are judged too,
and further rounds refine the best of the previous round until a stop rule fires: the round cap, a
candidate with no aspect below the threshold, or a plateau of the best reward.

Every sample, judgement and refinement is a record in the run store (``samples``, ``refinements``,
``feedback``), keyed by its inputs: a rerun recomputes nothing, and a killed search resumes where it stopped.
"""

from __future__ import annotations

import logging
import time

from rlrf_nb.feedback import judge_responses
from rlrf_nb.generation import generate_to_store
from rlrf_nb.pairs import Candidate
from rlrf_nb.prompts import AspectNote, refinement_prompt
from rlrf_nb.tasks import math

log = logging.getLogger(__name__)


def notes_from_feedback(fb: dict, rubrics) -> list[AspectNote]:
    """The stored feedback of a candidate as the notes a refinement prompt shows (rubric titles, scores)."""
    return [AspectNote(rubrics[a["aspect"]].title, a["score"], a["max_score"],
                       a["critique"] if a["parse_ok"] else "(the judge's feedback could not be parsed)")
            for a in fb["aspects"]]


def _done(fb: dict, threshold: int) -> bool:
    """Stop rule: every aspect parsed and scored at least ``threshold``."""
    return all(a["parse_ok"] and a["score"] >= threshold for a in fb["aspects"])


def reflection_search(store, model, tokenizer, fingerprint: str, examples: list, judge, rubrics, cfg, *,
                      seed: int = 0, weights: dict | None = None, policy_id: str = "M0") -> dict:
    """Run the search on ``examples`` with a ``ReflectionConfig``. Returns the candidate pool (for
    :func:`rlrf_nb.pairs.build_pairs`), every judged record, and per-round statistics with timings."""
    t0 = time.monotonic()
    by_id = {ex.id: ex for ex in examples}
    samples = generate_to_store(store, "samples", model, tokenizer, fingerprint,
                                [{"id": ex.id, "prompt": ex.prompt} for ex in examples], n=cfg.n_samples,
                                temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                seed=seed, batch_size=cfg.batch_size, policy_id=policy_id)
    rows = [{"example": by_id[s["source_id"]], "response_id": s["response_id"], "response": s["text"]}
            for s in samples]
    judged = judge_responses(store, "feedback", judge, rows, rubrics, weights)
    parents = {r["response_id"]: None for r in judged}  # response id -> parent id
    rounds = [{"round": 0, "candidates": len(judged), "seconds": round(time.monotonic() - t0, 1)}]
    frontier = {ex.id: [r for r in judged if r["example_id"] == ex.id] for ex in examples}
    best = {pid: max((r["reward"] for r in recs if r["reward"] is not None), default=None)
            for pid, recs in frontier.items()}
    for rnd in range(1, cfg.max_rounds + 1):
        t1 = time.monotonic()
        todo = []
        for pid, recs in frontier.items():
            if any(_done(r["feedback"], cfg.threshold) for r in recs):
                continue  # stop rule: a candidate already has no aspect below the threshold
            ranked = sorted((r for r in recs if r["reward"] is not None), key=lambda r: -r["reward"])
            for r in ranked[: cfg.top_k]:
                notes = notes_from_feedback(r["feedback"], rubrics)
                prompt = refinement_prompt(by_id[pid].prompt, r["response"], notes)
                todo.append({"id": r["response_id"], "prompt": prompt, "example_id": pid})
        if not todo:
            break
        refs = generate_to_store(store, "refinements", model, tokenizer, fingerprint, todo, n=cfg.m_refinements,
                                 temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                 seed=seed + rnd, batch_size=cfg.batch_size, policy_id=policy_id, tag=f"r{rnd}.")
        ex_of = {t["id"]: t["example_id"] for t in todo}
        ref_rows = [{"example": by_id[ex_of[r["source_id"]]], "response_id": r["response_id"], "response": r["text"]}
                    for r in refs]
        ref_judged = judge_responses(store, "feedback", judge, ref_rows, rubrics, weights, round_=rnd)
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
                       "seconds": round(time.monotonic() - t1, 1)})
    pool = [Candidate(r["response_id"], r["example_id"], r["prompt"], r["response"],
                      "sample" if parents[r["response_id"]] is None else "refinement", r["reward"],
                      {a["aspect"]: a["score"] for a in r["feedback"]["aspects"]}, parent_id=parents[r["response_id"]],
                      correct=(math.is_correct(r["response"], by_id[r["example_id"]].answer)
                               if by_id[r["example_id"]].task == "math" else None))
            for r in judged]
    log.info("reflection search: %d candidates for %d prompts in %.0f s", len(pool), len(examples),
             time.monotonic() - t0)
    return {"pool": pool, "records": judged, "rounds": rounds, "seconds": round(time.monotonic() - t0, 1)}


def search_stats(pool: list[Candidate]) -> dict:
    """Refinement success (refinements that beat their parent) and how often the best candidate of a prompt
    is a refinement; parse failures (reward None) are counted, not scored."""
    by_id = {c.candidate_id: c for c in pool}
    refs = [c for c in pool if c.kind == "refinement" and c.reward is not None
            and by_id[c.parent_id].reward is not None]
    beat = sum(c.reward > by_id[c.parent_id].reward for c in refs)
    prompts: dict[str, list[Candidate]] = {}
    for c in pool:
        if c.reward is not None:
            prompts.setdefault(c.prompt_id, []).append(c)
    best_is_ref = sum(max(cs, key=lambda c: (c.correct is True, c.reward)).kind == "refinement"
                      for cs in prompts.values())
    return {"refinements": len(refs), "refinement_beats_parent": beat / len(refs) if refs else float("nan"),
            "prompts": len(prompts), "best_is_refinement": best_is_ref / len(prompts) if prompts else float("nan"),
            "parse_failures": sum(c.reward is None for c in pool),
            "feedback_parse_ok": sum(c.reward is not None for c in pool)}

