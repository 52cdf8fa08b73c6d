#!/usr/bin/env python
"""Issue 16, world v2: how far FactScore can move on the test bios if a policy only sharpens what it already knows.

A tiny-world person has 6 attributes, so a true bio states at most 6 distinct facts, and FActScore's length penalty
(gamma 10) scores a 6-fact bio at most exp(1 - 10/6) = 0.513. From ``rlrf-nb diagnose`` records (greedy bios and k
sampled bios per test person) this prints the FactScore, with the same scorer notebook 05 uses
(:func:`rlrf_nb.diagnose.fact_headroom`, which `rlrf-nb diagnose` now prints too), of four bios per person:

- **greedy**: the policy's greedy bio;
- **majority**: per attribute, the value most of its samples give (ties: the greedy value if among them, else the
  first met), i.e. a policy that sharpens onto its own modes;
- **oracle**: per attribute, the true value if any sample gives it, else the greedy value: what picking right among
  the policy's own samples could reach (an upper bound for RL on its samples);
- **all_right**: every attribute true, the world's ceiling.

It also prints the supported fraction a 6-fact bio would need for FactScore to gain ``--bar`` over greedy.

    python scripts/world_v2_fact_ceiling.py runs/s47-diag-M0 [runs/s47-diag-rsM2-s0 ...] --out F.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from rlrf_nb.config import load_recipe
from rlrf_nb.diagnose import fact_headroom
from rlrf_nb.evals.factscore import GAMMA, length_penalty
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.tiny_world import build_world


def load(diag: Path, split: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    d = diag / "diagnose" / split
    greedy = {r["id"]: r["response"] for r in read_jsonl(d / "bio_greedy.jsonl")}
    samples = defaultdict(list)
    for path in sorted(d.glob("bio_samples_T*.jsonl")):
        for r in read_jsonl(path):  # a bad line is an error naming the file and line
            samples[r["source_id"]].append(r["text"])
    return greedy, samples


def ceilings(diag: Path, world, split: str, bar: float) -> dict:
    greedy, samples = load(diag, split)
    exs = [ex for ex in world.bios[split] if ex.id in greedy]
    out = {"diagnose": str(diag), "n": len(exs), "samples_per_bio": min((len(v) for v in samples.values()), default=0),
           **fact_headroom(exs, world, greedy, samples)}
    need = out["greedy"]["score"] + bar
    out["bar"] = {"gain": bar, "factscore_needed": need, "penalty_6_facts": length_penalty(6, GAMMA),
                  "supported_needed_at_6_facts": need / length_penalty(6, GAMMA)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("diagnose", nargs="+", type=Path, help="rlrf-nb diagnose run directories (runs/<name>)")
    ap.add_argument("--recipe", default="recipes/tiny-v2.yaml")
    ap.add_argument("--split", default="test")
    ap.add_argument("--bar", type=float, default=0.08)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    world = build_world(load_recipe(args.recipe).world)
    rows = [ceilings(d, world, args.split, args.bar) for d in args.diagnose]
    for r in rows:
        print(f"{r['diagnose']}: {r['n']} bios, {r['samples_per_bio']} samples each")
        for name in ("greedy", "majority", "oracle", "all_right"):
            s = r[name]
            print(f"  {name:10s} FactScore {s['score']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]  supported "
                  f"{s['init_score']:.3f}  facts/bio {s['facts_per_response']:.2f}")
        b = r["bar"]
        print(f"  +{b['gain']:.2f} over greedy needs FactScore {b['factscore_needed']:.3f}: "
              f"{b['supported_needed_at_6_facts']:.3f} of 6 facts supported (penalty {b['penalty_6_facts']:.3f})")
    if args.out:
        args.out.write_text(json.dumps({"what": __doc__.splitlines()[0], "rows": rows}, indent=1,
                                       default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))


if __name__ == "__main__":
    main()
