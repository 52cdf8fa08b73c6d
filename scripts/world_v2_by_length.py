#!/usr/bin/env python
"""Issue 16, a reading of finished demo runs: where does the loop gain and lose on world v2's test problems? For each
``RUN:MODEL`` (an evaluated policy under ``runs/RUN/eval/MODEL``: notebook 05's ``gsm8k.jsonl``, or the
``math_test.jsonl`` of notebook 03's controls and the scripts' trainings), every step right by chain length (2, 3 or 4
steps; world v2-short's 2 or 3 with ``--recipe recipes/tiny-v2-short.yaml``),
paired against the first one given, and how often the first solution line copies the problem's first quantity wrong;
for a copy with one wrong digit, whether that digit is the same place's digit of another number in the question (a
distractor) rather than any other. Reads only the stored greedy answers; no model is loaded.

    python scripts/world_v2_by_length.py s44-step3:M0 s44-step3:M2 --out benchmarks/world_v2/by_length_step3.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from rlrf_nb.config import load_recipe
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.tasks import math
from rlrf_nb.tiny_world import build_world

ap = argparse.ArgumentParser()
ap.add_argument("specs", nargs="+", help="RUN:MODEL, e.g. demo:M0 demo:M2 (the first is the baseline)")
ap.add_argument("--recipe", default="recipes/tiny-v2.yaml")
ap.add_argument("--runs", default="runs")
ap.add_argument("--out", help="write the table as JSON here")
args = ap.parse_args()

problems = {e.id: e for e in build_world(load_recipe(args.recipe).world).math["test"]}


def read(spec: str) -> dict:
    run, _, model = spec.rpartition(":")
    path = Path(args.runs) / run / "eval" / model / "gsm8k.jsonl"  # notebook 05's records
    if not path.exists():  # notebook 03's and the gold scripts' test records (rounds.evaluate_test_math)
        path = path.with_name("math_test.jsonl")
    out = {}
    for lineno, r in enumerate(read_jsonl(path), start=1):
        if r["id"] not in problems:
            raise SystemExit(f"{path}:{lineno}: problem {r['id']!r} is not in {args.recipe}'s math test split")
        if "gold" in r and r["gold"] != math.normalize_number(problems[r["id"]].answer):  # ids repeat across worlds
            raise SystemExit(f"{path}:{lineno}: gold {r['gold']!r} is not {r['id']}'s answer in {args.recipe}: "
                             "the run used another world (--recipe)")
        out[r["id"]] = r["response"]
    return out


def first_quantity(text: str, ex) -> str:
    """right | one digit from a distractor | one digit, other | several digits | no step."""
    found = math.ANNOTATION.findall(text)
    m = re.match(r"\s*(\d+)", found[0][0]) if found else None
    if not m:
        return "no step"
    got, want = m[1], str(ex.meta["steps"][0][0])
    if got == want:
        return "right"
    diff = [k for k in range(len(want)) if len(got) == len(want) and got[k] != want[k]]
    if len(diff) != 1:
        return "several digits"
    k = diff[0]
    others = [str(s[2]).zfill(len(want)) for s in ex.meta["steps"]]
    return "one digit from a distractor" if any(o[k] == got[k] for o in others) else "one digit, other"


texts = {spec: read(spec) for spec in args.specs}
perfects = {spec: {i: math.check_example(t, problems[i]).perfect for i, t in got.items()}
            for spec, got in texts.items()}
base = args.specs[0]
table = []
lengths = sorted({len(p.meta["steps"]) for p in problems.values()})  # world v2: 2-4 steps; v2-short: 2-3
for spec in args.specs:
    for n in (*lengths, None):
        ids = [i for i in sorted(texts[base].keys() & texts[spec].keys())
               if n is None or len(problems[i].meta["steps"]) == n]
        perfect = sum(perfects[spec][i] for i in ids)
        base_perfect = sum(perfects[base][i] for i in ids)
        copies: dict[str, int] = {}
        for i in ids:
            kind = first_quantity(texts[spec][i], problems[i])
            copies[kind] = copies.get(kind, 0) + 1
        table.append({"policy": spec, "steps": n or "all", "n": len(ids), "every_step_right": perfect / len(ids),
                      "diff_to_first": (perfect - base_perfect) / len(ids), "first_quantity": copies})
        print(f"{spec:24s} {n or 'all'!s:>3} steps  n={len(ids):3d}  every step right {100 * perfect / len(ids):5.1f}% "
              f"({100 * (perfect - base_perfect) / len(ids):+5.1f})  first quantity: {copies}")
if args.out:
    Path(args.out).write_text(json.dumps({"specs": args.specs, "recipe": args.recipe, "table": table}, indent=1) + "\n")
    print("written:", args.out)
