"""Preference fine-tuning through TRL (paper §3.3): DPO on reflection pairs, and the baselines.

- :func:`train_dpo` runs TRL's ``DPOTrainer`` with any of its losses (``dpo.loss_type``, combined with
  ``dpo.loss_weights``): ``["sigmoid", "sft"]`` adds an NLL term on the chosen response (RPO), ``["ipo"]``,
  ``["robust"]``, ... are one switch away. The reference model is explicit: a frozen copy of the starting
  policy (or of pi_0), precomputed reference log-probs, or with LoRA the adapter-disabled base.
- :func:`train_rs_sft` is the rejection-sampling fine-tuning baseline: TRL's ``SFTTrainer`` on the best
  candidate per prompt.
- :func:`preflight` decodes the tokenized pairs before any step and fails on doubled BOS/EOS, on pairs that
  ``max_length`` would truncate (the final answer cut off) and on chosen == rejected after truncation.
- :func:`dpo_diagnostics` reads the logged reward margins, accuracies and log-probs and says in plain words
  what they mean, so a collapse is visible before the benchmark shows it.

No loss or training loop is written here: TRL does the training.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch

from rlrf_nb.tasks import math

log = logging.getLogger(__name__)


PROBE_PAIRS = 64


def _quiet(trainer) -> None:
    """No per-step log printing (the notebooks plot the log history instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


class PreflightError(ValueError):
    """The tokenized pairs are not what DPO should train on; the message lists each problem with its pair id."""


def device_precision() -> dict:
    """Trainer precision arguments for this machine: bf16 on a GPU that supports it, fp16 on an older GPU,
    fp32 on CPU (``use_cpu``; TRL's bf16 default fails on CPU, and bf16 there is ~6x slower)."""
    if torch.cuda.is_available():
        return {"bf16": True, "fp16": False} if torch.cuda.is_bf16_supported() else {"bf16": False, "fp16": True}
    return {"use_cpu": True, "bf16": False, "fp16": False}


def _ids(out) -> list[int]:
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return list(ids)


def tokenize_pair(tokenizer, pair: dict) -> dict:
    """Token ids of a conversational pair as TRL's DPO processing builds them: the prompt rendered with the
    generation prompt, and each completion as the rest of the rendered full conversation."""
    prompt = _ids(tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=True))
    out = {"prompt_ids": prompt}
    for side in ("chosen", "rejected"):
        full = _ids(tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True))
        out[f"{side}_prefix_ok"] = full[: len(prompt)] == prompt
        out[f"{side}_ids"] = full[len(prompt):]
    return out


