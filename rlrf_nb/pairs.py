"""Preference pairs from a pool of judged candidates (paper §3.2 → §3.3), in TRL's preference format.

A *pair policy* picks chosen/rejected from each prompt's judged samples and refinements: ``best_vs_worst`` (the whole
pool's best against its worst), ``refined_vs_original`` (each refinement against the draft it refined),
``best_refined_vs_worst_sample``, ``no_reflection`` (samples only: the reflection ablation), ``scalar`` (one overall
score instead of per-aspect feedback: the second ablation) and ``step_prefix`` (step-level pairs: a perfect solution
against a wrong one that shares its right steps, where the tiny world's verifier knows the steps). Ties and pairs
under the margin are dropped, a wrong answer is never chosen over a right one (candidates rank by (correct, reward)),
and a candidate without a reward (a judge parse failure) never enters a pair.

Human review appends *decisions* (accept, reject, swap, edit) to ``decisions.jsonl``; :func:`build_pairs` honours
them whenever given them. A pair is identified by its prompt and its two candidates, so a decision holds across
policies. Notebook 02 saves its pool (:func:`save_pool`); later notebooks read it back (:func:`load_pool`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rlrf_nb.config import PAIR_POLICIES as POLICIES
from rlrf_nb.jsonl import JsonlError, append_bytes, dumps_line, read_jsonl, write_jsonl
from rlrf_nb.stats import rate
from rlrf_nb.store import content_key
from rlrf_nb.tasks.math import step_prefix

log = logging.getLogger(__name__)
ACTIONS = ("accept", "reject", "swap", "edit")


@dataclass(frozen=True)
class Candidate:
    """One judged response in a prompt's pool: ``kind`` sample or refinement (of ``parent_id``), ``reward`` from
    per-aspect feedback (None on a parse failure), ``overall`` for the scalar ablation, ``correct`` when verifiable,
    ``first_error`` when its steps are known (:attr:`rlrf_nb.tasks.math.MathCheck.first_wrong_line`: 0 when every
    step and the answer are right, else the 1-based solution line of the first mistake; None unchecked).
    """

    candidate_id: str
    prompt_id: str
    prompt: str
    text: str
    kind: str
    reward: float | None
    scores: dict
    parent_id: str | None = None
    correct: bool | None = None
    overall: float | None = None
    first_error: int | None = None

    def __post_init__(self):
        if self.kind not in ("sample", "refinement"):
            raise ValueError(f"candidate {self.candidate_id}: kind must be 'sample' or 'refinement', got {self.kind!r}")
        if self.kind == "refinement" and not self.parent_id:
            raise ValueError(f"candidate {self.candidate_id}: a refinement needs parent_id")


def group_by_prompt(candidates: Iterable[Candidate]) -> dict[str, list[Candidate]]:
    """``candidates`` by prompt id, each list in the given order."""
    out: dict[str, list[Candidate]] = {}
    for c in candidates:
        out.setdefault(c.prompt_id, []).append(c)
    return out


def right_wrong_pairs(pool: list[Candidate]) -> list[tuple[Candidate, Candidate]]:
    """Every (right, wrong) pair of one prompt's candidates by final answer; ungraded candidates are left out."""
    return [(r, w) for cs in group_by_prompt(pool).values() for r in cs if r.correct for w in cs if w.correct is False]


def _value(c: Candidate, policy: str) -> float | None:
    return c.overall if policy == "scalar" else c.reward


def _rank_key(c: Candidate, policy: str, gold_override: bool = True):
    """Verifiable override first (a right answer outranks a wrong one), then the reward; without the override, the
    reward alone."""
    return (gold_override and c.correct is True, _value(c, policy))


