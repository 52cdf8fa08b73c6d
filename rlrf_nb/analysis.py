"""Analyses that make RLRF's claim testable (notebook 05): paired tests against M0 on the *same* items and the paper's
table, URIAL's token distribution shift (arXiv 2312.01552) by token kind (RLRF claims its shifts land on substance, the
numbers, not on style) and the reward-model blind spot (a scorer ranking a wrong math solution above a right one)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import pandas as pd
import torch

from rlrf_nb.config import ONLINE_VARIANTS, VARIANT_LABELS, policy_rank
from rlrf_nb.generation import render_prompts
from rlrf_nb.pairs import right_wrong_pairs
from rlrf_nb.stats import bootstrap, bootstrap_ci, mean, rate

# ------------------------------------------------------------------------------------------- Intervals and paired tests


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact (binomial) McNemar test for paired 0/1 outcomes: only the discordant items count.
    ``b_only`` = items b gets right and a wrong; the p-value is two-sided."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    n = a_only + b_only
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    k = min(a_only, b_only)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * p)}


def paired_test(a: Sequence[float | None], b: Sequence[float | None], n_boot: int = 2000, seed: int = 0) -> dict:
    """b minus a on the same items (items where either is None are dropped): the mean difference with a paired
    bootstrap 95% interval and two-sided p-value; for 0/1 data also the exact McNemar p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None]
    diffs = [y - x for x, y in pairs]
    ci = bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
    n = len(diffs)
    if n:
        boots = bootstrap(diffs, mean, n_boot, seed + 1)
        p = min(1.0, 2 * min(sum(d <= 0 for d in boots), sum(d >= 0 for d in boots)) / n_boot)
    else:
        p = float("nan")
    out = {"diff": ci["value"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": n, "p_bootstrap": p}
    if pairs and all(v in (0.0, 1.0) for pair in pairs for v in pair):
        out["p_mcnemar"] = mcnemar_exact([x == 1.0 for x, _ in pairs], [y == 1.0 for _, y in pairs])["p_value"]
    return out


def results_table(per_item: dict[str, dict[str, list]], baseline: str = "M0", n_boot: int = 2000, seed: int = 0):
    """The paper-style table. ``per_item[model][metric]`` is the list of per-item values (same items in the same
    order for every model; None = not scored). Returns ``(display, long)``: a DataFrame of
    ``"mean [lo, hi]"`` strings with the paired difference to ``baseline`` and its p-value, and the long
    numeric table behind it (one row per model and metric)."""
    rows = []
    base = per_item.get(baseline, {})
    for model, metrics in per_item.items():
        for metric, values in metrics.items():
            ci = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            row = {"model": model, "metric": metric, **ci}
            if model != baseline and metric in base:
                if len(base[metric]) != len(values):
                    raise ValueError(f"{model}/{metric}: {len(values)} items, baseline {baseline} has "
                                     f"{len(base[metric])}: a paired test needs the same items")
                t = paired_test(base[metric], values, n_boot=n_boot, seed=seed)
                row.update(diff=t["diff"], diff_low=t["ci_low"], diff_high=t["ci_high"],
                           p=t.get("p_mcnemar", t["p_bootstrap"]))
            rows.append(row)
    long = pd.DataFrame(rows)

    def cell(r):
        s = f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        if "diff" in r and r["diff"] == r["diff"]:
            s += f"  Δ{r['diff']:+.3f} p={r['p']:.2f}"
        return s

    display = long.assign(cell=long.apply(cell, axis=1)).pivot(index="model", columns="metric", values="cell")
    return display.reindex(list(per_item)), long


# ------------------------------------------------------------------------------------- Token distribution shift (URIAL)

_NUMERIC = re.compile(r"^[\s0-9+\-*/=<>().,#%$]+$")


def token_kind(piece: str) -> str:
    """``"digits/operators"`` for tokens made only of digits, arithmetic and ``<<=>>#`` signs (the substance of a
    solution), ``"whitespace"`` for blanks, else ``"words/punctuation"``."""
    if not piece.strip():
        return "whitespace"
    return "digits/operators" if _NUMERIC.match(piece) else "words/punctuation"


@torch.inference_mode()
def token_shift(base, aligned, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 160) -> dict:
    """URIAL's token distribution shift of ``aligned`` from ``base`` on ``conversations``: the rank of each greedy
    aligned token under the base model given the same prefix classifies the position as unshifted (1), marginal (2-3) or
    shifted (> 3). Returns the rates overall and per token kind, and the positions."""
    prompts = render_prompts(tokenizer, conversations)
    special = set(tokenizer.all_special_ids)
    positions = []
    for i, prompt in enumerate(prompts):
        # Unbatched greedy decoding that keeps the generated ids: re-tokenizing decoded text can give other
        # (canonical) ids than the ones the model produced, which would show up as spurious shifts.
        p_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        gen = aligned.generate(p_ids, max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        r_ids = [t for t in gen[0, p_ids.shape[1]:].tolist()]
        while r_ids and r_ids[-1] in special:
            r_ids.pop()
        if not r_ids:
            continue
        ids = torch.cat([p_ids[0], torch.tensor(r_ids)])[None]
        n_p = p_ids.shape[1]
        logits_base = base(ids).logits[0, n_p - 1:-1].float()
        target = torch.tensor(r_ids)
        ranks = (logits_base > logits_base.gather(1, target[:, None])).sum(1) + 1
        for t, (tok, rank) in enumerate(zip(r_ids, ranks.tolist())):
            piece = tokenizer.decode([tok])
            positions.append({"response": i, "position": t, "token": piece, "kind": token_kind(piece),
                              "base_rank": rank,
                              "class": "unshifted" if rank == 1 else "marginal" if rank <= 3 else "shifted"})
    return {"positions": positions, "responses": len(prompts), **shift_summary(positions)}


def shift_summary(positions: list[dict]) -> dict:
    """Shares of unshifted / marginal / shifted positions, overall and per token kind, and where the shifted
    positions land (the share of shifted tokens that are digits/operators)."""
    def shares(ps):
        n = len(ps)
        return {c: rate(sum(p["class"] == c for p in ps), n) for c in ("unshifted", "marginal", "shifted")}

    kinds = sorted({p["kind"] for p in positions})
    shifted = [p for p in positions if p["class"] == "shifted"]
    return {"overall": shares(positions), "by_kind": {k: shares([p for p in positions if p["kind"] == k])
                                                       for k in kinds},
            "shifted_kind_share": {k: rate(sum(p["kind"] == k for p in shifted), len(shifted)) for k in kinds},
            "n_positions": len(positions)}


# ---------------------------------------------------------------------------------- The reward-model blind spot on math


def blind_spot(pool: list, scorers: dict[str, Callable]) -> dict:
    """For every prompt, every (right, wrong) pair of candidates by final answer: how often each scorer ranks the
    wrong one above the right one (``wrong_above``), ties them (``tie``), or cannot score one of them
    (``unscored``, e.g. a judge parse failure). ``scorers`` map a name to ``candidate -> float | None``."""
    pairs = right_wrong_pairs(pool)
    out = {"pairs": len(pairs), "prompts": len({r.prompt_id for r, _ in pairs})}
    for name, score in scorers.items():
        scored = [(score(r), score(w)) for r, w in pairs]
        ok = [(a, b) for a, b in scored if a is not None and b is not None]
        out[name] = {"wrong_above": rate(sum(b > a for a, b in ok), len(ok)),
                     "tie": rate(sum(b == a for a, b in ok), len(ok)),
                     "unscored": len(scored) - len(ok)}
    return out


# The issue's bars for the tiny world's headline: M2 - M0 on held-out math and on FactScore.
HEADLINE_BARS = {"math_perfect": 0.10, "gsm8k_strict": 0.10, "factscore": 0.08}


def headline_claims(per_item: dict[str, dict[str, list]], final: str = "M2",
                    ablations: dict[str, str] | None = None,
                    metrics: tuple[str, ...] = ("math_perfect", "gsm8k_strict", "factscore"),
                    n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """The paper's claims in miniature, each a paired difference on the same items with a 95% bootstrap interval:
    ``final`` against M0 (bars: :data:`HEADLINE_BARS`) and against each ablation's last round (``ablations``:
    ``{"reflection helps": "no reflection M2", ...}``). A claim *holds* when its interval excludes 0 on the right side
    and it reaches its bar (if any); it is *under the bar* when its interval excludes 0 on the right side but the
    difference falls short of its bar; else it is not shown or reversed, and "no data" (difference NaN) when no item
    has a value for both models. Pairs whose models are missing are skipped."""
    ablations = ablations or {}
    todo = [(f"{final} beats M0", "M0")] + [(f"{name} ({final} vs {other})", other) for name, other in
                                                ablations.items()]
    out = []
    for claim, other in todo:
        if final not in per_item or other not in per_item:
            continue
        for m in metrics:
            if m not in per_item[final] or m not in per_item[other]:
                continue
            t = paired_test(per_item[other][m], per_item[final][m], n_boot=n_boot, seed=seed)
            bar = HEADLINE_BARS.get(m) if other == "M0" else None
            if t["ci_low"] > 0:
                verdict = "holds" if bar is None or t["diff"] >= bar else "under the bar"
            else:
                verdict = "reversed" if t["ci_high"] < 0 else "not shown"
            if not t["n"]:  # e.g. FactScore with no scored bio: nothing to compare, said so rather than "not shown"
                verdict = "no data"
            out.append({"claim": f"{claim}, {m}", "a": final, "b": other, "metric": m, "diff": t["diff"],
                        "ci_low": t["ci_low"], "ci_high": t["ci_high"], "n": t["n"],
                        "p": t.get("p_mcnemar", t["p_bootstrap"]), "bar": bar, "verdict": verdict})
    return out


def paired_math_table(records: dict[str, list[dict]], baseline: str = "M0", n_boot: int = 2000, seed: int = 0):
    """Held-out math per model (``{name: records}`` from :func:`rlrf_nb.rounds.evaluate_test_math`, same problems in
    the same order): final-answer and every-step-right accuracy with 95% bootstrap intervals, and each model's paired
    difference to ``baseline`` on the same problems. Returns a DataFrame, one row per model and measure."""
    rows = []
    base = records[baseline]
    for name, recs in records.items():
        if [r["id"] for r in recs] != [r["id"] for r in base]:
            raise ValueError(f"{name}: its problems differ from {baseline}'s; a paired test needs the same items")
        for measure, key in (("final answer", "correct"), ("every step", "perfect")):
            vals = [float(r[key]) for r in recs]
            row = {"model": name, "measure": measure, **bootstrap_ci(vals, n_boot=n_boot, seed=seed)}
            if name != baseline:
                t = paired_test([float(r[key]) for r in base], vals, n_boot=n_boot, seed=seed)
                row.update(diff=t["diff"], diff_low=t["ci_low"], diff_high=t["ci_high"],
                           p=t.get("p_mcnemar", t["p_bootstrap"]),
                           verdict="raises" if t["ci_low"] > 0 else "lowers" if t["ci_high"] < 0 else "no difference")
            rows.append(row)
    return pd.DataFrame(rows)


def variant_comparison(per_item: dict[str, dict[str, list]], round_variants: dict[str, list[dict]],
                       final: int | None = None,
                       metrics: tuple[str, ...] = ("gsm8k_strict", "math_perfect", "factscore"),
                       n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Every round-loop variant's last round against M0 on the same test items, with the compute it spent (issue 20:
    "better per unit of compute"): ``{policy: row}``, per metric the test value and the paired difference to M0 with
    its 95% interval, then the compute summed over the variant's rounds (``round_variants``: ``results.json``'s rows
    per variant) and the math gain per million generated tokens. ``per_item``: notebook 05's
    :func:`rlrf_nb.evals.suite.evaluate_suite` values (RLRF's rounds ``M<t>``, a variant's ``<label> M<t>``). Round 1's
    search with M0 is run once and shared by the pair-based variants (:func:`rlrf_nb.rounds.search_args`), so each of
    them is charged its full wall time (the longest round-1 ``search_seconds``: the variant that ran it), as its tokens
    already are. M0's row has the values and no compute."""
    shared = max((r["search_seconds"] for v, rows in round_variants.items() if v not in ONLINE_VARIANTS
                  for r in rows if r.get("round") == 1 and r.get("search_seconds") is not None), default=0.0)
    out = {}
    if "M0" in per_item:
        out["M0"] = {"variant": "M0", "rounds": 0,
                     **{m: mean([v for v in per_item["M0"][m] if v is not None]) for m in metrics
                        if m in per_item["M0"]}}
    for variant, rows in round_variants.items():
        trained = [r for r in rows if r.get("round", 0) > 0 and (final is None or r["round"] <= final)]
        if not trained:
            continue
        t = max(r["round"] for r in trained)
        name = f"M{t}" if variant == "rlrf" else f"{VARIANT_LABELS.get(variant, variant)} M{t}"
        if name not in per_item:
            continue
        wall = sum(r.get("round_seconds") or 0.0 for r in trained)
        if variant not in ONLINE_VARIANTS:
            wall += sum(shared - (r.get("search_seconds") or 0.0) for r in trained if r["round"] == 1)
        row = {"variant": variant, "rounds": t, "wall_seconds": round(wall, 1),
               "generated_tokens": sum(r.get("generated_tokens") or 0 for r in trained),
               "judge_calls": sum(r.get("judged") or 0 for r in trained),
               "parse_failures": sum(r.get("parse_failures") or 0 for r in trained)}
        for m in metrics:
            if m not in per_item[name] or "M0" not in per_item or m not in per_item["M0"]:
                continue
            test = paired_test(per_item["M0"][m], per_item[name][m], n_boot=n_boot, seed=seed)
            row |= {m: mean([v for v in per_item[name][m] if v is not None]), f"{m}_diff": test["diff"],
                    f"{m}_low": test["ci_low"], f"{m}_high": test["ci_high"]}
        if "gsm8k_strict_diff" in row and row["generated_tokens"]:
            row["gsm8k_strict_diff_per_mtok"] = row["gsm8k_strict_diff"] / (row["generated_tokens"] / 1e6)
        out[name] = row
    return out


def comparison_frame(comparison: dict[str, dict], metrics: tuple[str, ...] = ("gsm8k_strict", "math_perfect",
                                                                               "factscore")):
    """:func:`variant_comparison` as a readable table (M0, RLRF, then the variants): per policy, each metric's test
    value and its difference to M0 as ``+0.012 [-0.010, +0.034]``, then the compute columns."""
    rows = []
    for name, r in sorted(comparison.items(), key=lambda kv: policy_rank(kv[0])):  # results.json sorts its keys
        row = {"policy": name, "rounds": r["rounds"]}
        for m in metrics:
            if m in r:
                row[m] = round(r[m], 3)
            if f"{m}_diff" in r:
                row[f"{m} Δ vs M0"] = f"{r[f'{m}_diff']:+.3f} [{r[f'{m}_low']:+.3f}, {r[f'{m}_high']:+.3f}]"
        rows.append(row | {k: r.get(k) for k in ("wall_seconds", "generated_tokens", "judge_calls",
                                                  "parse_failures")})
    return pd.DataFrame(rows).set_index("policy")
