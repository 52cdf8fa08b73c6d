"""Readings: what a result says, in words generated from its numbers (one function per result).

Under a table or figure, ``display(Markdown(readings.<result>(...)))`` states the numbers with their 95% intervals and
the verdict they support, so it stays true when the numbers change; an empty section says why and how to get data there.
"better" or "worse" only when the interval of the difference excludes zero, else "no difference shown"; two separately
evaluated models use Newcombe's interval for two proportions (Newcombe 1998, method 10), which ignores the pairing and
so errs wide.
"""

from __future__ import annotations

import math

from rlrf_nb.pairs import pair_lengths, pair_yield
from rlrf_nb.paths import resolve_path
from rlrf_nb.stats import pct, rate, wilson_ci

# ----------------------------------------------------------------------------------------------------------- Formatting


def of(r: dict, noun: str = "") -> str:
    """``"175 of 1,980 refinements (8.8% [7.7, 10.2])"``."""
    return f"{r['k']:,} of {r['n']:,}{' ' + noun if noun else ''} ({pct(r)})"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def rate_diff(a: dict, b: dict) -> dict:
    """``b - a`` for two independent ``stats.rate`` dicts, with Newcombe's 95% interval (method 10)."""
    if not a["n"] or not b["n"]:
        return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    pa, pb = a["k"] / a["n"], b["k"] / b["n"]
    la, ua = wilson_ci(a["k"], a["n"])
    lb, ub = wilson_ci(b["k"], b["n"])
    d = pb - pa
    return {"diff": d, "ci_low": d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2),
            "ci_high": d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)}


def direction(lo: float, hi: float) -> str:
    """``"higher"``, ``"lower"`` or ``"no difference shown"`` from the interval of a difference."""
    return "higher" if lo > 0 else "lower" if hi < 0 else "no difference shown"


def _diff_text(d: dict) -> str:
    return f"{_pts(d['diff'])} points [{_pts(d['ci_low'])}, {_pts(d['ci_high'])}]"


# -------------------------------------------------------------------------------------- Notebook 01: the feedback model


def verifier(summary: dict) -> str:
    """Notebook 01 §2: is a verifier 5 a right answer, and how many right answers hide a wrong step
    (``feedback.feedback_summary``)."""
    prec, hidden = summary["verifier_precision"], summary["right_answer_wrong_steps"]
    agree = summary["verifier_math_agreement"]
    if not agree["n"]:
        return "**No math responses were judged**, so the verifier cannot be checked against final answers here."
    out = []
    if not prec["n"]:
        out.append(f"**No math response got a verifier 5** (of {agree['n']:,} judged): this M0 never wrote a solution "
                   "with every step right, so whether a 5 means a right answer cannot be checked here. A trained M0 "
                   "(the default recipe, or `retrain=True` with the full `m0` settings) writes some.")
    elif prec["k"] == prec["n"]:
        out.append(f"**A verifier 5 always meant a right final answer**: {of(prec)}. Its top score can be trusted.")
    else:
        out.append(f"**A verifier 5 meant a right final answer in {of(prec)}**: {prec['n'] - prec['k']} fives went "
                   "to wrong answers, which an exact verifier should never give; look at them before trusting it.")
    if hidden["n"] and hidden["k"]:
        out.append(f"{of(hidden, 'right answers')} were reached through a wrong step that a later error cancelled: an"
                   " outcome-only reward would reinforce those, the fine-grained verifier scores them below 5.")
    elif hidden["n"]:
        out.append(f"None of the {hidden['n']:,} right answers was reached through a wrong step.")
    return " ".join(out)


def judge_prompt_fit(cfg, rubrics, records: list[dict]) -> dict | None:
    """Token lengths of the judge prompts behind ``records`` (an LLM judge's feedback records) against the local judge
    model's context (``max_position_embeddings``): ``{"n", "min_tokens", "max_tokens", "context", "over"}``. None for
    a judge behind ``feedback.judge_url`` (its tokenizer is the server's) or when there are no records."""
    if cfg.judge_url or not records:
        return None
    from transformers import AutoConfig, AutoTokenizer

    from rlrf_nb.llm_judge import render_judge_prompt
    from rlrf_nb.rubrics import aspect_specs

    local = resolve_path(cfg.judge_model)
    src = str(local) if local.exists() else cfg.judge_model
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code)
    context = AutoConfig.from_pretrained(src, trust_remote_code=cfg.trust_remote_code).max_position_embeddings
    lengths = []
    for r in records:
        specs = aspect_specs(rubrics, [a["aspect"] for a in r["feedback"]["aspects"]])
        ids = tok.apply_chat_template(render_judge_prompt(r["prompt"], r["response"], specs), tokenize=True,
                                      add_generation_prompt=True)["input_ids"]
        lengths.append(len(ids))
    return {"n": len(lengths), "min_tokens": min(lengths), "max_tokens": max(lengths), "context": context,
            "over": sum(n > context for n in lengths)}