def _pair(chosen: Candidate, rejected: Candidate, policy: str, margin: float, round_: int,
          conversational: bool, gold_override: bool = True, step: int | None = None) -> dict | None:
    """One pair row; ``step`` (step_prefix): the verifier's order, kept whatever the reward says, and the line where
    the two part."""
    if step is None and _rank_key(chosen, policy, gold_override) < _rank_key(rejected, policy, gold_override):
        chosen, rejected = rejected, chosen
    vc, vr = _value(chosen, policy), _value(rejected, policy)
    gap = vc - vr
    right_over_wrong = gold_override and chosen.correct is True and rejected.correct is False
    if chosen.text == rejected.text or (step is None and not right_over_wrong and (gap == 0 or gap < margin)):
        return None  # a tie, or too small a margin (a right-over-wrong or a step-level pair always counts)
    if conversational:
        prompt = [{"role": "user", "content": chosen.prompt}]
        ch = [{"role": "assistant", "content": chosen.text}]
        rj = [{"role": "assistant", "content": rejected.text}]
    else:
        prompt, ch, rj = chosen.prompt, chosen.text, rejected.text
    return {"prompt": prompt, "chosen": ch, "rejected": rj,
            "pair_id": pair_id(chosen.prompt_id, chosen.candidate_id, rejected.candidate_id),
            "prompt_id": chosen.prompt_id, "chosen_id": chosen.candidate_id, "rejected_id": rejected.candidate_id,
            "chosen_kind": chosen.kind, "rejected_kind": rejected.kind,
            "chosen_reward": vc, "rejected_reward": vr, "margin": gap,
            "chosen_scores": chosen.scores, "rejected_scores": rejected.scores,
            "chosen_correct": chosen.correct, "rejected_correct": rejected.correct,
            "pair_policy": policy, "round": round_, **({} if step is None else {"step": step})}


def _step_prefix_todo(cands: list[Candidate], per_prompt: int) -> list[tuple[Candidate, Candidate, int]]:
    """step_prefix's (chosen, rejected, step) triples of one prompt: each wrong candidate (deepest first mistake first,
    then higher reward) against a perfect one that shares its right prefix, the lines before its mistake; of those, its
    own refinement first, then any refinement, then a sample. At most ``per_prompt`` pairs, one per distinct wrong
    text."""
    perfect = [c for c in cands if c.first_error == 0]
    wrong = sorted((c for c in cands if c.first_error), key=lambda c: (-c.first_error, -c.reward, c.candidate_id))
    out, seen = [], set()
    for w in wrong:
        prefix = step_prefix(w.text, w.first_error - 1)
        if w.text in seen or prefix is None:
            continue
        right = [p for p in perfect if p.text.startswith(prefix)]
        if right:
            out.append((min(right, key=lambda p: (p.parent_id != w.candidate_id, p.kind != "refinement", -p.reward,
                                                  p.candidate_id)), w, w.first_error))
            seen.add(w.text)
        if len(out) == per_prompt:
            break
    return out


def pair_id(prompt_id: str, a: str, b: str) -> str:
    """A pair's identity: its prompt and its two candidates, in either order."""
    return content_key({"prompt_id": prompt_id, "candidates": sorted([a, b])})


