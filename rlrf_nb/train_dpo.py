"""The DPO stage as a script, for scale-out with ``accelerate launch`` (multi-GPU, DeepSpeed, FSDP as TRL documents).

    accelerate launch --config_file configs/accelerate_multi_gpu.yaml -m rlrf_nb.train_dpo \\
        --recipe recipes/real.yaml --model Qwen/Qwen2.5-0.5B-Instruct --pairs runs/real/pairs.jsonl \\
        --out runs/real/checkpoints/M1

It reads TRL-format pairs (``pairs.jsonl`` from notebook 02 or a round), runs the same pre-flight check and
``training.train_dpo`` as the notebooks (or RS-SFT with ``--set dpo.method=rs_sft``, which then reads
prompt/completion rows), and saves the policy with ``save_pretrained`` from the main process only. On one CPU
process it runs unchanged: ``accelerate launch --cpu --num_processes 1 -m rlrf_nb.train_dpo ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from rlrf_nb.config import load_recipe, parse_override
    from rlrf_nb.jsonl import read_jsonl
    from rlrf_nb.models import load_policy
    from rlrf_nb.paths import resolve_path
    from rlrf_nb.training import dpo_diagnostics, save_checkpoint, train_dpo, train_rs_sft

    ap = argparse.ArgumentParser(prog="python -m rlrf_nb.train_dpo", description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="recipes/tiny-v2.yaml",  # a DPO recipe: the default world's trains RS-SFT
                    help="recipe whose `dpo` section configures training")
    ap.add_argument("--model", required=True, help="starting policy: local checkpoint or Hub id")
    ap.add_argument("--ref", default=None, help="reference policy (default: a frozen copy of --model)")
    ap.add_argument("--pairs", required=True, help="JSONL of TRL preference rows (prompt/chosen/rejected)")
    ap.add_argument("--out", required=True, help="where to save the trained policy")
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="recipe override (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from accelerate import PartialState

    state = PartialState()
    recipe = load_recipe(resolve_path(args.recipe), dict(parse_override(s) for s in args.set or []))
    rows = list(read_jsonl(resolve_path(args.pairs)))
    if not rows:
        raise SystemExit(f"{args.pairs}: no pairs to train on")
    model, tok = load_policy(args.model)
    cfg = recipe.dpo
    out_dir = resolve_path(args.out)
    if cfg.method == "rs_sft":
        res = train_rs_sft(model, tok, rows, cfg, out_dir / "trainer_tmp")
    else:
        ref = None if cfg.lora or cfg.precompute_ref else load_policy(args.ref or args.model)[0]
        res = train_dpo(model, tok, rows, cfg, out_dir / "trainer_tmp", ref_model=ref)
    state.wait_for_everyone()
    if state.is_main_process:
        info = {"method": res["method"], "steps": res["steps"], "train_seconds": round(res["seconds"], 1),
                "pairs": len(rows), "start_from": args.model, "reference": args.ref or args.model,
                "processes": state.num_processes, "history": res["history"]}
        if res["method"] == "dpo":
            info["diagnostics"] = dpo_diagnostics(res["history"], res.get("eval"))
        save_checkpoint(res["model"], tok, out_dir, info)
        sys.stdout.write(json.dumps({k: v for k, v in info.items() if k != "history"}, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