def llm_judge(summary: dict, fit: dict | None = None) -> str:
    """Notebook 01 §3: the LLM judge's parse rate, and why it is what it is (``fit``: :func:`judge_prompt_fit`)."""
    r, jid = summary["llm_judge_parse_rate"], summary["llm_judge_id"]
    if not r["n"]:
        return ("**No LLM-judge judgements** in this run (`feedback.n_llm_judged` is 0). Set it above 0 to measure "
                "a judge.")
    fit_text = ""
    if fit and fit["over"]:
        fit_text = (f" Its judge prompts (rubrics, question and response) are {fit['min_tokens']:,}–"
                    f"{fit['max_tokens']:,} tokens long and {fit['over']} of {fit['n']} exceed the judge model's "
                    f"context of {fit['context']:,} positions: it cannot read what it is asked to judge (that is "
                    "the tokenizer's \"sequence length\" warning above, and prompts this long are why generation "
                    "warns about memory).")
    if r["k"] == 0:
        return (f"**The LLM judge `{jid}` parsed none of its {r['n']} aspect judgements** (95% interval of the parse "
                f"rate: {100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%).{fit_text} "
                "Every failure is recorded with its raw text and never scored, so nothing downstream is fooled; in "
                "the tiny world this judge only exercises the path (prompt, transport, parsing, accounting). To "
                "judge for real, serve a judge model and set `feedback.judge_url` and `feedback.judge_model` "
                "(e.g. vLLM or `transformers serve` with a 7B instruct model); the calibration below then has "
                "numbers.")
    verdict = ("usable as it is" if r["ci_low"] >= 0.9 else
               "usable, with its failures counted" if r["rate"] >= 0.5 else "not yet usable: most judgements fail")
    return (f"**The LLM judge `{jid}` parsed {of(r, 'aspect judgements')}**: {verdict}.{fit_text} Failures keep their "
            "raw text and are never scored.")


def calibration(cal, summary: dict) -> str:
    """Notebook 01 §4: the LLM judge against the verifier (``feedback.calibrate``'s table)."""
    if cal is None or len(cal) == 0:
        return "**Nothing to calibrate**: no response was judged by both the LLM judge and the verifier."
    parsed = int(cal["parsed"].sum())
    if not parsed:
        return (f"**Nothing to calibrate**: the LLM judge parsed none of the {int(cal['n'].sum())} aspect judgements "
                "that the verifier also scored, so agreement and kappa are undefined (NaN, not zero). Calibration "
                "needs a judge that answers in JSON: set `feedback.judge_url` to a served instruct model.")
    rows = cal[cal["parsed"] > 0]
    parts = [f"{r.aspect.replace('_', ' ')}: exact {100 * r.exact:.0f}%, within one {100 * r.within_1:.0f}%, "
             f"mean difference {r.mean_diff:+.2f}, κ {r.kappa_quadratic:.2f} (n={int(r.parsed)})"
             for r in rows.itertuples()]
    bias = sum(r.mean_diff * r.parsed for r in rows.itertuples()) / parsed
    lean = "more lenient than" if bias > 0.25 else "stricter than" if bias < -0.25 else "about as strict as"
    return (f"**Against the verifier, on {parsed} parsed aspect judgements, the LLM judge is {lean} the verifier** "
            f"(mean difference {bias:+.2f} points). " + "; ".join(parts) + ".")


