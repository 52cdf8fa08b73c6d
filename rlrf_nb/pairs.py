"""Preference pairs from a pool of judged candidates (paper §3.2 → §3.3), in TRL's preference format.

A pool holds, per prompt, the policy's samples and its refinements, each judged. A *pair policy*
picks chosen/rejected from it:

- ``best_vs_worst``: the best candidate of the whole pool against the worst;
- ``refined_vs_original``: each refinement against the draft it refined;
- ``best_refined_vs_worst_sample``: the best refinement against the worst original sample;
- ``no_reflection``: samples only, best against worst (the reflection ablation);
- ``scalar``: best against worst by one overall score instead of per-aspect feedback (the second ablation).

Ties are dropped and a minimum reward margin applies. On verifiable tasks (``correct`` known) a wrong
answer is never chosen over a right one: candidates rank by (correct, reward). Candidates whose reward is
None (a judge parse failure) never enter a pair.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("best_vs_worst", "refined_vs_original", "best_refined_vs_worst_sample", "no_reflection", "scalar")


@dataclass(frozen=True)
class Candidate:
    """One judged response in a prompt's pool.

    kind: "sample" or "refinement" (then ``parent_id`` names the refined candidate).
    reward: the scalar reward from per-aspect feedback (``feedback.scalar_reward``), None on a parse failure.
    overall: a single overall score for the ``scalar`` ablation (None if not judged that way).
    correct: for verifiable tasks, whether the final answer is right; None otherwise.
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

    def __post_init__(self):
        if self.kind not in ("sample", "refinement"):
            raise ValueError(f"candidate {self.candidate_id}: kind must be 'sample' or 'refinement', got {self.kind!r}")
        if self.kind == "refinement" and not self.parent_id:
            raise ValueError(f"candidate {self.candidate_id}: a refinement needs parent_id")


def _value(c: Candidate, policy: str) -> float | None:
    return c.overall if policy == "scalar" else c.reward


def _rank_key(c: Candidate, policy: str):
    """Verifiable override first (a right answer outranks a wrong one), then the reward."""
    return (c.correct is True, _value(c, policy))


def _pair(chosen: Candidate, rejected: Candidate, policy: str, margin: float, round_: int,
          conversational: bool) -> dict | None:
    if _rank_key(chosen, policy) < _rank_key(rejected, policy):
        chosen, rejected = rejected, chosen
    vc, vr = _value(chosen, policy), _value(rejected, policy)
    gap = vc - vr
    right_over_wrong = chosen.correct is True and rejected.correct is False
    if chosen.text == rejected.text or (not right_over_wrong and (gap == 0 or gap < margin)):
        return None  # a tie, or too small a margin (a right-over-wrong pair always counts)
    if conversational:
        prompt = [{"role": "user", "content": chosen.prompt}]
        ch = [{"role": "assistant", "content": chosen.text}]
        rj = [{"role": "assistant", "content": rejected.text}]
    else:
        prompt, ch, rj = chosen.prompt, chosen.text, rejected.text
    return {"prompt": prompt, "chosen": ch, "rejected": rj,
            "prompt_id": chosen.prompt_id, "chosen_id": chosen.candidate_id, "rejected_id": rejected.candidate_id,
            "chosen_kind": chosen.kind, "rejected_kind": rejected.kind,
            "chosen_reward": vc, "rejected_reward": vr, "margin": gap,
            "chosen_scores": chosen.scores, "rejected_scores": rejected.scores,
            "chosen_correct": chosen.correct, "rejected_correct": rejected.correct,
            "pair_policy": policy, "round": round_}


def build_pairs(pool: list[Candidate], policy: str, *, min_margin: float = 0.0, round_: int = 0,
                conversational: bool = True) -> list[dict]:
    """Preference pairs from ``pool`` (any number of prompts) under ``policy``.

    Rows are TRL's preference format (``prompt``/``chosen``/``rejected``, as message lists when
    ``conversational``) plus lineage columns: prompt and candidate ids and kinds, rewards, margin,
    per-aspect scores, correctness, the pair policy and the round.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown pair policy {policy!r}; choose from {POLICIES}")
    by_prompt: dict[str, list[Candidate]] = {}
    for c in pool:
        if _value(c, policy) is not None:
            by_prompt.setdefault(c.prompt_id, []).append(c)
    pairs = []
    for cands in by_prompt.values():
        samples = [c for c in cands if c.kind == "sample"]
        refinements = [c for c in cands if c.kind == "refinement"]
        todo: list[tuple[Candidate, Candidate]] = []
        if policy in ("best_vs_worst", "scalar"):
            group = cands
        elif policy == "no_reflection":
            group = samples
        else:
            group = None
        if group is not None and len(group) >= 2:
            ranked = sorted(group, key=lambda c: _rank_key(c, policy))
            todo.append((ranked[-1], ranked[0]))
        elif policy == "best_refined_vs_worst_sample" and refinements and samples:
            todo.append((max(refinements, key=lambda c: _rank_key(c, policy)),
                         min(samples, key=lambda c: _rank_key(c, policy))))
        elif policy == "refined_vs_original":
            by_id = {c.candidate_id: c for c in cands}
            todo += [(r, by_id[r.parent_id]) for r in refinements if r.parent_id in by_id]
        for a, b in todo:
            p = _pair(a, b, policy, min_margin, round_, conversational)
            if p is not None:
                pairs.append(p)
    return pairs


def pair_yield(pairs: list[dict], n_prompts: int) -> dict:
    """Pairs per prompt and the margin distribution's summary, for the notebook and the issue note."""
    margins = sorted(p["margin"] for p in pairs)
    mid = margins[len(margins) // 2] if margins else float("nan")
    return {"pairs": len(pairs), "prompts": n_prompts, "pairs_per_prompt": len(pairs) / n_prompts if n_prompts else 0.0,
            "median_margin": mid, "right_over_wrong": sum(p["chosen_correct"] is True and p["rejected_correct"] is False
                                                          for p in pairs)}