def preflight(pairs: list[dict], tokenizer, max_length: int, n_show: int = 2) -> dict:
    """Check every pair's tokenization before training; raise :class:`PreflightError` listing the problems.

    Problems: the prompt is not a prefix of the rendered conversation (a chat-template mismatch); more than one
    BOS; a completion without exactly one EOS at its end (a doubled EOS, e.g. an end token typed into the text);
    a pair longer than ``max_length`` (TRL keeps the start and cuts the end: the final answer is lost), and
    chosen == rejected after that cut. Returns token-length statistics and ``n_show`` decoded pairs.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    problems, lengths, shown = [], [], []
    for p in pairs:
        pid = p.get("pair_id", "?")
        t = tokenize_pair(tokenizer, p)
        if not (t["chosen_prefix_ok"] and t["rejected_prefix_ok"]):
            problems.append(f"pair {pid}: the prompt's tokens are not a prefix of the full conversation "
                            "(chat template renders the prompt differently alone)")
        if bos is not None and t["prompt_ids"].count(bos) > 1:
            problems.append(f"pair {pid}: doubled BOS ({t['prompt_ids'].count(bos)} BOS tokens in the prompt)")
        for side in ("chosen", "rejected"):
            ids = t[f"{side}_ids"]
            n_eos = ids.count(eos)
            if n_eos != 1 or ids[-1] != eos:
                kind = "doubled EOS" if n_eos > 1 else "missing EOS" if n_eos == 0 else "EOS not at the end"
                problems.append(f"pair {pid}: {kind} in {side} ({n_eos} EOS tokens): "
                                f"{tokenizer.decode(ids[-12:])!r}")
        total = {s: len(t["prompt_ids"]) + len(t[f"{s}_ids"]) for s in ("chosen", "rejected")}
        lengths.append(max(total.values()))
        if max(total.values()) > max_length:
            keep = max_length - len(t["prompt_ids"])
            cut = {s: t[f"{s}_ids"][: max(0, keep)] for s in ("chosen", "rejected")}
            what = []
            for s in ("chosen", "rejected"):
                text = p[s][-1]["content"] if isinstance(p[s], list) else p[s]
                final = math.extract_answer(text, "strict")
                if total[s] > max_length and final is not None and \
                        math.extract_answer(tokenizer.decode(cut[s], skip_special_tokens=True), "strict") != final:
                    what.append(f"truncated final answer in {s}")
            if cut["chosen"] == cut["rejected"]:
                what.append("chosen == rejected after truncation")
            problems.append(f"pair {pid}: {max(total.values())} tokens > max_length={max_length}"
                            + (f" ({'; '.join(what)})" if what else " (the completion end would be cut)"))
        if len(shown) < n_show:
            shown.append({s: tokenizer.decode(t["prompt_ids"] + t[f"{s}_ids"]) for s in ("chosen", "rejected")})
    if problems:
        head = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise PreflightError(f"pre-flight check failed on {len(problems)} problem(s) in {len(pairs)} pairs:\n  "
                             f"{head}{more}")
    s = sorted(lengths)
    return {"pairs": len(pairs), "max_tokens": s[-1] if s else 0,
            "p95_tokens": s[int(0.95 * (len(s) - 1))] if s else 0, "max_length": max_length, "decoded": shown}


def _lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def _common_args(cfg, out_dir) -> dict:
    return {"output_dir": str(out_dir), **device_precision(), "report_to": "none",
            "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.epochs, "lr_scheduler_type": "linear",
            "warmup_steps": cfg.warmup_ratio, "logging_steps": cfg.logging_steps, "save_strategy": "no",
            "seed": cfg.seed, "max_length": cfg.max_length, "disable_tqdm": True}


def train_dpo(model, tokenizer, pairs: list[dict], cfg, out_dir, *, ref_model=None,
              eval_pairs: list[dict] | None = None) -> dict:
    """DPO on ``pairs`` (TRL conversational format) with a ``DPOStageConfig``; returns the trained model,
    TRL's log history, the pre-flight report and the wall time.

    The reference is ``ref_model`` if given, else a frozen copy of ``model`` as it is now (with
    ``dpo.precompute_ref`` its log-probs are computed once and the copy is dropped); with ``dpo.lora`` the
    reference is the adapter-disabled base and the adapter is merged into the returned model. TRL evaluates
    the DPO loss, reward metrics and log-probs on ``eval_pairs`` (default: the first 64 training pairs, the
    *probe*) before and after training, which :func:`dpo_diagnostics` reads.
    """
    from trl import DPOConfig, DPOTrainer

    from rlrf_nb.pairs import to_dataset

    if not pairs:
        raise ValueError("DPO has no pairs to train on (every candidate tied, failed to parse, or was rejected)")
    report = preflight(pairs, tokenizer, cfg.max_length)
    args = DPOConfig(**_common_args(cfg, out_dir), beta=cfg.beta, loss_type=list(cfg.loss_type),
                     loss_weights=cfg.loss_weights, precompute_ref_log_probs=cfg.precompute_ref)
    if cfg.lora:
        ref_model, peft_config = None, _lora_config(cfg)
    else:
        peft_config = None
        ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
    t0 = time.monotonic()
    probe = eval_pairs or pairs[:PROBE_PAIRS]  # a fixed set: before/after on the same pairs, not batch noise
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=to_dataset(pairs),
                         eval_dataset=to_dataset(probe), processing_class=tokenizer, peft_config=peft_config)
    _quiet(trainer)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    seconds = time.monotonic() - t0
    trained = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    trained.eval()
    return {"model": trained, "history": trainer.state.log_history, "preflight": report, "seconds": seconds,
            "steps": trainer.state.global_step, "method": "dpo", "eval": {"before": before, "after": after},
            "probe_pairs": len(probe)}


def rs_sft_rows(pool: list, min_reward: float = 1.0) -> list[dict]:
    """Rejection-sampling fine-tuning data: per prompt, the best candidate (right answer first, then reward)
    if its reward is at least ``min_reward`` and its answer is not known to be wrong; as TRL's conversational
    prompt-completion rows."""
    best: dict[str, object] = {}
    for c in pool:
        if c.reward is None:
            continue
        key = (c.correct is True, c.reward)
        if c.prompt_id not in best or key > (best[c.prompt_id].correct is True, best[c.prompt_id].reward):
            best[c.prompt_id] = c
    return [{"prompt": [{"role": "user", "content": c.prompt}],
             "completion": [{"role": "assistant", "content": c.text}], "prompt_id": c.prompt_id,
             "candidate_id": c.candidate_id}
            for c in best.values() if c.reward >= min_reward and c.correct is not False]


def train_rs_sft(model, tokenizer, rows: list[dict], cfg, out_dir, *, eval_rows: list[dict] | None = None) -> dict:
    """The rejection-sampling baseline: TRL's ``SFTTrainer`` on ``rows`` (:func:`rs_sft_rows`), loss on the
    completion only, with the same optimiser settings as DPO (``eval_rows``: loss before and after)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    def ds(rs):
        return Dataset.from_list([{k: r[k] for k in ("prompt", "completion")} for r in rs])

    if not rows:
        raise ValueError("RS-SFT has no rows: no prompt has a candidate good enough to imitate")
    args = SFTConfig(**_common_args(cfg, out_dir), completion_only_loss=True)
    t0 = time.monotonic()
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=ds(rows),
                         eval_dataset=ds(eval_rows) if eval_rows else None,
                         peft_config=_lora_config(cfg) if cfg.lora else None)
    _quiet(trainer)
    before = trainer.evaluate() if eval_rows else None
    trainer.train()
    after = trainer.evaluate() if eval_rows else None
    seconds = time.monotonic() - t0
    trained = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    trained.eval()
    return {"model": trained, "history": trainer.state.log_history, "seconds": seconds,
            "steps": trainer.state.global_step, "method": "rs_sft", "eval": {"before": before, "after": after}}


