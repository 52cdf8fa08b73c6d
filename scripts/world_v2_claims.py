"""World v2's claims beside notebook 05's (issue 16; docs/experiments.md, "the claims on world v2"): for each seed's
run, M2 - M0 on test by number of steps (every step right, greedy), and sampled pass@1 / maj@k at one temperature
from `rlrf-nb diagnose` records of M2 against M0's, paired per problem; then the mean over seeds with a Student-t 95%
interval, written as JSON.

    python scripts/world_v2_claims.py --runs runs/tiny-v2-n2000 runs/tiny-v2-r1000-s1 runs/tiny-v2-r1000-s2 \
        --m0-diagnose runs/v2-onpolicy-j-diag --m2-diagnose runs/diag-M2-s0 runs/diag-M2-s1 runs/diag-M2-s2 \
        --out benchmarks/world_v2/claims_v2.json

Each M2 diagnose is `rlrf-nb diagnose --recipe recipes/tiny-v2.yaml --name diag-M2-s<seed> --policy
<run>/checkpoints/rounds/M2 --set 'diagnose.temperatures=[0.7]'`. World v2-short (stop 51): add `--recipe
recipes/tiny-v2-short.yaml` to both.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rlrf_nb.analysis import paired_test
from rlrf_nb.collate import t_interval
from rlrf_nb.config import load_recipe
from rlrf_nb.diagnose import grade_math, majority_right
from rlrf_nb.tasks import math
from rlrf_nb.tiny_world import build_world


def greedy_perfect(run: Path, policy: str, exs: dict) -> dict[str, float]:
    rows = [json.loads(line) for line in (run / "eval" / policy / "gsm8k.jsonl").open()]
    for r in rows:  # ids repeat across worlds (world v2 and v2-short): the gold answers tell them apart
        if r["gold"] != math.normalize_number(exs[r["id"]].answer):
            raise SystemExit(f"{run}: {r['id']}'s gold {r['gold']!r} differs from --recipe's world: another world")
    return {r["id"]: float(math.check_example(r["output"], exs[r["id"]]).perfect) for r in rows}


def sampled(diag: Path, temperature: str, exs: dict) -> dict[str, dict[str, float]]:
    """Per test problem: pass@1 and maj@k, every step right and final answer, as `rlrf-nb diagnose` computes them."""
    texts = defaultdict(list)
    for line in (diag / "diagnose" / "test" / f"math_samples_T{temperature}.jsonl").open():
        r = json.loads(line)
        texts[r["source_id"]].append(r["text"])
    out = {}
    for pid, ts in texts.items():
        ex, graded = exs[pid], [grade_math(t, exs[pid]) for t in ts]
        out[pid] = {"pass1_every_step": sum(g["perfect"] for g in graded) / len(ts),
                    "pass1_final": sum(g["correct"] for g in graded) / len(ts),
                    "maj_every_step": float(majority_right(ts, ex, "perfect")),
                    "maj_final": float(majority_right(ts, ex, "correct"))}
    return out


def paired(a: dict, b: dict, ids: list[str]) -> dict:
    t = paired_test([a[i] for i in ids], [b[i] for i in ids])
    return {"n": len(ids), "M0": sum(a[i] for i in ids) / len(ids), "M2": sum(b[i] for i in ids) / len(ids),
            "diff": t["diff"], "ci_low": t["ci_low"], "ci_high": t["ci_high"]}


def over_seeds(values: list[float]) -> dict:
    ci = t_interval(values)
    return {"values": values, "mean": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="one run directory per seed")
    ap.add_argument("--m0-diagnose", type=Path, required=True, help="M0's diagnose run directory")
    ap.add_argument("--m2-diagnose", nargs="+", type=Path, required=True, help="each seed's M2 diagnose, in order")
    ap.add_argument("--temperature", default="0.7")
    ap.add_argument("--recipe", default="recipes/tiny-v2-short.yaml", help="the runs' recipe (its test problems)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    world = build_world(load_recipe(args.recipe).world)
    exs = {e.id: e for e in world.math["test"]}
    by_steps = defaultdict(list)
    for e in exs.values():
        by_steps[len(e.meta["steps"])].append(e.id)
    m0_sampled = sampled(args.m0_diagnose, args.temperature, exs)
    seeds = []
    for run, diag in zip(args.runs, args.m2_diagnose, strict=True):
        a, b = greedy_perfect(run, "M0", exs), greedy_perfect(run, "M2", exs)
        m2_sampled = sampled(diag, args.temperature, exs)
        ids = sorted(set(m0_sampled) & set(m2_sampled))
        seeds.append({"run": str(run), "diagnose": str(diag),
                      "greedy_every_step_by_steps": {s: paired(a, b, i) for s, i in sorted(by_steps.items())},
                      **{f"T{args.temperature}_{m}": paired({i: m0_sampled[i][m] for i in ids},
                                                            {i: m2_sampled[i][m] for i in ids}, ids)
                         for m in ("pass1_every_step", "pass1_final", "maj_every_step", "maj_final")}})
    keys = [k for k in seeds[0] if k.startswith("T")]
    summary = {k: over_seeds([s[k]["diff"] for s in seeds]) for k in keys}
    summary |= {f"greedy_every_step_{s}_steps": over_seeds([x["greedy_every_step_by_steps"][s]["diff"] for x in seeds])
                for s in sorted(by_steps)}
    for k, v in summary.items():
        print(f"{k:32s} M2 - M0 {100 * v['mean']:+.1f} [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}] points "
              f"(seeds: {', '.join(f'{100 * x:+.1f}' for x in v['values'])})")
    if args.out:
        args.out.write_text(json.dumps({"seeds": seeds, "over_seeds": summary}, indent=1) + "\n")
        print("written:", args.out)


if __name__ == "__main__":
    main()