def build_pairs(pool: list[Candidate], policy: str, *, min_margin: float = 0.0, round_: int = 0,
                conversational: bool = True, decisions: dict | None = None, per_prompt: int = 1,
                gold_override: bool = True, right_chosen_only: bool = False) -> list[dict]:
    """Preference pairs from ``pool`` (any number of prompts) under ``policy``: TRL's preference format (message lists
    when ``conversational``) plus lineage columns (ids, kinds, rewards, margin, scores, correctness, policy, round).

    ``min_margin``: the least reward gap kept (a right-over-wrong pair always counts). ``per_prompt`` > 1
    (best_vs_worst, scalar, no_reflection) pairs the i-th best distinct candidate with the i-th worst, for i <
    ``per_prompt``, while the best side stays above the worst. An unknown ``policy`` is a ``ValueError``. ``decisions``
    (:func:`load_decisions`) are applied last, with :func:`apply_decisions`. ``gold_override``
    (``pairs.gold_override``): a right final answer outranks a wrong one whatever the judge says; without it the
    judge's reward alone ranks the candidates, which is what measures a judge (a learned one) inside the loop.
    ``right_chosen_only`` (``pairs.right_chosen_only``) drops the pairs whose chosen response is graded wrong (a
    chosen response without a gold answer is kept), before the decisions.

    ``step_prefix`` (step-level pairs): on a prompt whose candidates carry ``first_error`` (a known step chain), each
    wrong candidate against a perfect one that shares its right prefix, so the two part at its first mistake, up to
    ``per_prompt`` pairs (:func:`_step_prefix_todo`; a prompt without a perfect candidate gives none); every other
    prompt (bios, GSM8K) is paired best_vs_worst. The pair's ``step`` is the line where they part. With
    ``dpo.pair_cut: shared_prefix`` DPO scores only what follows the shared prefix.
    """
    def key(c: Candidate):
        return _rank_key(c, policy, gold_override)

    if policy not in POLICIES:
        raise ValueError(f"unknown pair policy {policy!r}; choose from {POLICIES}")
    graded = [c for c in pool if c.correct is not None]
    if policy == "step_prefix" and graded and all(c.first_error is None for c in graded):
        log.warning("step_prefix: no graded candidate carries first_error (real GSM8K, or a pool saved before the "
                    "search marked steps), so every prompt is paired best_vs_worst")
    pairs = []
    for cands in group_by_prompt(c for c in pool if _value(c, policy) is not None).values():
        samples = [c for c in cands if c.kind == "sample"]
        refinements = [c for c in cands if c.kind == "refinement"]
        todo: list[tuple[Candidate, Candidate]] = []
        steps = policy == "step_prefix" and any(c.first_error is not None for c in cands)
        if steps:
            todo += _step_prefix_todo(cands, per_prompt)
        group = {"best_vs_worst": cands, "scalar": cands, "no_reflection": samples,
                 "step_prefix": None if steps else cands}.get(policy)
        if group is not None and len(group) >= 2:
            distinct = list({c.text: c for c in sorted(group, key=key)}.values())
            ranked = sorted(distinct, key=key) if per_prompt > 1 else sorted(group, key=key)
            for i in range(per_prompt):
                lo, hi = ranked[i], ranked[-1 - i]
                if len(ranked) - 1 - i <= i or (i and key(hi) <= key(lo)):
                    break
                todo.append((hi, lo))
        elif policy == "best_refined_vs_worst_sample" and refinements and samples:
            todo.append((max(refinements, key=key), min(samples, key=key)))
        elif policy == "refined_vs_original":
            by_id = {c.candidate_id: c for c in cands}
            todo += [(r, by_id[r.parent_id]) for r in refinements if r.parent_id in by_id]
        made = (_pair(*t[:2], policy, min_margin, round_, conversational, gold_override, *t[2:]) for t in todo)
        # a tie or too small a margin makes none; right_chosen_only drops a pair whose chosen answer is wrong
        pairs += [p for p in made if p is not None and not (right_chosen_only and p["chosen_correct"] is False)]
    return apply_decisions(pairs, decisions or {})


# ---------------------------------------------------------------------------------------------
# Human review decisions: decisions.jsonl
# ---------------------------------------------------------------------------------------------


class DecisionError(ValueError):
    """A decision is invalid; the message names the file and line (or the field)."""


def _check_decision(d: dict, where: str) -> dict:
    for f in ("pair_id", "action"):
        if not isinstance(d.get(f), str) or not d[f]:
            raise DecisionError(f"{where}: field {f!r} must be a non-empty string, got {d.get(f)!r}")
    if d["action"] not in ACTIONS:
        raise DecisionError(f"{where}: field 'action' must be one of {ACTIONS}, got {d['action']!r}")
    if d["action"] in ("swap", "edit") and not isinstance(d.get("candidate_id"), str):
        raise DecisionError(f"{where}: a {d['action']} needs field 'candidate_id' (the candidate "
                            f"{'to prefer' if d['action'] == 'swap' else 'whose text is replaced'})")
    if d["action"] == "edit" and (not isinstance(d.get("text"), str) or not d["text"].strip()):
        raise DecisionError(f"{where}: an edit needs a non-empty string field 'text'")
    return d