def train_stage(model, tokenizer, pool: list, pairs: list[dict], cfg, out_dir, *, ref_model=None) -> dict:
    """``dpo.method``: DPO on ``pairs``, or RS-SFT on the best candidates of ``pool``."""
    if cfg.method == "rs_sft":
        return train_rs_sft(model, tokenizer, rs_sft_rows(pool), cfg, out_dir)
    return train_dpo(model, tokenizer, pairs, cfg, out_dir, ref_model=ref_model)


def metric_rows(history: list[dict]) -> list[dict]:
    """The training-step rows of a TRL log history (those with a loss), for plots and diagnostics."""
    return [h for h in history if "loss" in h and "train_runtime" not in h]


def dpo_diagnostics(history: list[dict], probe: dict | None = None) -> dict:
    """What DPO's diagnostics say, in plain words.

    TRL reports ``rewards/margins`` (beta x the policy-vs-reference log-ratio of chosen minus rejected),
    ``rewards/accuracies`` (share of pairs with a positive margin) and ``logps/chosen`` / ``logps/rejected``
    (summed log-probs of the completions under the policy). With ``probe`` (``{"before", "after"}`` evaluations
    on one fixed pair set, as :func:`train_dpo` returns) the changes are read on the same pairs; otherwise from
    the first and last thirds of the training log, whose batches differ (noisier).
    """
    keys = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")
    if probe and probe.get("before") and probe.get("after"):
        first = {k: probe["before"].get(f"eval_{k}") for k in keys}
        last = {k: probe["after"].get(f"eval_{k}") for k in keys}
        source = "on the fixed probe pairs, before vs after training"
    else:
        rows = [r for r in metric_rows(history) if "logps/chosen" in r]
        if len(rows) < 3:
            return {"notes": ["fewer than three logged steps and no probe evaluation: no trend to read"]}
        third = max(1, len(rows) // 3)

        def mean(rs, k):
            return sum(r[k] for r in rs) / len(rs)

        first = {k: mean(rows[:third], k) for k in keys}
        last = {k: mean(rows[-third:], k) for k in keys}
        source = "from the training log (first vs last third of steps; batches differ)"
    out = {k: {"first": first[k], "last": last[k]} for k in keys}
    dc = last["logps/chosen"] - first["logps/chosen"]
    dr = last["logps/rejected"] - first["logps/rejected"]
    notes = [f"Read {source}."]
    if last["rewards/margins"] <= first["rewards/margins"]:
        notes.append("The reward margin did not grow: DPO learned nothing separating chosen from rejected "
                     "(too low a learning rate, too few steps, or pairs that look alike to the model).")
    else:
        notes.append(f"The reward margin grew from {first['rewards/margins']:.3f} to {last['rewards/margins']:.3f}; "
                     f"{100 * last['rewards/accuracies']:.0f}% of pairs now rank chosen above rejected.")
    if dc < 0 and dr < 0:
        notes.append(f"Both log-probs fell (chosen {dc:+.2f}, rejected {dr:+.2f} nats per response). This is "
                     "common in DPO: the loss only needs rejected to fall faster than chosen, and probability mass "
                     "moves to responses in neither set (likelihood displacement; Razin et al. 2024, arXiv "
                     "2410.08847; Pal et al. 2024, arXiv 2402.13228). If chosen falls far, accuracy can collapse: "
                     "add the 'sft' loss term, lower the learning rate, or raise beta.")
    elif dc >= 0:
        notes.append(f"The chosen log-prob rose ({dc:+.2f} nats) while rejected moved {dr:+.2f}: the healthy "
                     "direction, with chosen answers becoming more likely.")
    else:
        notes.append(f"The chosen log-prob fell ({dc:+.2f}) while rejected rose ({dr:+.2f}): the policy is moving "
                     "away from the preferences; check the pairs' direction.")
    if dc < -0.5 * abs(first["logps/chosen"]):
        notes.append("WARNING: the chosen log-prob fell by more than half of its starting value: the pattern that "
                     "preceded accuracy collapse in this kit's feasibility probe (31% -> 9%).")
    return {**out, "chosen_logp_change": dc, "rejected_logp_change": dr, "source": source, "notes": notes}


def save_checkpoint(model, tokenizer, path: str | Path, info: dict) -> Path:
    """``save_pretrained`` the policy, then mark the directory complete (a rerun skips it)."""
    from rlrf_nb.models import save_policy
    from rlrf_nb.store import mark_complete

    save_policy(model, tokenizer, path, {k: v for k, v in info.items() if k != "model"})
    mark_complete(path, {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, type(None)))})
    return Path(path)


