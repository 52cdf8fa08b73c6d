"""Issue 16's positive controls at several training settings (docs/experiments.md, "Positive controls"): from M0,
train on data known to be good and score the **test** problems, paired against M0.

    .venv/bin/python scripts/positive_controls.py --n 3000 --out runs/big_search \\
        "control=sft,method=rs_sft,learning_rate=3e-4,epochs=3,batch_size=32" "control=dpo,learning_rate=3e-5"

- ``control=sft``: SFT on the reference solutions of the N prompts (``training.gold_candidates``, the RS-SFT path);
- ``control=dpo``: DPO on a reference solution (chosen) against M0's lowest-reward wrong candidate (rejected) per
  prompt (``training.gold_pairs``), from the same search as ``scripts/big_search.py`` (reused from ``--out``).

Other keys are ``dpo`` fields as in ``scripts/big_search.py``. Notebook 03 runs the same two controls at the
stage's own settings on its own prompts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlrf_nb.analysis import paired_test
from rlrf_nb.config import load_recipe
from rlrf_nb.judges import make_judge
from rlrf_nb.models import load_policy
from rlrf_nb.reflection import reflection_search
from rlrf_nb.rounds import evaluate_test_math
from rlrf_nb.rubrics import load_rubric_set
from rlrf_nb.store import RunStore
from rlrf_nb.tasks.world import build_world
from rlrf_nb.tiny_world import model_fingerprint
from rlrf_nb.training import gold_candidates, gold_pairs, save_checkpoint, train_stage

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from big_search import parse_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "tiny.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "big_search"))
    args = ap.parse_args()

    recipe = load_recipe(args.recipe)
    world = build_world(recipe.world)
    prompts = world.math["train"][recipe.m0.n_math:recipe.m0.n_math + args.n]
    store = RunStore(args.out)
    rubrics = load_rubric_set(ROOT / "data" / "rubrics")
    judge = make_judge(recipe.feedback, rubrics, {p["name"]: p for p in world.people})
    m0_path = str(ROOT / recipe.m0.pretrained)
    m0, tok = load_policy(m0_path)
    pool = reflection_search(store, m0, tok, model_fingerprint(m0_path), prompts, judge, rubrics, recipe.reflection,
                             seed=recipe.run.seed, weights=recipe.feedback.weights, policy_id="M0")["pool"]
    gold, pairs = gold_candidates(prompts), gold_pairs(prompts, pool)
    print(f"{len(prompts)} prompts: {len(gold)} gold solutions, {len(pairs)} gold-vs-wrong pairs")
    base = {r["id"]: r for r in evaluate_test_math(m0, tok, model_fingerprint(m0_path), recipe, world, store, "M0")}
    ids = list(base)
    print(f"M0 test: final {sum(r['correct'] for r in base.values()) / len(ids):.3f}, "
          f"every step {sum(r['perfect'] for r in base.values()) / len(ids):.3f}")
    for text in args.configs:
        kv = dict(item.split("=", 1) for item in text.split(","))
        control = kv.pop("control")
        cfg, _ = parse_config(",".join(f"{k}={v}" for k, v in kv.items()) or "method=dpo", recipe.dpo)
        t1 = time.monotonic()
        model, tok = load_policy(m0_path)
        ref = load_policy(m0_path)[0] if cfg.method == "dpo" else None
        data_pool, data_pairs = (gold, []) if control == "sft" else (pool, pairs)
        out = train_stage(model, tok, data_pool, data_pairs, cfg, store.path("trainer_tmp", text), ref_model=ref)
        path = save_checkpoint(out["model"], tok, store.path("checkpoints", "control-" + text), {"config": text})
        model, tok = load_policy(path)
        got = {r["id"]: r for r in evaluate_test_math(model, tok, model_fingerprint(path), recipe, world, store,
                                                      "control-" + text)}
        for measure in ("correct", "perfect"):
            t = paired_test([float(base[i][measure]) for i in ids], [float(got[i][measure]) for i in ids])
            print(f"{text} [{measure}]: test {sum(got[i][measure] for i in ids) / len(ids):.3f}, diff to M0 "
                  f"{t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] p={t.get('p_mcnemar', t['p_bootstrap']):.3f}"
                  f"; {out['steps']} steps, {time.monotonic() - t1:.0f} s", flush=True)


if __name__ == "__main__":
    main()