def record_decision(path: str | os.PathLike, pair: dict, action: str, *, candidate_id: str | None = None,
                    text: str | None = None, note: str = "", reviewer: str = "") -> dict:
    """Append one decision on ``pair`` to the JSONL file ``path`` (one flushed write) and return it; ``candidate_id``
    defaults to the rejected candidate for swap and to the chosen one for edit (``text`` its new text).
    """
    if candidate_id is None and action in ("swap", "edit"):
        candidate_id = pair["rejected_id" if action == "swap" else "chosen_id"]
    if candidate_id is not None and candidate_id not in (pair["chosen_id"], pair["rejected_id"]):
        raise DecisionError(f"candidate_id {candidate_id!r} is not in pair {pair['pair_id']} "
                            f"({pair['chosen_id']}, {pair['rejected_id']})")
    d = {"pair_id": pair["pair_id"], "prompt_id": pair["prompt_id"], "action": action, "note": note,
         "reviewer": reviewer, "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
         **{k: v for k, v in (("candidate_id", candidate_id), ("text", text)) if v is not None}}
    _check_decision(d, "decision")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    append_bytes(path, dumps_line(d).encode("utf-8"))
    return d


def load_decisions(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Decisions per pair id, in file order (an absent file means none). Every line is validated; an
    invalid one raises :class:`DecisionError` naming ``file:line``."""
    path = Path(path)
    if not path.exists():
        return {}
    out: dict[str, list[dict]] = {}
    try:
        for lineno, d in enumerate(read_jsonl(path), start=1):
            _check_decision(d, f"{path}: decision {lineno}")
            out.setdefault(d["pair_id"], []).append(d)
    except JsonlError as e:
        raise DecisionError(str(e)) from None
    return out


def _swap(p: dict) -> dict:
    q = dict(p)
    for field in ("", "_id", "_kind", "_reward", "_scores", "_correct"):
        q["chosen" + field], q["rejected" + field] = p["rejected" + field], p["chosen" + field]
    q["margin"] = -p["margin"]
    return q


def side_text(side) -> str:
    """The response of a pair's side: the text itself, or a conversational side's assistant message."""
    return side if isinstance(side, str) else next(m["content"] for m in side if m["role"] == "assistant")


def _set_text(side, text: str):
    if isinstance(side, list):  # conversational: the assistant message(s)
        return [{**m, "content": text} if m["role"] == "assistant" else m for m in side]
    return text


def apply_decisions(pairs: list[dict], decisions: dict[str, list[dict]]) -> list[dict]:
    """``pairs`` with review decisions replayed in file order: reject drops, accept keeps (the last wins), swap prefers
    ``candidate_id``, edit replaces its text (kept in ``original_texts``); each row gets ``review`` and
    ``original_texts`` (empty if unreviewed). Decisions on pairs not in ``pairs`` (another pool or policy) are left
    alone and counted in the log.
    """
    out, seen = [], set()
    for p in pairs:
        ds = decisions.get(p["pair_id"])
        if not ds:
            out.append({**p, "review": [], "original_texts": []})
            continue
        seen.add(p["pair_id"])
        keep, q, originals = True, dict(p), {}
        for d in ds:
            if d["action"] in ("accept", "reject"):
                keep = d["action"] == "accept"
            elif d["action"] == "swap" and q["chosen_id"] != d["candidate_id"]:
                q = _swap(q)
            elif d["action"] == "edit":
                side = "chosen" if q["chosen_id"] == d["candidate_id"] else "rejected"
                originals.setdefault(d["candidate_id"], side_text(q[side]))
                q[side] = _set_text(q[side], d["text"])
        if keep:
            out.append({**q, "review": [d["action"] for d in ds],
                        "original_texts": [{"candidate_id": k, "text": v} for k, v in originals.items()]})
    unmatched = sum(len(v) for k, v in decisions.items() if k not in seen)
    if unmatched:
        log.info("%d review decision(s) are on pairs not in this build (another pool or policy)", unmatched)
    return out


def save_pairs(store, pairs: list[dict], name: str = "pairs") -> Path:
    """Write ``pairs`` to ``<run_dir>/<name>.jsonl`` (atomically, replacing the last build; each row keyed by
    its content), since a build is a pure function of the pool, the policy and the decisions."""
    path = store.path(f"{name}.jsonl")
    write_jsonl(path, ({**p, "key": content_key(p)} for p in pairs))
    return path


def save_pool(store, pool: list[Candidate], name: str = "pool") -> Path:
    """Write notebook 02's candidate pool to ``<run_dir>/<name>.jsonl`` (atomically, replacing the last search's),
    one :class:`Candidate` per line, for :func:`load_pool`."""
    path = store.path(f"{name}.jsonl")
    write_jsonl(path, (dataclasses.asdict(c) for c in pool))
    return path


def load_pool(store, name: str = "pool") -> list[Candidate]:
    """The candidate pool :func:`save_pool` wrote, in the same order (notebooks 05 on, without a new search)."""
    path = store.path(f"{name}.jsonl")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no candidate pool in this run; notebook 02 writes it "
                                "(rlrf-nb run --stages 02 with the same recipe and run name)")
    return [Candidate(**row) for row in read_jsonl(path)]


def wrong_above_right(pool: list[Candidate]) -> dict:
    """The fine-grained reward's side of the blind spot (notebook 05 §4): among each prompt's (right, wrong) candidate
    pairs by final answer, how many the reward ranks wrong above right (``flipped``), and of those how many reached the
    right answer through a wrong step (``lucky``: the verifier's logical correctness below 5, which the reward penalises
    by design). Candidates without a grade or a reward are left out."""
    flipped = [(r, w) for r, w in right_wrong_pairs(pool)
               if r.reward is not None and w.reward is not None and w.reward > r.reward]
    return {"flipped": len(flipped), "lucky": sum(r.scores.get("logical_correctness", 5) < 5 for r, _ in flipped)}


def pair_yield(pairs: list[dict], n_prompts: int) -> dict:
    """Pairs per prompt and the margin distribution's summary, for the notebook and the issue note."""
    margins = sorted(p["margin"] for p in pairs)
    mid = margins[len(margins) // 2] if margins else float("nan")
    return {"pairs": len(pairs), "prompts": n_prompts, "pairs_per_prompt": len(pairs) / n_prompts if n_prompts else 0.0,
            "median_margin": mid, "right_over_wrong": sum(p["chosen_correct"] is True and p["rejected_correct"] is False
                                                          for p in pairs)}


def to_dataset(pairs: list[dict], lineage: tuple[str, ...] = ("pair_id", "prompt_id", "chosen_id", "rejected_id")):
    """``pairs`` as a ``datasets.Dataset`` for TRL's ``DPOTrainer``: prompt/chosen/rejected plus the string
    lineage columns named in ``lineage`` (mixed-type columns such as per-aspect score dicts stay out)."""
    from datasets import Dataset

    cols = ("prompt", "chosen", "rejected", *lineage)
    return Dataset.from_list([{k: p[k] for k in cols} for p in pairs])


def pair_lengths(pairs: list[dict]) -> dict:
    """Length bias: words in chosen minus rejected per pair, and the rate at which chosen is longer."""
    diffs = [len(side_text(p["chosen"]).split()) - len(side_text(p["rejected"]).split()) for p in pairs]
    return {"diffs": diffs, "chosen_longer": rate(sum(d > 0 for d in diffs), len(diffs)),
            "mean_diff": sum(diffs) / len(diffs) if diffs else float("nan")}