def train_cached(store, name: str, start_path, pool: list, pairs: list[dict], cfg, *, ref_path=None,
                 say=print) -> dict:
    """:func:`train_stage` from the policy at ``start_path`` into ``<run>/checkpoints/<name>-<key>``, where the
    key hashes the start weights, the stage config and the training data: a rerun loads the finished
    checkpoint instead of training again. Returns ``{"path", "model", "tokenizer", "info", "cached"}``."""
    import dataclasses
    import json

    from rlrf_nb.models import load_policy
    from rlrf_nb.store import content_key, is_complete
    from rlrf_nb.tiny_world import model_fingerprint

    data = [p.get("key") or content_key({k: p[k] for k in ("prompt", "chosen", "rejected")}) for p in pairs]
    if cfg.method == "rs_sft":
        data = [content_key(r) for r in rs_sft_rows(pool)]
    key = content_key({"start": model_fingerprint(start_path), "ref": model_fingerprint(ref_path or start_path),
                       "cfg": dataclasses.asdict(cfg), "data": data})
    path = store.path("checkpoints", f"{name}-{key}")
    cached = is_complete(path)
    if not cached:
        say(f"training {name} ({cfg.method}) from {start_path} ...")
        model, tok = load_policy(start_path)
        ref = None if cfg.lora or cfg.precompute_ref or cfg.method != "dpo" else load_policy(ref_path or start_path)[0]
        out = train_stage(model, tok, pool, pairs, cfg, store.path("trainer_tmp", name), ref_model=ref)
        info = {"name": name, "method": out["method"], "start_from": str(start_path),
                "reference": str(ref_path or start_path) if cfg.method == "dpo" else None,
                "pairs": len(pairs) if cfg.method == "dpo" else len(rs_sft_rows(pool)),
                "train_seconds": round(out["seconds"], 1), "steps": out["steps"], "history": out["history"],
                "preflight": {k: v for k, v in out.get("preflight", {}).items() if k != "decoded"},
                "probe": out.get("eval"),
                "diagnostics": dpo_diagnostics(out["history"], out.get("eval")) if out["method"] == "dpo" else None}
        save_checkpoint(out["model"], tok, path, info)
    model, tok = load_policy(path)
    info = json.loads((path / "training_log.json").read_text())
    return {"path": path, "model": model, "tokenizer": tok, "info": info, "cached": cached}
