"""Issue 19's first measurement: distil the verifier's feedback into a judge LM and measure it on held-out prompts.

The teacher's judgements are a run's stored search feedback (``feedback.jsonl``: the verifier on the policy's own
samples and refinements). Rows are split by prompt (:func:`rlrf_nb.judge_model.
teacher_rows`); the judge is fine-tuned from ``--base`` with TRL's ``SFTTrainer``, saved in safetensors, served by
``transformers serve`` on 127.0.0.1 and asked through ``LLMJudge``'s HTTP transport on ``--n-eval`` held-out rows;
the report (parse rate, agreement, Krippendorff's alpha, the first wrong step named) goes to ``<out>/report.json``.

    .venv/bin/python scripts/learned_judge.py --run runs/tiny-v2-n2000 --base data/tiny_world_v2/m0 \\
        --out runs/judge-v2 --rows 3000 --n-eval 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from rlrf_nb.config import load_recipe
from rlrf_nb.jsonl import read_jsonl
from rlrf_nb.judge_model import (
    balanced,
    judge_report,
    judge_tokenizer,
    prompt_phrases,
    teacher_rows,
    token_lengths,
    train_judge,
)
from rlrf_nb.llm_judge import LLMJudge, OpenAITransport
from rlrf_nb.models import load_policy
from rlrf_nb.rubrics import aspect_specs, load_rubric_set
from rlrf_nb.serve import ModelServer
from rlrf_nb.task_data import load_world

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory whose feedback.jsonl holds the teacher's judgements")
    ap.add_argument("--base", required=True, help="the judge's starting model (path)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "tiny-v2.yaml"), help="its dpo section's optimiser")
    ap.add_argument("--rows", type=int, default=3000, help="training rows (a seeded sample of the train split)")
    ap.add_argument("--n-eval", type=int, default=200, help="held-out rows judged through the server")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--skip-train", action="store_true", help="judge with <out>/judge/judge as already trained")
    ap.add_argument("--balance", type=int, default=0, help="train on this many rows per (task, teacher score) "
                                                           "group instead of a sample of the natural mix")
    ap.add_argument("--seed", type=int, default=0, help="seed of the balanced draw of training rows")
    ap.add_argument("--worked", action="store_true", help="math logic critiques show their working, step by step, "
                                                          "quoting the problem (judge_model.worked_critique)")
    ap.add_argument("--eval-balance", type=int, default=0, help="also judge this many held-out rows per group")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rubrics = load_rubric_set(ROOT / "data" / "rubrics")
    recs = list(read_jsonl(Path(args.run) / "feedback.jsonl"))
    examples = None
    if args.worked:
        world = load_world(load_recipe(args.recipe))
        examples = {e.id: e for split in world.math.values() for e in split}
    rows = teacher_rows(recs, rubrics, held_out_share=0.2, seed=0, examples=examples)
    rng = random.Random(0)
    train = rng.sample(rows["train"], min(args.rows, len(rows["train"])))
    if args.balance:
        train = balanced(rows["train"], args.balance, seed=args.seed)
    held = rng.sample(rows["held_out"], min(args.n_eval, len(rows["held_out"])))
    strata = balanced(rows["held_out"], args.eval_balance, seed=1) if args.eval_balance else []
    held += list({r["response_id"]: r for r in strata}.values())  # the stratified rows once each
    phrases = prompt_phrases(rubrics, sorted({tuple(a["aspect"] for a in r["teacher"]["aspects"])
                                              for r in rows["train"]}))
    _, tok = load_policy(args.base)
    plain = token_lengths(tok, train[:50])
    lengths = token_lengths(judge_tokenizer(tok, phrases), train)
    print(f"{len(phrases)} fixed prompt lines as one token each: tokens per row {sorted(plain)[25]} -> "
          f"{sorted(lengths[:50])[25]} (median of 50)", flush=True)
    print(f"teacher records {len(recs)}; rows train {len(rows['train'])} held-out {len(rows['held_out'])}; "
          f"training on {len(train)}; tokens per row: min {min(lengths)} median {sorted(lengths)[len(lengths) // 2]} "
          f"max {max(lengths)}", flush=True)
    cfg = dataclasses.replace(load_recipe(args.recipe).dpo, learning_rate=args.lr, epochs=args.epochs,
                              batch_size=args.batch_size, max_length=max(lengths), warmup_ratio=0.05,
                              logging_steps=10)
    t0 = time.monotonic()
    if args.skip_train:
        path = out / "judge" / "judge"
    else:
        res = train_judge(args.base, train, cfg, out / "judge", phrases=phrases)
        path = res["path"]
        losses = [h["loss"] for h in res["history"] if "loss" in h]
        shown = f"; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
        print(f"trained {res['steps']} steps in {res['seconds']:.0f} s{shown}", flush=True)
    srv = ModelServer(path, out / "serve")
    judged = []
    try:
        print(f"transformers serve healthy after {srv.start(timeout=180):.1f} s", flush=True)
        transport = OpenAITransport(srv.base_url, str(path), max_retries=2, timeout=600,
                                    max_tokens=args.max_new_tokens)
        judge = LLMJudge(transport, lambda names: aspect_specs(rubrics, names), rubrics.version, "learned",
                         max_repairs=0)
        t1 = time.monotonic()
        for i, r in enumerate(held):
            judged.append(judge.judge(r["question"], r["response"], [a["aspect"] for a in r["teacher"]["aspects"]]))
            if i % 20 == 0:
                print(f"  judged {i + 1}/{len(held)} ({time.monotonic() - t1:.0f} s); raw: {judged[-1].raw[:160]!r}",
                      flush=True)
    finally:
        srv.stop()
    n_natural = min(args.n_eval, len(rows["held_out"]))
    rep = judge_report(judged[:n_natural], held[:n_natural])
    if strata:
        rep["stratified"] = judge_report(judged[n_natural:], held[n_natural:])
    rep["seconds"] = time.monotonic() - t0
    rep["train_rows"], rep["tokens_per_row_max"] = len(train), max(lengths)
    rep["examples"] = [{"question": r["question"], "response": r["response"], "teacher": r["completion"][0]["content"],
                        "judge_raw": j.raw} for j, r in list(zip(judged, held))[:10]]
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    with open(out / "judged.jsonl", "w") as f:  # every held-out row: the teacher's and the judge's feedback
        for j, r in zip(judged, held):
            f.write(json.dumps({"example_id": r["example_id"], "response_id": r["response_id"], "task": r["task"],
                                "teacher": r["teacher"], "judge": j.to_dict()}) + "\n")
    for name, a in rep["aspects"].items():
        print(f"{name}: parse {a['parse']['rate']:.2f} exact {a.get('exact', float('nan')):.2f} "
              f"alpha {a['alpha']:.2f} (n {a['n']})")
    print(f"names the first wrong step: {rep['names_first_wrong_step']}")
    if strata:
        for name, a in rep["stratified"]["aspects"].items():
            print(f"stratified {name}: parse {a['parse']['rate']:.2f} exact {a.get('exact', float('nan')):.2f} "
                  f"alpha {a['alpha']:.2f} (n {a['n']})")


if __name__ == "__main__":
    main()
