"""Issue 7's budget experiment (docs/experiments.md, "a 3,000-prompt search"): one reflection search with the
demo's settings on N math prompts that M0 never saw (the tiny world's train split after M0's mix), then one
training per config from M0, each scored on the 200 dev problems with a paired test against M0.

    .venv/bin/python scripts/big_search.py --n 3000 --out runs/big_search \\
        "method=rs_sft,learning_rate=3e-4,epochs=3,batch_size=32" "learning_rate=3e-5,epochs=2"

A config is comma-separated ``dpo`` fields (``loss_type`` and ``loss_weights`` take ``+``-separated lists);
``pairs=right_over_wrong`` keeps only pairs whose chosen answer is right and rejected answer wrong; ``pairs=<policy>``
builds the pairs under another pair policy (``no_reflection``: samples only; ``scalar``: ranked by the overall
score), the round-1 data of notebook 04's variants. ``pairs=gold`` is issue 16's positive controls: DPO on a
reference solution against M0's lowest-reward wrong candidate per prompt (``training.gold_pairs``), or with
``method=rs_sft`` SFT on the reference solutions (``training.gold_candidates``). ``--split test`` scores the 500
test problems (where claims are read) instead of the 200 dev problems. The search
is stored in ``--out`` and reused by a rerun. About 8 min for the search of 3,000 prompts on 2 CPU cores, and
1-4 min per config.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

from rlrf_nb.analysis import paired_test
from rlrf_nb.config import load_recipe
from rlrf_nb.models import load_policy, model_fingerprint
from rlrf_nb.pairs import build_pairs
from rlrf_nb.reflection import reflection_search
from rlrf_nb.rounds import evaluate_policy, evaluate_test_math
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.store import RunStore
from rlrf_nb.tiny_world import build_world
from rlrf_nb.training import gold_candidates, gold_pairs, override_stage, rs_sft_rows, save_checkpoint, train_stage
from rlrf_nb.verifier import make_judge

ROOT = Path(__file__).resolve().parents[1]


def parse_config(text: str, base):
    kv = dict(item.split("=", 1) for item in text.split(","))
    which = kv.pop("pairs", "all")
    fields = {}
    for key, value in kv.items():
        if key in ("loss_type", "loss_weights"):
            fields[key] = [float(v) if key == "loss_weights" else v for v in value.split("+")]
        elif key == "method":
            fields[key] = value
        else:
            current = getattr(base, key)
            fields[key] = float(value) if current is None else type(current)(value)
    return override_stage(base, **fields), which  # a learning_rate given is DPO's too


def dev_correct(store, policy_id: str) -> dict[str, float]:
    rows = (json.loads(line) for line in store.path("eval", policy_id, "math_dev.jsonl").open())
    return {r["id"]: float(bool(r["correct"])) for r in rows}


def scored(split, model, tok, path, recipe, world, store, policy_id) -> dict[str, dict]:
    """{problem id: {"correct", "perfect"}} on ``split`` (dev: the rounds' 200 problems; test: eval.n_math)."""
    if split == "dev":
        evaluate_policy(model, tok, model_fingerprint(path), recipe, world, store, policy_id)
        return {i: {"correct": v, "perfect": float("nan")} for i, v in dev_correct(store, policy_id).items()}
    recs = evaluate_test_math(model, tok, model_fingerprint(path), recipe, world, store, policy_id)
    return {r["id"]: {"correct": float(r["correct"]), "perfect": float(r["perfect"])} for r in recs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "tiny.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "big_search"))
    ap.add_argument("--split", choices=("dev", "test"), default="dev", help="where each model is scored")
    ap.add_argument("--policy", default=None, help="a later round: the checkpoint that searches, starts training "
                                                   "and is DPO's reference (default M0); scores are still paired "
                                                   "against M0")
    ap.add_argument("--skip", type=int, default=0, help="skip this many fresh prompts (a later round's own prompts)")
    args = ap.parse_args()

    recipe = load_recipe(args.recipe)
    world = build_world(recipe.world)
    first = recipe.m0.n_math + args.skip
    prompts = world.math["train"][first:first + args.n]
    if len(prompts) < args.n:
        raise SystemExit(f"only {len(prompts)} train problems lie outside M0's mix; lower --n")
    store = RunStore(args.out)
    rubrics = load_rubric_set(ROOT / "data" / "rubrics")
    judge = make_judge(recipe.feedback, rubrics, {p["name"]: p for p in world.people})
    m0_path = str(ROOT / recipe.m0.pretrained)
    m0, tok = load_policy(m0_path)
    start_path = str(args.policy or m0_path)
    searcher = m0 if start_path == m0_path else load_policy(start_path)[0]
    t0 = time.monotonic()
    pool = reflection_search(store, searcher, tok, model_fingerprint(start_path), prompts, judge, rubrics,
                             recipe.reflection, seed=recipe.run.seed + args.skip // args.n,
                             weights=recipe.feedback.weights,
                             policy_id="M0" if args.policy is None else "start")["pool"]
    rows, pairs = rs_sft_rows(pool), build_pairs(pool, recipe.pairs.policy, round_=1)
    print(f"search: {len(prompts)} prompts, {len(pool)} candidates, {len(pairs)} pairs, {len(rows)} RS-SFT rows, "
          f"{time.monotonic() - t0:.0f} s")
    steps = {ex.id: len(ex.meta["steps"]) for ex in prompts}
    solved, total = collections.Counter(steps[r["prompt_id"]] for r in rows), collections.Counter(steps.values())
    print("prompts with a perfect candidate, by steps:", {k: f"{solved[k]}/{total[k]}" for k in sorted(total)})
    base = scored(args.split, m0, tok, m0_path, recipe, world, store, "M0")
    ids = sorted(base)
    print(f"M0: {args.split} math {sum(base[i]['correct'] for i in ids) / len(ids):.3f}")
    for text in args.configs:
        cfg, which = parse_config(text, recipe.dpo)
        data = pool
        if which == "gold":  # the positive controls: data known to be good
            use, data = gold_pairs(prompts, pool), gold_candidates(prompts) if cfg.method == "rs_sft" else pool
        elif which in ("all", "right_over_wrong"):
            use = pairs if which == "all" else [p for p in pairs if p.get("chosen_correct") is True
                                                  and p.get("rejected_correct") is False]
        else:
            use = build_pairs(pool, which, round_=1)
        t1 = time.monotonic()
        model, tok = load_policy(start_path)
        ref = load_policy(start_path)[0] if cfg.method == "dpo" else None
        out = train_stage(model, tok, data, use, cfg, store.path("trainer_tmp", text), ref_model=ref)
        path = save_checkpoint(out["model"], tok, store.path("checkpoints", text), {"config": text})
        model, tok = load_policy(path)
        got = scored(args.split, model, tok, path, recipe, world, store, text)
        for measure in ("correct", "perfect") if args.split == "test" else ("correct",):
            t = paired_test([base[i][measure] for i in ids], [got[i][measure] for i in ids])
            print(f"{text} [{measure}]: {args.split} math {sum(got[i][measure] for i in ids) / len(ids):.3f}, "
                  f"diff to M0 {t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] "
                  f"p={t.get('p_mcnemar', t['p_bootstrap']):.3f}; {out['steps']} steps on "
                  f"{len(use) if cfg.method == 'dpo' else len(rs_sft_rows(data))} rows, {time.monotonic() - t1:.0f} s",
                  flush=True)


if __name__ == "__main__":
    main()
