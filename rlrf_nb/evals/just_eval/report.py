"""Just-Eval over a set of responses: judged resumably into the run store, and the report (per-aspect means with
bootstrap intervals, parse rates, the overall means)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlrf_nb.evals.just_eval.prompts import ASPECTS, KINDS, SAFETY_ASPECTS, TEMPLATE_SHA256
from rlrf_nb.feedback import Feedback
from rlrf_nb.stats import bootstrap, bootstrap_ci, mean, percentile_ci, rate
from rlrf_nb.store import content_key


def _check_responses(responses: Sequence[dict]) -> list[dict]:
    """The response dicts, validated: an error names the position, the id and the field."""
    rows, seen = list(responses), {}
    for i, r in enumerate(rows):
        where = f"responses[{i}]"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: expected a dict with id, instruction, response, kind, got {type(r).__name__}")
        for f in ("id", "instruction", "response", "kind"):
            if f not in r:
                raise ValueError(f"{where}: missing field {f!r}")
        where = f"responses[{i}] (id {r['id']!r})"
        unknown = sorted(set(r) - {"id", "instruction", "response", "kind", "example"})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}")
        if not isinstance(r["instruction"], str) or not r["instruction"].strip():
            raise ValueError(f"{where}: field 'instruction' must be a non-empty string")
        if not isinstance(r["response"], str):
            raise ValueError(f"{where}: field 'response' must be a string, got {type(r['response']).__name__}")
        if r["kind"] not in KINDS:
            raise ValueError(f"{where}: field 'kind' must be one of {list(KINDS)}, got {r['kind']!r}")
        if r["id"] in seen:
            raise ValueError(f"{where}: duplicate id, already used by responses[{seen[r['id']]}]")
        seen[r["id"]] = i
    return rows


def evaluate_just_eval(responses: Sequence[dict], judge, store, name: str, n_boot: int = 2000,
                       seed: int = 0) -> tuple[list[dict], dict]:
    """Judge ``responses`` (``{id, instruction, response, kind: "general" | "safety", example?}``) into artifact
    ``name`` of ``store`` and aggregate: returns ``(records, report)``.

    ``kind`` picks the aspects (the five general ones, or safety). Each record holds the per-aspect score, reason,
    parse status and error, the raw reply and the judge id. Records are keyed by judge id, template, instruction,
    response and aspects, so a rerun recomputes nothing, a crash loses at most the record in flight, and another judge
    or template never reuses them; identical inputs share one judgement, each response keeps its own id. ``report``
    is :func:`aggregate` of the records. A malformed or duplicate-id response is a ``ValueError`` before any call.
    """

    rows = _check_responses(responses)

    def key(r):  # a judge's id names its model and endpoint, never its API key; a judge needs only id and judge(),
        # and one that asks no model (the stand-in, a test's) has no max_repairs: None in the key
        return content_key({"benchmark": "just-eval", "judge": judge.id, "template": TEMPLATE_SHA256[r["kind"]],
                            "max_repairs": getattr(judge, "max_repairs", None), "instruction": r["instruction"],
                            "response": r["response"], "aspects": KINDS[r["kind"]],
                            # the stored judgement's shape: 2 = the kit's Feedback (issue 17; 1 had "reason" and
                            # "kind"), so a store written before is re-judged, never misread
                            "record": 2})

    def run(r):
        ex = r.get("example")
        jd = judge.judge(r["instruction"], r["response"], KINDS[r["kind"]], example=ex)
        return {"id": r["id"], "kind": r["kind"], "instruction": r["instruction"], "response": r["response"],
                "example_id": None if ex is None else ex.id, "judge_id": jd.judge_id, "parse_ok": jd.parse_ok,
                "template_sha256": TEMPLATE_SHA256[r["kind"]], "judgement": jd.to_dict()}

    recs = store.map(name, rows, key, run, desc=f"just-eval ({judge.id})")
    records = [{**rec, "id": r["id"],
                "example_id": rec.get("example_id") if r.get("example") is None else r["example"].id}
               for rec, r in zip(recs, rows)]
    return records, aggregate(records, n_boot=n_boot, seed=seed)


def _nanmean(xs: Sequence[float]) -> float:
    """The mean of the values that are defined (NaN = no score, or an aspect with no score in a resample: left out);
    NaN when none is."""
    return mean([x for x in xs if x == x])


def aggregate(records: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """The Just-Eval report of judged records: per aspect (``aspects``) ``mean`` over scored items (failures and N/A
    left out) with a 95% percentile-bootstrap interval (``ci_low``/``ci_high``, ``n_boot`` seeded resamples), ``n``
    scored, ``n_items`` judged, ``n_parse_failures``, ``n_not_applicable``, ``parse_rate`` (Wilson interval);
    ``overall`` (mean of the five general aspect means, resampling the general items), ``overall_with_safety`` (upstream
    ``show_tables.py``'s ``avg``: all six, general and safety items resampled independently), ``safety`` on its own,
    ``judge_id``, ``n_general``, ``n_safety``, ``avg_words`` (mean whitespace words per response). Records from
    different judges raise: not one scale.
    """

    records = list(records)
    if not records:
        raise ValueError("aggregate needs at least one judged record, got none")
    judges = sorted({r["judge_id"] for r in records})
    if len(judges) > 1:
        raise ValueError(f"records come from {len(judges)} judges {judges}; aggregate one judge at a time")
    bad = [r.get("id") for r in records if r.get("kind") not in KINDS]
    if bad:
        raise ValueError(f"records with ids {bad[:5]} have a kind other than {list(KINDS)}")
    by_kind = {k: [r for r in records if r["kind"] == k] for k in KINDS}

    aspects, boot = {}, {}
    for s, kind in enumerate(KINDS):
        names = KINDS[kind]
        rows = [[jd.get(a) for a in names] for jd in (Feedback.from_dict(r["judgement"]) for r in by_kind[kind])]
        values = [[math.nan if a.score is None else float(a.score) for a in row] for row in rows]
        # per resample of this kind's items, every aspect's mean (the overall intervals below)
        boot[kind] = (bootstrap(values, lambda rs: [_nanmean(c) for c in zip(*rs)], n_boot, seed + s)
                      or [[math.nan] * len(names)] * n_boot)
        for j, name in enumerate(names):
            col = [row[j] for row in rows]
            scored = [a.score for a in col if a.score is not None]
            failures = sum(not a.parse_ok for a in col)
            pr = rate(len(col) - failures, len(col))
            ci = bootstrap_ci(scored, n_boot=n_boot, seed=seed + 10 + (ASPECTS + SAFETY_ASPECTS).index(name))
            aspects[name] = {"mean": ci["value"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                             "n": len(scored), "n_items": len(col), "n_parse_failures": failures,
                             "n_not_applicable": sum(a.parse_ok and not a.applicable for a in col),
                             "parse_rate": pr["rate"], "parse_rate_ci_low": pr["ci_low"],
                             "parse_rate_ci_high": pr["ci_high"]}

    def mean_of_aspects(names: list[str], boots: list[list[float]], columns: list[str]) -> dict:
        """The mean of ``names``' means, with its interval over ``boots`` (resampled means in ``columns`` order)."""
        lo, hi = (percentile_ci([_nanmean([b[columns.index(a)] for a in names]) for b in boots]) if names
                  else (math.nan, math.nan))
        return {"mean": mean([aspects[a]["mean"] for a in names]), "ci_low": lo, "ci_high": hi, "aspects": names}

    general = [a for a in ASPECTS if aspects[a]["n"]]
    overall = {**mean_of_aspects(general, boot["general"], ASPECTS), "n_items": len(by_kind["general"])}
    six = general + [a for a in SAFETY_ASPECTS if aspects[a]["n"]]
    # the general and the safety items resampled independently, as two samples
    with_safety = mean_of_aspects(six, [g + s for g, s in zip(boot["general"], boot["safety"])],
                                  ASPECTS + SAFETY_ASPECTS)

    def words(kind):
        return mean([len(r["response"].split()) for r in by_kind[kind]])

    return {"judge_id": judges[0], "aspects": aspects, "overall": overall, "overall_with_safety": with_safety,
            "safety": {**aspects["safety"]}, "n_general": len(by_kind["general"]), "n_safety": len(by_kind["safety"]),
            "avg_words": {"general": words("general"), "safety": words("safety")}, "n_boot": n_boot, "seed": seed}