def consensus(agreements: dict, k: int) -> str:
    """Notebook 01 §4: the k sampled judgements per response (``{aspect: feedback.agreement(...)}``)."""
    if k <= 1:
        return ("**No consensus votes**: `feedback.consensus_k` is 1 in this recipe, so each response has one "
                "judgement and there is no agreement to measure. Set `feedback.consensus_k: 3` (with a judge that "
                "parses, e.g. `feedback.judge_url`) to sample three judgements per response and keep the median.")
    usable = {a: v for a, v in agreements.items() if v["items"]}
    if not usable:
        return (f"**No agreement to measure**: with `consensus_k = {k}`, no response had two parsed votes on one "
                "aspect (the judge's votes failed to parse). A judge that parses is needed first.")
    parts = [f"{a.replace('_', ' ')}: all {k} votes agree on {100 * v['exact']:.0f}% of {v['items']} responses, "
             f"α {v['alpha']:.2f}" for a, v in usable.items()]
    least = min(usable, key=lambda a: usable[a]["exact"])
    return (f"**Self-agreement of {k} sampled judgements**: " + "; ".join(parts)
            + f". The least consistent aspect is {least.replace('_', ' ')}: the most subjective for this judge.")


def learned_judge(reports: dict[str, dict], aspect: str = "logical_correctness", bar: float = 0.6) -> str:
    """Notebook 01 §6: the learned judge against the verifier (``{label: judge_model.judge_report(...)}``, the
    greedy judge first), read on ``aspect`` against issue 19's bar on Krippendorff's alpha."""
    if not reports:
        return "**No learned judge** in this recipe (`feedback.learned_judge` is null)."
    parts = []
    for label, rep in reports.items():
        a = rep["aspects"].get(aspect)
        if a is None or not a["parse"]["k"]:
            parts.append(f"{label}: no parsed {aspect.replace('_', ' ')} judgement")
            continue
        lo, hi = a["alpha_ci"]
        verdict = "above the bar" if lo >= bar else "below the bar" if hi < bar else "the interval spans the bar"
        parts.append(f"{label}: α {a['alpha']:.2f} [{lo:.2f}, {hi:.2f}] ({verdict} of {bar}), exact agreement "
                     f"{100 * a['exact_rate']['rate']:.0f}%, parse {100 * a['parse']['rate']:.0f}% "
                     f"(n {a['parse']['n']})")
    first = next(iter(reports.values()))["names_first_wrong_step"]
    named = (f" On math responses the verifier marks wrong, the greedy judge's critique names the verifier's first "
             f"wrong step {of(first)}." if first["n"] else "")
    return (f"**The learned judge against the verifier on {aspect.replace('_', ' ')}** (responses it never saw in "
            "training): " + "; ".join(parts) + "." + named + " Alpha is 1 for perfect agreement and 0 for agreement "
            "at chance; the interval is a bootstrap over responses.")


# ------------------------------------------------------------------------------------ Notebook 02: reflection and pairs


def search(stats: dict) -> str:
    """Notebook 02 §2: does a refinement beat its draft (``reflection.search_stats``)?"""
    beat, worse = stats["refinement_beats_parent"], stats["refinement_worse_than_parent"]
    if not beat["n"]:
        return ("**No refinement was scored** (every prompt stopped before refining, or every judgement failed), so "
                "this search says nothing about reflection. More prompts (`reflection.n_prompts`) or a weaker "
                "threshold (`reflection.threshold`) give it refinements to score.")
    if beat["ci_low"] > worse["ci_high"]:
        verdict = "in this world reflection pays"
    elif worse["ci_low"] > beat["ci_high"]:
        verdict = "in this world reflection does not yet pay"
    else:
        verdict = "neither direction is clear"
    same = 1 - beat["rate"] - worse["rate"]
    out = [f"**Refinements beat their drafts {pct(beat)} of the time and are worse {pct(worse)} of the time** "
           f"({beat['n']:,} refinements, {100 * same:.0f}% unchanged; mean reward change "
           f"{stats['mean_reward_gain']:+.3f}): {verdict}."]
    fixed, best = stats["wrong_draft_fixed"], stats["best_is_refinement"]
    among = stats["best_is_refinement_among_refined"]
    if fixed["n"]:
        out.append(f"Refining a wrong draft gave a right answer in {of(fixed, 'cases')}.")
    if best["n"] and best["k"]:
        out.append(f"Yet the best candidate of a prompt is a refinement on {of(best, 'prompts')}"
                   + (f" ({pct(among)} of those refined)" if among["n"] else "")
                   + ": a search keeps the rare refinement that fixes a draft and drops the rest, so reflection can "
                     "feed the pairs even when most refinements are worse.")
    elif best["n"]:
        out.append("No prompt's best candidate is a refinement: reflection added nothing to the pairs here.")
    if stats["parse_failures"]:
        out.append(f"{stats['parse_failures']:,} candidates had a judge parse failure and are not scored.")
    return " ".join(out)


