"""The fine-grained feedback model's data and the judge interface (paper §3.1).

A judge returns one :class:`AspectFeedback` per aspect that applies: a verbal critique and a score on the aspect's
rubric scale. A missing, out-of-range or unparseable score is a *parse failure*, recorded with the raw judge text and
never turned into a number.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass, field
from typing import Protocol

import pandas as pd

from rlrf_nb.rubrics import OVERALL, aspect_specs, aspects_for_tags
from rlrf_nb.stats import rate
from rlrf_nb.store import content_key
from rlrf_nb.tasks.math import is_correct


@dataclass(frozen=True)
class AspectFeedback:
    """One aspect's judgement, in every format the kit reads (its own judge's, Just-Eval's), in three states so that
    nothing is ever scored by default: *scored* (``parse_ok`` and ``applicable``; ``score`` an int), *not applicable*
    (``parse_ok``, not ``applicable``: "N/A" or a stand-in that cannot judge it; left out of means, counted apart) and
    *parse failure* (not ``parse_ok``; ``error`` says why, the raw text is on the enclosing :class:`Feedback`).
    ``critique`` is the judge's text for the aspect, whatever the reply called it.
    """

    aspect: str  # the rubric's name, e.g. "logical_correctness"
    score: int | None
    min_score: int
    max_score: int
    critique: str
    parse_ok: bool = True
    error: str | None = None
    applicable: bool = True

    def __post_init__(self):
        if (self.parse_ok and self.applicable) != (self.score is not None):
            raise ValueError(f"aspect {self.aspect!r}: score must be set exactly when it parsed and applies (the "
                             f"score must be None exactly when parse_ok is False or the aspect is not applicable; "
                             f"parse_ok={self.parse_ok}, applicable={self.applicable}, score={self.score!r})")
        if self.score is not None and (type(self.score) is not int
                                       or not self.min_score <= self.score <= self.max_score):
            raise ValueError(f"aspect {self.aspect!r}: score {self.score!r} is not an integer in "
                             f"{self.min_score}-{self.max_score}")
        if self.parse_ok == bool(self.error):
            raise ValueError(f"aspect {self.aspect!r}: error must be given exactly on a parse failure")
        if not self.parse_ok and not self.applicable:
            raise ValueError(f"aspect {self.aspect!r}: a parse failure cannot also be 'not applicable'")

    @property
    def normalized(self) -> float | None:
        """Score mapped to [0, 1] on the rubric's scale, or None on a parse failure."""
        if self.score is None:
            return None
        return (self.score - self.min_score) / (self.max_score - self.min_score)


