#!/usr/bin/env python
"""Issue 16: can M0 learn to take a number from the critique as a drill of its own? Continues a world-v2 M0 on
refinement examples trained only from the step the critique names (``m0.critique_source_operand: far_from_step``, and
the same with the problem's sentence right, as in M0's own slips), with some gold solutions as replay, and measures
the copy on held-out examples built on test problems while it trains (greedy):

- ``source``: the problem and the draft carry a far wrong operand, only the critique has the right one (phase 10's
  held-out check, ``scripts/world_v2_critique_copy.py``): the share that writes the critique's expression, and perfect;
- ``real``: the problem is right, the draft copied a far wrong operand into the named step: the share that writes the
  named step as the critique states it, and perfect.

    python scripts/world_v2_copy_drill.py data/tiny_world_v2/m0-phase8 /work/exp/drill-a --n-source 8000 --n-real 4000

Writes ``<out>/curve.json`` (the checks every ``--every`` steps) and the weights to ``<out>/model``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from rlrf_nb import generation, models
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.tasks import math


def real_example(rng: random.Random, ex) -> dict | None:
    """The problem right, the draft's named step computed with a far wrong operand, the critique; trained from the
    named step."""
    steps = ex.meta["steps"]
    j = rng.randrange(len(steps))
    b = steps[j][2]
    if b < 100:
        return None
    draft = math.rewrite_from_step(ex, j, operand=tw.far_operand(rng, b))
    if tw.goes_below_zero(draft):
        return None
    item = tw.math_refinement_from_draft(rng, ex, draft)
    return item | {"kind": "math_refine_real", "draft": draft}


def operand_only(row: dict, item: dict, tok) -> dict:
    """``--operand-loss``: the labels of a refinement row kept only on the number where the target first differs from
    the draft (the right operand of the named step, three digit tokens), the purest signal for the copy."""
    target, draft = item["messages"][1]["content"], item["draft"]
    i = next(k for k, (a, b) in enumerate(zip(target, draft)) if a != b)
    while i and target[i - 1].isdigit():
        i -= 1
    j = i
    while target[j].isdigit():
        j += 1
    p0, p1 = (len(tok(target[:k], add_special_tokens=False)["input_ids"]) for k in (i, j))
    whole = models.tokenize_item({k: v for k, v in item.items() if k != "draft"}, tok, 1024)["labels"]
    first = next(k for k, lab in enumerate(whole) if lab != -100)  # the target's first token
    labels = [lab if first + p0 <= k < first + p1 else -100 for k, lab in enumerate(whole)]
    assert tok.decode([t for t in labels if t != -100]).strip() == target[i:j], (target[i:j], labels)
    return {"input_ids": row["input_ids"], "labels": labels}


def build(rng, examples, make, n):
    out = []
    while len(out) < n:
        it = make(rng, rng.choice(examples))
        if it:
            out.append(it)
    return out


def heldout(world, n=100):
    rng, src, real = random.Random("heldout"), [], []
    for ex in world.math["test"]:
        if len(src) < n and (it := tw.critique_source_example(rng, ex, "far")):
            src.append((ex, it))
        if len(real) < n and (it := real_example(rng, ex)):
            real.append((ex, it))
    return src, real


def check(model, tok, src, real) -> dict:
    model.eval()
    out = {}
    for name, items in (("source", src), ("real", real)):
        gens = generation.generate(model, tok, [[it["messages"][0]] for _, it in items], max_new_tokens=400,
                                   batch_size=50, progress=False)
        want = [re.search(r"should be (\S+?=\d+)\.", it["messages"][0]["content"]).group(1) for _, it in items]
        out[f"{name}_copied"] = round(100 * sum(w in o[0] for w, o in zip(want, gens)) / len(items), 1)
        out[f"{name}_perfect"] = round(100 * sum(math.check_example(o[0], ex).perfect
                                                 for (ex, _), o in zip(items, gens)) / len(items), 1)
    model.train()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("init")
    ap.add_argument("out")
    ap.add_argument("--n-source", type=int, default=8000)
    ap.add_argument("--n-real", type=int, default=4000)
    ap.add_argument("--n-gold", type=int, default=3000)
    ap.add_argument("--gold-steps", type=int, nargs="*", help="draw the gold solutions from problems of these lengths")
    ap.add_argument("--n-refine", type=int, default=0, help="M0's own kind of refinement examples as replay")
    ap.add_argument("--own-drafts", type=int, nargs=2, metavar=("START", "STOP"),
                    help="refinements of the init model's own wrong drafts of train[START:STOP] (m0.own_drafts)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--operand-loss", action="store_true", help="refinements train on the named operand's digits only")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    world = tw.build_world(load_recipe("recipes/tiny-v2.yaml").world)
    train = world.math["train"]
    rng = random.Random(f"drill:{a.seed}")
    items = (build(rng, train, lambda r, e: tw.critique_source_example(r, e, "far_from_step"), a.n_source)
             + build(rng, train, real_example, a.n_real)
             + [{"kind": "math", "messages": tw.chat(e.prompt, e.reference)}
                for e in rng.sample([e for e in train if not a.gold_steps or len(e.meta["steps"]) in a.gold_steps],
                                    a.n_gold)]
             + [tw.math_refinement_example(rng, rng.choice(train)) for _ in range(a.n_refine)])
    if a.own_drafts:
        items += tw.own_draft_examples(world, SimpleNamespace(own_drafts=a.own_drafts, draft_model=a.init,
                                                              init_from=a.init, scalar_refine_share=0.15))
    rng.shuffle(items)
    model, tok = models.load_policy(a.init)
    src, real = heldout(world)
    rows = [(r, it) for it, r in ((it, models.tokenize_item(it, tok, 1024)) for it in items) if r]
    rows = [operand_only(r, it, tok) if a.operand_loss and it.get("draft") else r for r, it in rows]
    curve = [{"step": 0, "seconds": 0.0, **check(model, tok, src, real)}]
    print(json.dumps(curve[-1]), flush=True)
    t0 = time.monotonic()

    class Curve(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % a.every == 0:
                curve.append({"step": state.global_step, "seconds": round(time.monotonic() - t0, 1),
                              "loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
                              **check(model, tok, src, real)})
                print(json.dumps(curve[-1]), flush=True)
                (out / "curve.json").write_text(json.dumps(curve, indent=1))

    args = TrainingArguments(output_dir=str(out / "tmp"), per_device_train_batch_size=16, num_train_epochs=1,
                             learning_rate=a.lr, warmup_steps=30, adam_beta2=0.98, weight_decay=0.01,
                             lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
                             logging_steps=25, save_strategy="no", report_to="none", use_cpu=True, seed=a.seed,
                             data_seed=a.seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), callbacks=[Curve()],
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    trainer.train()
    curve.append({"step": trainer.state.global_step, "seconds": round(time.monotonic() - t0, 1), "final": True,
                  **check(model, tok, src, real)})
    print(json.dumps(curve[-1]), flush=True)
    (out / "curve.json").write_text(json.dumps({"args": vars(a), "tokens": sum(len(r["input_ids"]) for r in rows),
                                                "curve": curve}, indent=1))
    models.save_policy(model, tok, out / "model", {"tokens": sum(len(r["input_ids"]) for r in rows)})


if __name__ == "__main__":
    main()