def refinement_aspects(frame) -> str:
    """Notebook 02 §2: which aspects reflection repairs (``widgets.refinement_frame``)."""
    f = frame[frame["parsed"]]
    if f.empty:
        return "**No scored refinement**, so there is nothing to break down by aspect."
    rows = []
    for aspect, g in f.groupby("aspect", sort=False):
        d = [float(x) for x in g["delta"]]
        rows.append((aspect, rate(sum(x > 0 for x in d), len(d)), rate(sum(x < 0 for x in d), len(d)),
                     sum(d) / len(d)))
    best = max(rows, key=lambda r: r[1]["rate"])
    worst = max(rows, key=lambda r: r[2]["rate"])
    out = [f"**{best[0].replace('_', ' ')} improves most often**: {pct(best[1])} of refinements score higher on it "
           f"(mean change {best[3]:+.2f})."]
    if worst[2]["k"] and worst[0] == best[0]:
        out.append(f"It also gets worse most often: {pct(worst[2])} lower.")
    elif worst[2]["k"]:
        out.append(f"{worst[0].replace('_', ' ')} gets worse most often: {pct(worst[2])} lower (mean change "
                   f"{worst[3]:+.2f}).")
    if all(r[3] < 0 for r in rows):
        out.append("Every aspect loses on average: the critique alone does not yet guide this policy's rewrites.")
    return " ".join(out)


def pairs(by_policy: dict[str, list[dict]], n_prompts: int, policy: str) -> str:
    """Notebook 02 §3: what each pair policy yields, right-over-wrong pairs and length bias."""
    if not any(by_policy.values()):
        return (f"**No pair from {n_prompts} prompts under any policy**: every prompt's candidates tie or miss "
                "`pairs.min_margin`. DPO has nothing to train on; a larger search gives it pairs.")
    y = {k: pair_yield(v, n_prompts) for k, v in by_policy.items()}
    most = max(y, key=lambda k: y[k]["pairs"])
    out = [f"**{policy}** (what DPO trains on) gives {y[policy]['pairs']:,} pairs from {n_prompts} prompts, "
           f"{y[policy]['right_over_wrong']:,} of them a right answer over a wrong one; {most} gives the most "
           f"({y[most]['pairs']:,})."]
    if "no_reflection" in y and policy in y and policy != "no_reflection":
        gain = y[policy]["right_over_wrong"] - y["no_reflection"]["right_over_wrong"]
        out.append(f"Against samples only (no_reflection), reflection adds {gain:+,} right-over-wrong pairs.")
    lb = pair_lengths(by_policy[policy]) if by_policy[policy] else None
    if lb and lb["chosen_longer"]["n"]:
        cl = lb["chosen_longer"]
        if cl["ci_low"] > 0.5:
            out.append(f"Chosen is the longer response in {pct(cl)} of its pairs, more than half: DPO can learn "
                       "length along with quality; compare response lengths before and after training.")
        elif cl["ci_high"] < 0.5:
            out.append(f"Chosen is the longer response in only {pct(cl)} of its pairs: no pull towards length.")
        else:
            out.append(f"Chosen is the longer response in {pct(cl)} of its pairs: no length bias shown.")
    return " ".join(out)


