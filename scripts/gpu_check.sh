#!/usr/bin/env bash
# The real-model path on a GPU (issue 15, Deliver 7): the same run as tests/test_real_path.py, on cuda in bf16.
#
#   scripts/gpu_check.sh                                # the stand-in: a tiny random Qwen2 with Qwen2.5's template
#   scripts/gpu_check.sh Qwen/Qwen2.5-1.5B-Instruct     # a Hub model already in the local Hugging Face cache
#   VLLM=1 scripts/gpu_check.sh Qwen/Qwen2.5-1.5B-Instruct   # sample with vLLM (one engine, asleep while TRL trains)
#
# Offline (HF_HUB_OFFLINE=1): local GSM8K-format train/test files, a judge answering rubric JSON on 127.0.0.1 (the
# stdlib server of tests/stand_in.py), then `rlrf-nb run --recipe recipes/qwen2.5-1.5b-gsm8k.yaml` stages 01-05
# with LoRA, run.device=cuda, run.dtype=bfloat16. It prints where each model lives (device, dtype) and the tokens/s
# of sampling and of greedy evaluation, measured on the policy as the run placed it, and the run's own numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RLRF=${RLRF:-.venv/bin/rlrf-nb}
MODEL=${1:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlrf-gpu-check.XXXXXX")
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
[ -z "$MODEL" ] && export HF_HUB_CACHE="$WORK/hub"

"$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no GPU (torch.cuda.is_available() is False); this check needs one")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}, "
      f"{torch.cuda.mem_get_info()[1] / 2**30:.0f} GiB")
EOF

# 1. data, the policy (the stand-in unless a cached Hub id was given) and the judge
"$PY" - "$WORK" "$MODEL" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from stand_in import save_hub_standin, write_gsm8k

work, model = Path(sys.argv[1]), sys.argv[2]
train, test = write_gsm8k(work / "gsm8k", n_train=400, n_test=64)
if not model:
    corpus = [line for p in (train, test) for line in p.read_text().splitlines()]
    save_hub_standin(work / "hub", "Qwen/Qwen2.5-1.5B-Instruct", corpus, hidden=256, layers=4)
EOF
"$PY" -c "
import sys, time; sys.path.insert(0, 'tests')
from stand_in import RubricJudgeServer
s = RubricJudgeServer(); open('$WORK/judge_url', 'w').write(s.base_url)
while True: time.sleep(60)" &
JUDGE=$!
trap 'kill $JUDGE 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$WORK/judge_url" ] && break; sleep 0.2; done
export RLRF_JUDGE_URL=$(cat "$WORK/judge_url")

POLICY=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
BACKEND=transformers
[ "${VLLM:-0}" = 1 ] && BACKEND=vllm
echo "gpu_check: policy $POLICY, judge $RLRF_JUDGE_URL, sampling backend $BACKEND, work dir $WORK"

# 2. the run: the real recipe, small budgets, on cuda in bf16
T0=$(date +%s)
"$RLRF" run --recipe recipes/qwen2.5-1.5b-gsm8k.yaml --name gpu-check --stages 01 02 03 04 05 \
  -p run.runs_dir="$WORK/runs" -p run.device=cuda -p run.dtype=bfloat16 -p m0.pretrained="$POLICY" \
  -p reflection.prompt_source="$WORK/gsm8k/train.jsonl" -p eval.gsm8k_source="$WORK/gsm8k/test.jsonl" \
  -p eval.gsm8k_train_source="$WORK/gsm8k/train.jsonl" -p eval.gsm8k_k=8 -p eval.n_math=64 \
  -p eval.max_new_tokens=256 -p feedback.judge_model=rubric-judge -p feedback.consensus_k=1 \
  -p feedback.n_math=16 -p feedback.max_response_tokens=256 -p reflection.n_prompts=32 \
  -p reflection.max_new_tokens=256 -p reflection.backend=$BACKEND -p rounds.n_rounds=2 \
  -p rounds.prompts_per_round=32 -p rounds.eval_n_math=32 -p "rounds.variants=[rlrf]" \
  -p dpo.max_length=2048 -p export_figures=false
echo "gpu_check: run finished in $(( $(date +%s) - T0 )) s"

# 3. where each model lives, and tokens/s of sampling and of evaluation
"$PY" - "$WORK" "$POLICY" "$BACKEND" <<'EOF'
import json
import sys
import time
from pathlib import Path

import torch

from rlrf_nb.config import RunConfig
from rlrf_nb.generation import generate
from rlrf_nb.models import load_policy, placement
from rlrf_nb.prompts import chat
from rlrf_nb.tasks.loaders import load_gsm8k

work, policy = Path(sys.argv[1]), sys.argv[2]
run = work / "runs" / "gpu-check"
res = json.loads((run / "results.json").read_text())
print("stage seconds:", res["run"]["stage_seconds"])
print("models evaluated by notebook 05 (device, dtype, GSM8K evaluation tokens/s):")
for name, s in res["benchmarks"]["summary"].items():
    p = s["placement"]
    print(f"  {name:<16} {p['device']:<8} {p['dtype']:<16} {p['tokens_per_s']} tok/s   GSM8K 8-shot lm-eval "
          f"strict-match {s['gsm8k_lm_eval_strict']['rate']:.3f}, kit strict {s['gsm8k_strict']['rate']:.3f}")
for ckpt in sorted((run / "checkpoints").rglob("training_log.json")):
    log = json.loads(ckpt.read_text())
    print(f"  trained {ckpt.parent.relative_to(run)}: {log.get('method')}, {log.get('steps')} steps, "
          f"{log.get('train_seconds')} s, placement {log.get('placement')}, LoRA merged {log.get('lora_merged')}")

place = placement(RunConfig(device="cuda", dtype="bfloat16"))
model, tok = load_policy(policy, place=place)
param = next(model.parameters())
print(f"policy {policy}: {param.device}, {param.dtype}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
      f"parameters, {torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated")
convs = [chat(ex.prompt) for ex in load_gsm8k(str(work / "gsm8k/test.jsonl"), "test")]
for label, kw in (("sampling (T=1, 4 per prompt)", {"do_sample": True, "num_return_sequences": 4, "seed": 0}),
                  ("greedy evaluation", {"do_sample": False})):
    torch.cuda.synchronize()
    t0 = time.monotonic()
    outs = generate(model, tok, convs, max_new_tokens=256, batch_size=64, progress=False, **kw)
    torch.cuda.synchronize()
    secs = time.monotonic() - t0
    n = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for os_ in outs for o in os_)
    print(f"{label}: {n} tokens in {secs:.1f} s = {n / secs:.0f} tokens/s on {param.device} ({param.dtype})")
if sys.argv[3] == "vllm":  # the same sampling through the process's one vLLM engine
    from rlrf_nb.generation import load_vllm

    del model
    torch.cuda.empty_cache()
    sampler = load_vllm(policy, place.dtype)
    t0 = time.monotonic()
    outs = generate(sampler, None, convs, max_new_tokens=256, do_sample=True, num_return_sequences=4, seed=0)
    secs = time.monotonic() - t0
    n = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for os_ in outs for o in os_)
    print(f"sampling with vLLM (T=1, 4 per prompt): {n} tokens in {secs:.1f} s = {n / secs:.0f} tokens/s")
print(f"peak GPU memory of this check (torch allocator): {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
EOF