@dataclass
class Feedback:
    """All aspects' judgements of one response by one judge, with what produced them."""

    judge_id: str
    rubric_version: str  # the rubric set's version (a Just-Eval judgement: its template's, TEMPLATE_VERSION)
    aspects: list[AspectFeedback]
    raw: str = ""  # the judge's raw output (for LLM judges); kept whatever the parse outcome
    attempts: int = 1  # 1 + repair retries used
    meta: dict = field(default_factory=dict)  # e.g. verifier details: first wrong step, claim verdicts

    @property
    def parse_ok(self) -> bool:
        return all(a.parse_ok for a in self.aspects)

    def score(self, aspect: str) -> int | None:
        return next((a.score for a in self.aspects if a.aspect == aspect), None)

    def get(self, aspect: str) -> AspectFeedback:
        for a in self.aspects:
            if a.aspect == aspect:
                return a
        raise KeyError(f"judgement by {self.judge_id} has no aspect {aspect!r}; it has "
                       f"{[a.aspect for a in self.aspects]}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Feedback:
        return cls(**{**d, "aspects": [AspectFeedback(**a) for a in d["aspects"]]})


class Judge(Protocol):
    """Anything with an ``id`` and a ``judge`` method is a judge."""

    id: str

    def judge(self, prompt: str, response: str, aspects: list[str], example=None) -> Feedback:
        """Per-aspect feedback on ``response`` to ``prompt``. ``example`` (an ``Example``) gives
        ground truth to judges that use it (the verifier); LLM judges ignore it."""
        ...


# --------------------------------------------------------------------- Aspect selection (recorded with every judgement)

GENERAL_FALLBACK = ["helpfulness", "clarity", "factuality"]


def select_aspects(example, rubrics, judge=None) -> tuple[list[str], str]:
    """``(aspect names, how)`` for one prompt: from its task tags, else by asking ``judge`` (an object with
    ``select_aspects``, e.g. an ``LLMJudge``) to pick from the rubric list, else a general fallback.
    ``how`` is "tags", "judge" or "fallback"."""
    chosen = aspects_for_tags(list(example.tags))
    if chosen:
        return chosen, "tags"
    if judge is not None:
        offered = [n for n in rubrics.names() if n != OVERALL]
        names, _raw = judge.select_aspects(example.prompt, aspect_specs(rubrics, offered))
        names = [n for n in names if n in offered]
        if names:
            return names, "judge"
    return list(GENERAL_FALLBACK), "fallback"


# --------------------------------------------------------------------------------------- Aggregation to a scalar reward


def scalar_reward(fb: Feedback, weights: dict[str, float] | None = None) -> float | None:
    """Weighted mean of the aspects' normalised scores, in [0, 1]; ``weights`` by aspect name
    (default 1 each). None when any aspect failed to parse: a partial judgement cannot be ranked fairly."""
    if not fb.aspects or not fb.parse_ok:
        return None
    w = [(weights or {}).get(a.aspect, 1.0) for a in fb.aspects]
    if sum(w) <= 0:
        raise ValueError(f"aspect weights must sum to > 0, got {dict(zip([a.aspect for a in fb.aspects], w))}")
    return sum(wi * a.normalized for wi, a in zip(w, fb.aspects)) / sum(w)


# ------------------------------------------ Consensus and agreement (the seed's question: how to minimise subjectivity)


class ConsensusJudge:
    """k judges (or k samples of one) per response, median score per aspect; an aspect fails only if every judge did
    (naming each reason). Votes in ``meta["votes"]`` (for :func:`agreement`), errors in ``meta["member_errors"]``.
    """

    def __init__(self, judges: list, judge_id: str | None = None):
        if not judges:
            raise ValueError("ConsensusJudge needs at least one judge")
        self.judges = judges
        self.id = judge_id or "consensus(" + ",".join(j.id for j in judges) + ")"

    def judge(self, prompt: str, response: str, aspects: list[str], example=None) -> Feedback:
        fbs = [j.judge(prompt, response, aspects, example=example) for j in self.judges]
        out, votes, errors = [], {}, {}
        for i, asp in enumerate(fbs[0].aspects):
            per = [fb.aspects[i] for fb in fbs]
            votes[asp.aspect] = [a.score for a in per]
            errors[asp.aspect] = [a.error for a in per]
            ok = [a for a in per if a.parse_ok]
            if not ok:
                reasons = "; ".join(f"#{j}: {a.error}" for j, a in enumerate(per))
                out.append(AspectFeedback(asp.aspect, None, asp.min_score, asp.max_score, "", False,
                                          f"all {len(per)} judges failed to parse: {reasons}"))
                continue
            med = statistics.median_low([a.score for a in ok])  # the lower middle value: always a rubric level
            critique = next(a.critique for a in ok if a.score == med)
            out.append(AspectFeedback(asp.aspect, med, asp.min_score, asp.max_score, critique))
        return Feedback(self.id, fbs[0].rubric_version, out, raw="\n---\n".join(fb.raw for fb in fbs),
                        attempts=sum(fb.attempts for fb in fbs), meta={"votes": votes, "member_errors": errors})


def agreement(ratings: list[list[int | None]]) -> dict:
    """Inter-rater agreement on one aspect, ``ratings[item][rater]`` (None = missing, a parse failure), over items with
    >= 2 ratings: ``exact`` (share of items where all raters agree), ``pairwise`` (share of rater pairs that agree) and
    ``alpha`` (Krippendorff's alpha, interval metric).
    """
    units = [[r for r in item if r is not None] for item in ratings]
    units = [u for u in units if len(u) >= 2]
    if not units:
        return {"items": 0, "exact": float("nan"), "pairwise": float("nan"), "alpha": float("nan")}
    exact = sum(len(set(u)) == 1 for u in units) / len(units)
    agree = [a == b for u in units for a, b in itertools.combinations(u, 2)]
    # Krippendorff's alpha, interval: 1 - D_o / D_e over pairable values.
    n = sum(len(u) for u in units)
    d_o = sum(sum((a - b) ** 2 for a in u for b in u) / (len(u) - 1) for u in units) / n
    values = [v for u in units for v in u]  # sum over ordered pairs of (a - b)^2 = 2 n sum(v^2) - 2 sum(v)^2
    d_e = (2 * n * sum(v * v for v in values) - 2 * sum(values) ** 2) / (n * (n - 1))
    alpha = 1.0 - d_o / d_e if d_e > 0 else (1.0 if d_o == 0 else float("nan"))
    return {"items": len(units), "exact": exact, "pairwise": sum(agree) / len(agree), "alpha": alpha}


def cohen_kappa(a: list[int], b: list[int], weights: str | None = None) -> float:
    """Cohen's kappa of two raters on the same items; ``weights="quadratic"`` for ordinal scores."""
    if len(a) != len(b) or not a:
        raise ValueError(f"cohen_kappa needs two equal, non-empty rating lists, got {len(a)} and {len(b)}")
    cats = sorted(set(a) | set(b))
    idx = {c: i for i, c in enumerate(cats)}
    k, n = len(cats), len(a)
    if k == 1:
        return 1.0
    obs = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        obs[idx[x]][idx[y]] += 1 / n
    pa = [sum(row) for row in obs]
    pb = [sum(obs[i][j] for i in range(k)) for j in range(k)]

    def w(i, j):
        if weights == "quadratic":
            return ((cats[i] - cats[j]) / (cats[-1] - cats[0])) ** 2
        return 0.0 if i == j else 1.0

    num = sum(w(i, j) * obs[i][j] for i in range(k) for j in range(k))
    den = sum(w(i, j) * pa[i] * pb[j] for i in range(k) for j in range(k))
    return 1.0 - num / den if den > 0 else 1.0


def calibrate(judged: list[Feedback], reference: list[Feedback]):
    """An LLM judge against reference labels (e.g. the verifier) on the same responses, per aspect:
    parse rate, exact and within-1 agreement, mean signed difference, quadratic-weighted kappa."""
    if len(judged) != len(reference):
        raise ValueError(f"calibrate needs paired feedback, got {len(judged)} and {len(reference)}")
    rows = []
    for asp in dict.fromkeys(a.aspect for r in reference for a in r.aspects):
        scored = [(j.score(asp), r.score(asp)) for j, r in zip(judged, reference) if r.score(asp) is not None]
        pairs, n = [(js, rs) for js, rs in scored if js is not None], len(scored)
        row = {"aspect": asp, "n": n, "parsed": len(pairs), "parse_rate": len(pairs) / n if n else float("nan")}
        if pairs:
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            row.update(exact=sum(x == y for x, y in pairs) / len(pairs),
                       within_1=sum(abs(x - y) <= 1 for x, y in pairs) / len(pairs),
                       mean_diff=sum(x - y for x, y in pairs) / len(pairs),
                       kappa_quadratic=cohen_kappa(a, b, "quadratic"))
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- The judging stage: feedback records in the run store


def judge_responses(store, name: str, judge, rows: list[dict], rubrics, weights: dict[str, float] | None = None,
                    round_: int = 0, aspect_judge=None, aspects: list[str] | None = None) -> list[dict]:
    """Judge ``rows`` (``example``, ``response_id``, ``response``) into artifact ``name``, aspects per prompt
    (:func:`select_aspects`) unless ``aspects`` fixes them (``[rubrics.OVERALL]``: the scalar ablation's single overall
    score). Each record holds the aspects and how they were chosen, the judge id, the rubric version, the per-aspect
    feedback (critique, score, scale, parse status, error), the raw judge text and the scalar reward (``weights`` by
    aspect). Records are keyed by (judge, rubric version, prompt, response, aspects), so a rerun recomputes nothing and
    a crash loses at most the records in flight. A judge with a ``concurrency`` attribute above 1 (an HTTP judge built
    with ``feedback.concurrency``) is asked that many requests at a time.
    """
    examples = {r["example"].id: r["example"] for r in rows}  # each prompt once, in order of first appearance
    chosen = {i: (list(aspects), "fixed") if aspects else select_aspects(ex, rubrics, aspect_judge)
              for i, ex in examples.items()}

    def key(r):  # a judge's id names its model and endpoint (never its API key)
        k = {"judge": judge.id, "rubrics": rubrics.version, "prompt": r["example"].prompt,
             "response": r["response"], "aspects": chosen[r["example"].id][0]}
        if "quotes" in r["example"].meta:  # world.critique_quotes: the verifier's critiques quote the problem
            k["quotes"] = True
        truth = getattr(judge, "truth_key", None)  # what a judge reads beyond the prompt (the verifier: a KB record)
        if truth is not None:
            k.update(truth(r["example"]))
        return content_key(k)

    def run(r):
        ex = r["example"]
        aspects, how = chosen[ex.id]
        fb = judge.judge(ex.prompt, r["response"], aspects, example=ex)
        return {"response_id": r["response_id"], "example_id": ex.id, "task": ex.task, "prompt": ex.prompt,
                "response": r["response"], "aspects_how": how, "judge_id": fb.judge_id,
                "rubric_version": fb.rubric_version, "round": round_, "parse_ok": fb.parse_ok,
                "reward": scalar_reward(fb, weights), "feedback": fb.to_dict()}

    # an HTTP judge answers several requests at once (feedback.concurrency); the records are the same for any value
    recs = store.map(name, rows, key, run, desc=f"judge ({judge.id})", workers=getattr(judge, "concurrency", 1))
    # Identical responses share one stored judgement (same key); each candidate keeps its own ids.
    return [{**rec, "response_id": r["response_id"], "example_id": r["example"].id} for rec, r in zip(recs, rows)]


def feedback_frame(records: list[dict]):
    """One row per (record, aspect): the long table behind the notebook's plots, filters and parse table."""
    return pd.DataFrame([{"response_id": rec["response_id"], "example_id": rec["example_id"], "task": rec["task"],
                          "judge_id": rec["judge_id"], "round": rec["round"], "aspect": a["aspect"],
                          "score": a["score"], "max_score": a["max_score"], "parse_ok": a["parse_ok"],
                          "error": a["error"], "critique": a["critique"], "reward": rec["reward"]}
                         for rec in records for a in rec["feedback"]["aspects"]])


def score_table(frame):
    """Count, mean, min and max score per task and aspect of :func:`feedback_frame`. Parse failures have no score
    and are not counted: an aspect whose judgements all failed shows count 0 and NaNs (pandas' ``describe()`` of an
    all-None column has no mean, and notebook 01 raised a KeyError there)."""
    if frame.empty:
        return pd.DataFrame(columns=["count", "mean", "min", "max"])
    scored = frame.assign(score=pd.to_numeric(frame["score"], errors="coerce"))
    return scored.groupby(["task", "aspect"])["score"].agg(["count", "mean", "min", "max"])


def parse_rate(feedbacks: list[Feedback], round_: int = 0):
    """:func:`parse_table` for Feedback objects (not yet stored as records)."""
    rows = [{"judge_id": f.judge_id, "round": round_, "aspect": a.aspect, "parse_ok": a.parse_ok, "error": a.error}
            for f in feedbacks for a in f.aspects]
    return parse_table(pd.DataFrame(rows, columns=["judge_id", "round", "aspect", "parse_ok", "error"]))


def parse_table(frame):
    """Parse rate per judge, aspect and round, with failure counts; the most common error per group."""
    cols = ["judge_id", "round", "aspect", "n", "parsed", "failures", "parse_rate", "top_error"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    g = frame.groupby(["judge_id", "round", "aspect"])
    out = g.agg(n=("parse_ok", "size"), parsed=("parse_ok", "sum"))
    out["failures"] = out["n"] - out["parsed"]
    out["parse_rate"] = out["parsed"] / out["n"]
    errors = frame[~frame["parse_ok"]].groupby(["judge_id", "round", "aspect"])["error"]
    out["top_error"] = errors.agg(lambda e: e.value_counts().index[0] if len(e) else "")
    return out.fillna({"top_error": ""}).reset_index()


def consensus_votes(records: list[dict]) -> dict[str, list[list[int | None]]]:
    """Per aspect, each response's k votes from a :class:`ConsensusJudge` (``meta["votes"]``), ready for
    :func:`agreement`. Records from a single judge have no votes and are skipped."""
    out: dict[str, list] = {}
    for rec in records:
        for aspect, votes in rec["feedback"]["meta"].get("votes", {}).items():
            out.setdefault(aspect, []).append(votes)
    return out


def feedback_summary(ver_records: list[dict], llm_records: list[dict], examples_by_id: dict) -> dict:
    """The notebook-01 numbers for ``results.json``, each rate with a 95% interval: the verifier against final-answer
    correctness as a 2x2 table (``verifier_precision``: a verifier 5 must mean a right answer;
    ``right_answer_wrong_steps``: the verifier is stricter than an outcome check, by design) and the LLM judge's parse
    rate. ``ver_records`` must come from the verifier (``reference_judge_id``), never from the LLM judge: it would agree
    with itself.
    """
    pairs = [(Feedback.from_dict(r["feedback"]).score("logical_correctness") == 5,
              is_correct(r["response"], examples_by_id[r["example_id"]].answer))
             for r in ver_records if r["task"] == "math"]
    table = {f"verifier_{'5' if v else 'below_5'}__answer_{'right' if c else 'wrong'}": sum(p == (v, c) for p in pairs)
             for v in (True, False) for c in (True, False)}
    n5 = sum(v for v, _ in pairs)
    right = sum(c for _, c in pairs)
    aspects = [a for r in llm_records for a in r["feedback"]["aspects"]]
    return {"verifier_math_agreement": rate(sum(v == c for v, c in pairs), len(pairs)),
            "verifier_precision": rate(sum(v and c for v, c in pairs), n5),
            "right_answer_wrong_steps": rate(sum(c and not v for v, c in pairs), right),
            "verifier_vs_answer": table,
            "llm_judge_parse_rate": rate(sum(a["parse_ok"] for a in aspects), len(aspects)),
            "llm_judge_id": llm_records[0]["judge_id"] if llm_records else None,
            "reference_judge_id": ver_records[0]["judge_id"] if ver_records else None}


def critique_examples(records: list[dict]) -> list[dict]:
    """One record per distinct (task, verifier error kind), worst first: a varied sample of critiques."""
    seen, out = set(), []
    for rec in sorted(records, key=lambda r: (r["reward"] is None, r["reward"])):
        kind = (rec["task"], rec["feedback"]["meta"].get("error_kind"))
        if kind not in seen and rec["reward"] is not None and rec["reward"] < 1:
            seen.add(kind)
            out.append(rec)
    return out