def budget(cmp: dict) -> str:
    """Notebook 02 §4: where the refinement budget should go (``reflection.budget_comparison``)."""
    names = {"low_best": "lowest best sample first", "variance": "most varied rewards first"}
    gain = cmp["full"] - cmp["samples_only"]
    if gain <= 0:
        return (f"**Refinement added no {cmp['metric'].replace('_', '-')} pair** ({cmp['samples_only']} from the "
                "samples alone, the same with every refinement), so no prompt order can save anything here.")
    parts = []
    for how in ("low_best", "variance"):
        s = cmp[f"{how}_saving"]
        effect = (f"{100 * s:.0f}% less than random order" if s > 0 else
                  f"{-100 * s:.0f}% more than random order" if s < 0 else "the same as random order")
        parts.append(f"{names[how]} needs {cmp[f'{how}_budget']:,.0f} ({effect})")
    better = [names[h] for h in ("low_best", "variance") if cmp[f"{h}_saving"] > 0]
    worse = [h for h in ("low_best", "variance") if cmp[f"{h}_saving"] < 0]
    verdict = (" and ".join(better) + " beats random" if better else
               "both prioritised orders are worse than random" if len(worse) == 2 else
               "neither prioritised order beats random")
    return (f"**To reach {100 * cmp['fraction']:.0f}% of what refinement adds ({cmp['samples_only']} → "
            f"{cmp['full']} {cmp['metric'].replace('_', '-')} pairs), random order needs {cmp['random_budget']:,.0f} "
            f"of {cmp['full_budget']:,} generations (mean of its shuffles); " + "; ".join(parts)
            + f": {verdict}.** One search and no interval: a few percent either way is within what another seed "
              "would change.")


# -------------------------------------------------------------------------------------------------- Notebook 04: rounds


def rounds(rows: list[dict]) -> str:
    """Notebook 04 §1: dev math from M0 to the last round (``rounds.run_rounds``'s rows)."""
    if len(rows) < 2:
        return "**No trained round yet**: only M0 is evaluated; `rounds.n_rounds` ≥ 1 trains M1."
    first, last = rows[0], rows[-1]
    d = rate_diff(first["math_accuracy"], last["math_accuracy"])
    path = " → ".join(f"{r['policy']} {100 * r['math_accuracy']['rate']:.1f}%" for r in rows)
    word = {"higher": "a gain beyond the interval", "lower": "a loss beyond the interval",
            "no difference shown": "inside the interval: no change shown"}[direction(d["ci_low"], d["ci_high"])]
    out = [f"**Dev math {path}: {last['policy']} − {first['policy']} = {_diff_text(d)}, {word}** "
           f"(n={last['math_accuracy']['n']}, unpaired interval)."]
    if "bio_claims_supported" in first and "bio_claims_supported" in last:
        b = rate_diff(first["bio_claims_supported"], last["bio_claims_supported"])
        out.append(f"Bio claims supported: {pct(first['bio_claims_supported'])} → {pct(last['bio_claims_supported'])}"
                   f" ({_diff_text(b)}, {direction(b['ci_low'], b['ci_high'])}).")
    return " ".join(out)


def variant_rounds(variants: dict[str, list[dict]]) -> str:
    """Notebook 04 §1: the last round of each variant against RLRF's (``results.json``'s ``round_variants``)."""
    if "rlrf" not in variants or len(variants["rlrf"]) < 2:
        return "**No RLRF round to compare** the ablations with."
    ref = variants["rlrf"][-1]
    others = {v: rows[-1] for v, rows in variants.items() if v != "rlrf" and rows and rows[-1]["round"] > 0}
    if not others:
        return ("**Only RLRF ran**: set `rounds.variants: [rlrf, no_reflection, scalar, rs_sft]` to run its "
                "ablations from the same M0.")
    parts, shown = [], []
    for v, r in others.items():
        d = rate_diff(r["math_accuracy"], ref["math_accuracy"])
        parts.append(f"{v} {r['policy']} {pct(r['math_accuracy'])} (RLRF − {v}: {_diff_text(d)})")
        if direction(d["ci_low"], d["ci_high"]) != "no difference shown":
            shown.append(f"RLRF is {direction(d['ci_low'], d['ci_high'])} than {v}")
    verdict = "; ".join(shown) if shown else "RLRF is within the interval of every ablation"
    return (f"**After {ref['round']} rounds, RLRF {ref['policy']} {pct(ref['math_accuracy'])} on dev math: "
            f"{verdict}.** " + "; ".join(parts) + ".")


# --------------------------------------------------------------------------------- Notebook 05: benchmarks and analysis


