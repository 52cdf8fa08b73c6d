#!/usr/bin/env python
"""Issue 16, world v2: can M0 v2 learn to use the verifier's critique when its refinement data are made from its
*own* wrong drafts? (M0 v2's synthetic drafts teach it to copy the draft: refinements fix 12 of 379 greedy-wrong test
problems against 26 for fresh samples.)

1. ``drafts``: M0 v2 phase 4 (``data/tiny_world_v2/m0-phase4``) writes a greedy and a sampled (T = 1.0) solution for
   train problems that its own pre-training never used as solutions (``train[24000:27000]``); the wrong ones, with the
   verifier's critique (15% with the scalar-only message), become refinement examples whose target is the gold solution.
   Written to ``runs/v2-onpolicy/drafts.jsonl``.
2. ``train <variant>``: a phase 5 from M0 v2 on phase 4's mix (smaller) plus those examples.
   - ``g``: the own-draft examples train on the whole gold solution;
   - ``h``: they train only from the first line where the gold solution and the draft differ (the copied prefix
     has no loss, so the corrected step and what follows carry it).
   - ``i``: ``h`` continued from its own checkpoint, with every critique quoting the problem's sentence for the
     wrong step (``world.critique_quotes``), so the critique holds the one thing M0 miscopies;
   - ``j``: ``i``'s control, the same continued training with the critiques as in ``h`` (no quotes).

Phases ``h`` and ``j`` are now recipes (``m0.own_drafts``): ``recipes/tiny-v2-phase5.yaml`` and ``recipes/tiny-v2.yaml``
train the same mixes row for row, and their checkpoints are M0 v2's phases 5 and 6.

Then ``rlrf-nb diagnose --recipe recipes/tiny-v2.yaml --set m0.pretrained=<checkpoint> --set diagnose.split=dev``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from rlrf_nb import generation, models
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.prompts import chat
from rlrf_nb.store import RunStore
from rlrf_nb.tasks import math

OUT = Path("runs/v2-onpolicy")
DRAFTS = OUT / "drafts.jsonl"


def drafts(n_problems: int = 3000) -> None:
    recipe = load_recipe("recipes/tiny-v2-phase4.yaml")
    world = tw.build_world(recipe.world)
    model, tok, _ = tw.get_m0(recipe, RunStore(str(OUT)))
    model.eval()
    exs = world.math["train"][24000:24000 + n_problems]
    convs = [chat(e.prompt) for e in exs]
    t0 = time.time()
    greedy = generation.generate(model, tok, convs, max_new_tokens=400, batch_size=128, progress=True)
    sampled = generation.generate(model, tok, convs, max_new_tokens=400, batch_size=128, do_sample=True,
                                  temperature=1.0, seed=16, progress=True)
    rng = random.Random("onpolicy")
    rows, n_wrong = [], {"greedy": 0, "sampled": 0}
    for e, g, s in zip(exs, greedy, sampled):
        for kind, text in (("greedy", g[0]), ("sampled", s[0])):
            check = math.check_solution(text, e.meta["steps"], e.answer)
            if check.perfect:
                continue
            n_wrong[kind] += 1
            rows.append(tw.math_refinement_from_draft(rng, e, text, 0.15) | {
                "source": kind, "draft": text, "first_error": check.first_error, "error_kind": check.error_kind})
    OUT.mkdir(parents=True, exist_ok=True)
    with DRAFTS.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(json.dumps({"problems": len(exs), "wrong": n_wrong, "examples": len(rows),
                      "seconds": round(time.time() - t0)}))


def _loss_from_first_difference(item: dict, tokenizer, max_length: int, prompt_loss: bool = True):
    """``models.tokenize_item``, but an own-draft refinement's labels start at the first line the gold solution
    changes (the lines copied from the draft carry no loss)."""
    row = _tokenize(item, tokenizer, max_length, prompt_loss)
    if row is None or "draft" not in item:
        return row
    target = item["messages"][1]["content"].split("\n")
    draft = item["draft"].split("\n")
    k = next((i for i, (a, b) in enumerate(zip(target, draft)) if a != b), min(len(target), len(draft)))
    if k == 0:
        return row
    kept = len(tokenizer("\n".join(target[:k]), add_special_tokens=False)["input_ids"]) - 1  # one spare token
    first = next(i for i, lab in enumerate(row["labels"]) if lab != -100)
    row["labels"] = [-100 if first <= i < first + kept else lab for i, lab in enumerate(row["labels"])]
    return row


_tokenize = models.tokenize_item


PHASE_5H = "runs/v2-onpolicy/h/checkpoints/M0-9488b1d8c45c5a1e"


def _quoted(rows: list[dict], world) -> list[dict]:
    """The own-draft examples again, their critiques now quoting the problem's sentence (``world.critique_quotes``),
    drawn from the same random stream as when they were made."""
    by_prompt = {e.prompt: e for e in world.math["train"][24000:27000]}
    rng = random.Random("onpolicy")
    return [tw.math_refinement_from_draft(rng, by_prompt[r["messages"][0]["content"].split("\n\nDraft:\n")[0]],
                                          r["draft"], 0.15) | {"draft": r["draft"]} for r in rows]


def train(variant: str) -> dict:
    overrides = {"m0.retrain": True, "m0.init_from": "data/tiny_world_v2/m0-phase4", "m0.seed": 5, "m0.n_math": 2000,
                 "m0.n_drills": 1000, "m0.n_math_refine": 2500}
    if variant in ("i", "j"):  # phase 5h again from its own checkpoint; i: every critique quotes the problem's
        overrides |= {"world.critique_quotes": variant == "i", "m0.init_from": PHASE_5H, "m0.seed": 6}  # sentence
    recipe = load_recipe("recipes/tiny-v2-phase4.yaml", overrides)
    own = [json.loads(line) for line in DRAFTS.open()]
    if variant == "i":
        own = _quoted(own, tw.build_world(recipe.world))
    if variant == "g":
        own = [{k: v for k, v in r.items() if k != "draft"} for r in own]
    else:
        models.tokenize_item = _loss_from_first_difference
    base_mix = tw.training_mix

    def mix(world, cfg, seed):
        items = base_mix(world, cfg, seed) + own
        random.Random(f"onpolicy-mix:{seed}").shuffle(items)
        return items

    tw.training_mix = mix
    t0 = time.time()
    model, tok, info = tw.get_m0(recipe, RunStore(str(OUT / variant)))
    return {"variant": variant, "own_examples": len(own), "checkpoint": info["path"],
            "train": {k: v for k, v in info["training"].items() if k != "history"},
            "seconds": round(time.time() - t0)}


if __name__ == "__main__":
    if sys.argv[1] == "drafts":
        drafts()
    else:
        result = train(sys.argv[2])
        print(json.dumps(result))
        (OUT / f"train_{sys.argv[2]}.json").write_text(json.dumps(result, indent=1))
