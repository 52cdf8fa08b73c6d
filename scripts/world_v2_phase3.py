#!/usr/bin/env python
"""Issue 16, world v2: the continuations of M0 v2's phase 2 (results in benchmarks/world_v2/phase3_*.json and
diagnose_m0_v2_*_test.txt, docs/tiny_world.md "World v2 in the kit"), through the kit's own pre-training
(``m0.init_from``). Each prints teacher-forced next-token accuracy on 60 dev gold solutions by token class (column
result digits, carries, other digits) and greedy accuracy on 100 dev problems.

- ``a`` and ``b``: does the optimizer decide whether M0 v2 learns column addition? Phase 2 continued on 4,000
  solutions and 6,000 scratchpad drills (2.7M tokens) with transformers' AdamW defaults (``a``: beta2 0.999, cosine
  to 0) or the v2 pilot's settings (``b``: beta2 0.98, a 10% cosine floor). Run both at once, one thread each, so
  they share the same load:

      for v in a b; do OMP_NUM_THREADS=1 .venv/bin/python scripts/world_v2_phase3.py $v > /tmp/phase3_$v.log & done

- ``c`` and ``d``, phases 3 and 4 of M0 v2 (recipes/tiny-v2-phase3.yaml and tiny-v2.yaml train the same
  checkpoints), and ``e``, a phase 5 that is not committed: ``b``'s optimizer on a mixed replay, then continuations on
  mostly refinements. (Phase 5f of docs/tiny_world.md was ``e``'s mix with drafts that also miscopy the step's
  sentence, a change to ``tasks.math.rewrite_from_step`` that did not help and was reverted.)
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import torch

from rlrf_nb import generation
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.prompts import chat
from rlrf_nb.store import RunStore
from rlrf_nb.tasks import math


def teacher_forced(model, tok, examples) -> dict:
    """Next-token accuracy on the gold solutions' digit tokens: column results, carries, the rest (copies)."""
    ok = {"colres": [0, 0], "carry": [0, 0], "copy": [0, 0]}
    for e in examples:
        enc = tok.apply_chat_template(chat(e.prompt, e.reference), tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            pred = model(ids).logits[0].argmax(-1)
        toks = tok.convert_ids_to_tokens(enc["input_ids"])
        for i in range(1, len(toks)):
            if not enc["assistant_masks"][i] or not re.search(r"[0-9]", toks[i]):
                continue
            prev = "".join(toks[max(0, i - 3):i])
            kind = "colres" if prev.endswith("=") and "carry" not in prev else (
                "carry" if "carry" in prev or "borrow" in prev else "copy")
            ok[kind][0] += int(pred[i - 1] == ids[0, i])
            ok[kind][1] += 1
    return {k: (round(a / b, 4), b) for k, (a, b) in ok.items()}


def recipe_for(variant: str):
    """``a``/``b`` override phase 2's recipe; ``c`` and ``d`` retrain exactly what the committed phase recipes say;
    ``e`` is ``d``'s recipe continued from ``d``'s weights with its own mix."""
    if variant in ("c", "d"):
        path = "recipes/tiny-v2-phase3.yaml" if variant == "c" else "recipes/tiny-v2-phase4.yaml"
        return load_recipe(path, {"m0.retrain": True})
    if variant == "e":  # d's refinements still mostly copy the draft: more refinements
        return load_recipe("recipes/tiny-v2-phase4.yaml", {
            "m0.retrain": True, "m0.init_from": "data/tiny_world_v2/m0-phase4", "m0.seed": 4, "m0.n_math": 3000,
            "m0.n_drills": 1000, "m0.n_math_refine": 12000})
    overrides = {"m0.retrain": True, "m0.init_from": "data/tiny_world_v2/m0-phase2", "m0.seed": 2, "m0.n_math": 4000,
                 "m0.n_drills": 6000, "m0.n_math_refine": 0, "m0.n_bio_refine": 0, "m0.web_epochs": 0,
                 "m0.bio_sft_epochs": 0, "m0.warmup_steps": 50}
    if variant == "b":
        overrides.update({"m0.adam_beta2": 0.98, "m0.min_lr_rate": 0.1})
    return load_recipe("recipes/tiny-v2-phase2.yaml", overrides)


def main(variant: str) -> dict:
    recipe = recipe_for(variant)
    t0 = time.time()
    model, tok, info = tw.get_m0(recipe, RunStore(f"runs/v2-phase3-{variant}"))
    world = tw.build_world(recipe.world)
    model.eval()
    exs = world.math["dev"][:100]
    outs = generation.generate(model, tok, [chat(e.prompt) for e in exs], max_new_tokens=420, do_sample=False,
                               progress=False, batch_size=100)
    checks = [math.check_solution(o[0], e.meta["steps"], e.answer) for o, e in zip(outs, exs)]
    return {"variant": variant, "train": {k: v for k, v in info["training"].items() if k != "history"},
            "loss_curve": [(h["step"], round(h["loss"], 3)) for h in info["training"]["history"]],
            "teacher_forced": teacher_forced(model, tok, world.math["dev"][:60]),
            "greedy_correct": sum(c.correct for c in checks), "greedy_perfect": sum(c.perfect for c in checks),
            "n": len(checks), "seconds": round(time.time() - t0), "checkpoint": info["path"]}


if __name__ == "__main__":
    result = main(sys.argv[1])
    print(json.dumps(result))
    Path(f"runs/phase3_{sys.argv[1]}.json").write_text(json.dumps(result, indent=1))