def claims(rows: list[dict]) -> str:
    """Notebook 05 §2: the paper's claims in miniature (``analysis.headline_claims``)."""
    if not rows:
        return ("**No claim can be tested**: the run has no trained round. Run notebook 04 (`rounds.n_rounds` ≥ 1) "
                "before this one.")
    by = {}
    for c in rows:
        by.setdefault(c["verdict"], []).append(c)
    counts = ", ".join(f"{len(v)} {k}" for k, v in by.items())
    out = [f"**Of {len(rows)} claims: {counts}.**"]
    for verdict in ("holds", "under the bar", "reversed"):
        for c in by.get(verdict, []):
            said = f"above 0 but under its bar of {c['bar']:+.2f}" if verdict == "under the bar" else verdict
            out.append(f"{c['claim']}: {c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], {said}.")
    if not by.get("holds"):
        out.append("None of the paper's claims holds in this run: each difference's interval includes zero or the "
                   "difference falls short of its bar.")
    if by.get("no data"):
        out.append(f"{len(by['no data'])} have no paired items (e.g. FactScore without scored bios).")
    return " ".join(out)


def token_shift(shift: dict, aligned: str, base: str = "M0") -> str:
    """Notebook 05 §3: how far the aligned model's greedy tokens moved from the base's (``analysis.token_shift``)."""
    o = shift["overall"]
    if not shift["n_positions"]:
        return f"**No tokens to compare**: {aligned} produced no greedy tokens on these prompts."
    if aligned == base:
        return f"**No trained model to compare**: {base} against itself shifts nothing."
    out = [f"**{pct(o['unshifted'])} of {aligned}'s greedy tokens are the ones {base} would choose** "
           f"({shift['n_positions']:,} tokens); {pct(o['marginal'])} marginal, {pct(o['shifted'])} shifted."]
    if o["shifted"]["k"]:
        top = max(shift["shifted_kind_share"], key=lambda k: shift["shifted_kind_share"][k]["rate"])
        out.append(f"Most shifted tokens are {top} ({pct(shift['shifted_kind_share'][top])} of them).")
    if o["unshifted"]["ci_low"] > 0.95:
        out.append("Training barely moved the distribution: whatever changed, it is in a few tokens.")
    return " ".join(out)


def blind_spot(spot: dict, flipped: int, lucky: int) -> str:
    """Notebook 05 §4: how often each scorer ranks a wrong answer above a right one (``analysis.blind_spot``);
    ``flipped`` fine-grained "wrong above right" pairs, ``lucky`` of them right answers reached through a wrong step."""
    if not spot["pairs"]:
        return ("**No right/wrong pair** in the pool (every prompt's candidates are all right or all wrong), so no "
                "scorer can be caught ranking a wrong answer first.")
    parts = [f"{name}: {pct(v['wrong_above'])} wrong above right"
             + (f", {v['unscored']} unscored" if v["unscored"] else "")
             for name, v in spot.items() if isinstance(v, dict)]
    out = [f"**On {spot['pairs']:,} right/wrong pairs from {spot['prompts']} prompts**: " + "; ".join(parts) + "."]
    if flipped:
        out.append(f"Of the fine-grained reward's {flipped} wrong-above-right pairs, {lucky} "
                   f"({100 * lucky / flipped:.0f}%) are right answers reached through a wrong step: the verifier "
                   "penalises the step, by design, not a judge fooled by fluent wrong work.")
    return " ".join(out)


def positive_controls(rows: list[dict], baseline: str = "M0") -> str:
    """Notebook 03's positive controls (:func:`rlrf_nb.analysis.paired_math_table` rows): does training on data
    known to be good raise the baseline on test? If not, a null result of the method is uninformative."""
    trained = [r for r in rows if r["model"] != baseline and r["measure"] == "every step"]
    if not trained:
        return ("**No positive control was trained** (`positive_controls = False`): without one, a method that "
                "fails here could fail because nothing at these settings can move this policy.")
    parts = [f"{r['model']} {_pts(r['diff'])} [{_pts(r['diff_low'])}, {_pts(r['diff_high'])}] points" for r in trained]
    raised = [r["model"] for r in trained if r["diff_low"] > 0]
    head = f"On {trained[0]['n']:,} test problems, every step right, paired against {baseline}: " + "; ".join(parts)
    if len(raised) == len(trained):
        return head + (". **Both controls raise the policy**: the stage can move it, so a method's null result "
                       "here is a result about the method.")
    if not raised:
        return head + (". **Neither control raises the policy**: at these settings (prompts, learning rate, "
                       "epochs) training on known-good data does not move it, so a null result of RLRF below says "
                       "nothing about RLRF. Raise the budget or the learning rate until a control holds "
                       "(`docs/experiments.md`, 'Positive controls').")
    return head + f". Only {', '.join(raised)} raises the policy: read the method's null result with care."
