#!/usr/bin/env python
"""Issue 16, world v2's one failing target: is the headroom (perfect pass@16 minus greedy perfect, 10.4 of 20 points
on test) limited by M0 v2's capacity? M0 v2 (4 x 128 Llama, 1.18M parameters) nearly solves 2-step problems (greedy
86.7%) and nearly never 3- and 4-step ones (4.2%, 1.3%), because it miscopies three-digit operands from the question.
Headroom needs problems of middle difficulty for M0, which a model that copies better would have.

1. ``expand``: M0 v2 (phase 6, ``data/tiny_world_v2/m0``) grown to 8 layers by block expansion (LLaMA Pro, Wu et al.
   2024): after each layer a copy of it whose output projections (``o_proj``, ``down_proj``) are zero, so each new
   block starts as the identity and the 8-layer model computes exactly what M0 v2 computes (checked on logits).
2. ``train x8``: the expanded model continues on a mix weighted to 3- and 4-step problems (6,000 of their gold
   solutions) with replay of the rest of M0 v2's mix (web documents, SFT bios, drills, refinements).
   ``train x4``: the control, M0 v2 itself on the same mix, with the same steps and schedule, so what ``x8`` gains
   over ``x4`` is the extra capacity, not the extra training.
3. ``probe``: greedy and 16 samples at T = 1.0 on the first 200 dev problems for M0 v2, ``x4`` and ``x8`` (and
   ``phase7``: ``recipes/tiny-v2-phase7.yaml`` trained into ``runs/v2-phase7``): every step right and the final
   answer, greedy and pass@16, per number of steps, with 95% intervals; and the probe's cost.

Results: ``benchmarks/world_v2/capacity_probe.json``; docs/tiny_world.md, "Is the headroom a matter of capacity?".
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from rlrf_nb import generation, models, stats
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.prompts import chat
from rlrf_nb.store import RunStore
from rlrf_nb.tasks import math

OUT = Path("runs/v2-capacity")
M0 = "data/tiny_world_v2/m0"
X8_INIT = OUT / "x8-init"
RESULT = Path("benchmarks/world_v2/capacity_probe.json")


def expand() -> None:
    model, tok = models.load_policy(M0)
    cfg = copy.deepcopy(model.config)
    n = cfg.num_hidden_layers
    cfg.num_hidden_layers = 2 * n
    big = LlamaForCausalLM(cfg)
    big.model.embed_tokens.load_state_dict(model.model.embed_tokens.state_dict())
    big.model.norm.load_state_dict(model.model.norm.state_dict())
    for i, layer in enumerate(model.model.layers):
        big.model.layers[2 * i].load_state_dict(layer.state_dict())
        new = big.model.layers[2 * i + 1]
        new.load_state_dict(layer.state_dict())
        torch.nn.init.zeros_(new.self_attn.o_proj.weight)
        torch.nn.init.zeros_(new.mlp.down_proj.weight)
    big.tie_weights()
    ids = tok(chat("Ava has 347 apples.")[0]["content"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (big(ids).logits - model(ids).logits).abs().max().item()
    assert diff < 1e-4, f"expanded model is not the identity of M0: max logit difference {diff}"
    models.save_policy(big, tok, X8_INIT, {"expanded_from": M0, "layers": 2 * n, "max_logit_difference": diff})
    print(json.dumps({"params": models.n_params(big), "from": models.n_params(model), "max_logit_difference": diff}))


def train(variant: str) -> dict:
    init = str(X8_INIT) if variant == "x8" else M0
    layers = 8 if variant == "x8" else 4
    overrides = {"m0.retrain": True, "m0.init_from": init, "m0.num_layers": layers, "m0.seed": 7,
                 "m0.n_math": 0, "m0.n_drills": 1000, "m0.n_math_refine": 2500, "m0.own_drafts": [],
                 "m0.max_seconds": 7200}
    recipe = load_recipe("recipes/tiny-v2.yaml", overrides)
    base_mix = tw.training_mix

    def mix(world, cfg, seed, own=()):
        long = [e for e in world.math["train"][:24000] if len(e.meta["steps"]) >= 3]
        rng = random.Random("capacity")
        extra = [{"kind": "math", "messages": chat(e.prompt, e.reference)} for e in rng.sample(long, 6000)]
        items = base_mix(world, cfg, seed) + extra
        random.Random(f"capacity-mix:{seed}").shuffle(items)
        return items

    tw.training_mix = mix
    t0 = time.time()
    _, _, info = tw.get_m0(recipe, RunStore(str(OUT / variant)))
    return {"variant": variant, "checkpoint": info["path"], "n_params": info["n_params"],
            "train": {k: v for k, v in info["training"].items() if k != "history"},
            "seconds": round(time.time() - t0)}


def _probe_one(path: str, problems, k: int) -> dict:
    model, tok = models.load_policy(path)
    model.eval()
    convs = [chat(e.prompt) for e in problems]
    t0 = time.time()
    greedy = generation.generate(model, tok, convs, max_new_tokens=400, batch_size=128, progress=False)
    t_greedy = time.time() - t0
    sampled = generation.generate(model, tok, convs, max_new_tokens=400, batch_size=32, do_sample=True,
                                  temperature=1.0, num_return_sequences=k, seed=1, progress=False)
    rows = []
    for e, g, ss in zip(problems, greedy, sampled):
        gc = math.check_example(g[0], e)
        sc = [math.check_example(s, e) for s in ss]
        rows.append({"steps": len(e.meta["steps"]), "greedy_perfect": gc.perfect, "greedy_final": gc.correct,
                     "pass_perfect": any(c.perfect for c in sc), "pass_final": any(c.correct for c in sc),
                     "pass1_perfect": sum(c.perfect for c in sc) / k})
    out = {"seconds_greedy": round(t_greedy, 1), "seconds": round(time.time() - t0, 1)}
    for group in ("all", 2, 3, 4):
        rs = [r for r in rows if group == "all" or r["steps"] == group]
        cell = {"n": len(rs)}
        for key in ("greedy_perfect", "pass_perfect", "greedy_final", "pass_final"):
            hits = sum(r[key] for r in rs)
            lo, hi = stats.wilson_ci(hits, len(rs))
            cell[key] = [round(100 * hits / len(rs), 1), round(100 * lo, 1), round(100 * hi, 1)]
        cell["pass1_perfect"] = round(100 * sum(r["pass1_perfect"] for r in rs) / len(rs), 1)
        diffs = [float(r["pass_perfect"]) - float(r["greedy_perfect"]) for r in rs]
        ci = stats.bootstrap_ci(diffs)
        cell["headroom"] = [round(100 * ci[key], 1) for key in ("value", "ci_low", "ci_high")]
        out[str(group)] = cell
    return out


def probe(names: list[str], n: int = 200, k: int = 16) -> None:
    recipe = load_recipe("recipes/tiny-v2.yaml")
    problems = tw.build_world(recipe.world).math["dev"][:n]
    result = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    paths = {"m0": M0}
    for v, run in (("x4", OUT / "x4"), ("x8", OUT / "x8"), ("phase7", Path("runs/v2-phase7"))):
        done = list((run / "checkpoints").glob("M0-*")) if (run / "checkpoints").exists() else []
        if done:
            paths[v] = str(done[0])
    for name in names:
        result.setdefault("probe", {})[name] = {"path": paths[name], **_probe_one(paths[name], problems, k)}
        print(name, json.dumps(result["probe"][name]["all"]), flush=True)
        RESULT.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[-1]) if sys.argv[-1].isdigit() else torch.get_num_threads())
    if sys.argv[1] == "expand":
        expand()
    elif sys.argv[1] == "train":
        res = train(sys.argv[2])
        print(json.dumps(res))
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        (OUT / f"train_{sys.argv[2]}.json").write_text(json.dumps(res, indent=1))
    elif sys.argv[1] == "probe":
        probe([a for a in sys.argv[2:] if not a.isdigit()])
