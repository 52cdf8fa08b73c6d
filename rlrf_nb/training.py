"""Preference fine-tuning through TRL (paper §3.3): DPO on reflection pairs, and the baselines.

:func:`train_dpo` runs TRL's ``DPOTrainer`` with any of its losses (``dpo.loss_type`` combined by ``dpo.loss_weights``:
``["sigmoid", "sft"]`` is RPO, ``["ipo"]``, ``["robust"]`` ... one switch away) and an explicit reference (a frozen copy
of the starting policy or of pi_0, precomputed log-probs, or with LoRA the adapter-disabled base); :func:`train_rs_sft`
is the rejection-sampling SFT baseline (TRL's ``SFTTrainer`` on the best candidate per prompt);
:func:`rlrf_nb.preflight.preflight` checks the tokenized pairs before any step; :func:`dpo_diagnostics` says in plain
words what the logged margins and log-probs mean. Reference log-probs are cached in the run store (``dpo.cache_ref``,
:func:`train_cached`), and :class:`LengthBatchSampler` batches pairs of similar length (``dpo.group_by_length``); see
docs/performance.md, "DPO".

No loss or training loop is written here: TRL does the training.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gc
import logging
import time
from pathlib import Path

import torch

from rlrf_nb import models
from rlrf_nb.pairs import Candidate, build_pairs, group_by_prompt, to_dataset
from rlrf_nb.preflight import preflight
from rlrf_nb.stats import mean
from rlrf_nb.store import content_key, is_complete, mark_complete

log = logging.getLogger(__name__)


PROBE_PAIRS = 64


def quiet_trainer(trainer) -> None:
    """No per-step log printing (the notebooks plot the log history instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def device_precision(place=None) -> dict:
    """Trainer precision arguments of ``place`` (a :class:`rlrf_nb.models.Placement`; default: this machine's
    automatic choice, :func:`rlrf_nb.models.placement`): bf16 on a GPU that supports it, fp16 on an older GPU, fp32
    on CPU (``use_cpu``; TRL's bf16 default fails on CPU, and bf16 there is ~6x slower)."""
    return (place or models.placement()).trainer_args()


def lora_config(cfg):
    """peft's LoRA config of a section with lora_r, lora_alpha and lora_dropout (dpo, online_rl): every linear layer."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def fit(trainer, lora: bool, t0: float, evaluate: bool = False) -> dict:
    """Train ``trainer`` (evaluated before and after when ``evaluate``): the trained model (a LoRA adapter merged),
    TRL's log history, the seconds since ``t0``, the optimiser steps and ``eval`` (``{"before", "after"}``)."""
    before = trainer.evaluate() if evaluate else None
    trainer.train()
    after = trainer.evaluate() if evaluate else None
    seconds = time.monotonic() - t0
    trained = trainer.model.merge_and_unload() if lora else trainer.model
    trained.eval()
    return {"model": trained, "history": trainer.state.log_history, "seconds": seconds,
            "steps": trainer.state.global_step, "eval": {"before": before, "after": after}}


def trainer_args(cfg, out_dir, place=None, seed: int | None = None) -> dict:
    """Trainer arguments every stage shares (a ``dpo`` or ``online_rl`` section; ``seed`` default: the section's)."""
    return {"output_dir": str(out_dir), **device_precision(place), "report_to": "none",
            "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.epochs, "logging_steps": cfg.logging_steps,
            "save_strategy": "no", "seed": cfg.seed if seed is None else seed, "disable_tqdm": True,
            "activation_checkpointing": gradient_checkpointing(cfg, place)}


def _common_args(cfg, out_dir, place=None) -> dict:
    return {**trainer_args(cfg, out_dir, place), "lr_scheduler_type": "linear", "warmup_steps": cfg.warmup_ratio,
            "max_length": cfg.max_length}


def gradient_checkpointing(cfg, place=None) -> bool:
    """``dpo.gradient_checkpointing``, or by default: on with a GPU (memory is what runs out there; TRL's default),
    off on CPU, where recomputing the forward in the backward pass only costs time."""
    value = cfg.gradient_checkpointing
    on_gpu = place.device == "cuda" if place is not None else torch.cuda.is_available()
    return on_gpu if value is None else bool(value)


def ref_logps_key(ref_fingerprint: str, row: dict, max_length: int | None, truncation_mode: str,
                  precision: str, per_pair: bool = False) -> str:
    """The store key of one pair's reference log-probs: the reference weights, the pair's token ids (so the
    tokenizer and chat template), the truncation that TRL's collator applies, the precision, and ``per_pair``: computed
    in a forward pass of its own (CPU; its bits then do not depend on batch-mates), which values a store computed in
    batches before (stop 53) are not, so they are not served for it."""
    spec = {"ref": ref_fingerprint, "prompt_ids": list(row["prompt_ids"]), "chosen_ids": list(row["chosen_ids"]),
            "rejected_ids": list(row["rejected_ids"]), "max_length": max_length, "truncation": truncation_mode,
            "precision": precision}
    return content_key({**spec, "forward": "per_pair"} if per_pair else spec)


REF_LOGPS_ARTIFACT = "ref_logps"


def _first_difference(c: list, r: list) -> int:
    """The index of the first token where ``c`` and ``r`` differ (the shorter one's length if one is a prefix)."""
    return next((i for i, (a, b) in enumerate(zip(c, r)) if a != b), min(len(c), len(r)))


def cut_at_first_difference(row: dict) -> dict:
    """``dpo.pair_cut: first_difference``: a tokenized pair cut right after the first token where chosen and
    rejected differ (both keep that token). What follows a wrong step is often right arithmetic on the wrong
    number; pushing it down with the rejected response teaches the policy to compute badly."""
    c, r = row["chosen_ids"], row["rejected_ids"]
    i = _first_difference(c, r)
    return {"chosen_ids": c[:i + 1], "rejected_ids": r[:i + 1]}


def move_shared_prefix(row: dict) -> dict:
    """``dpo.pair_cut: shared_prefix``: the tokens a tokenized pair's chosen and rejected share at their start move
    into its prompt (each keeps at least its last token), so the collator masks them out of every loss term. DPO's
    sigmoid term cancels them anyway; APO-zero and the NLL term score each side alone and would not."""
    c, r = row["chosen_ids"], row["rejected_ids"]
    i = max(0, min(_first_difference(c, r), len(c) - 1, len(r) - 1))
    return {"prompt_ids": row["prompt_ids"] + c[:i], "chosen_ids": c[i:], "rejected_ids": r[i:]}


PAIR_CUT_FUNCTIONS = {"first_difference": cut_at_first_difference, "shared_prefix": move_shared_prefix}


def _pair_lengths(ds) -> list[int]:
    return [len(p) + max(len(c), len(r)) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])]


class LengthBatchSampler(torch.utils.data.Sampler):
    """Padding-aware order: each epoch shuffle, stable-sort by length within mega-batches of ``mega`` batches, cut into
    batches of ``batch_size`` and shuffle their order (seeded by ``seed`` and the epoch); unlike transformers'
    ``LengthGroupedSampler`` the batches come in random order (on this kit's pairs: 23% padding there, 7% here)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, mega: int = 50):
        self.lengths, self.batch_size, self.seed, self.mega, self.epoch = list(lengths), batch_size, seed, mega, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.mega * self.batch_size
        batches = []
        for m in range(0, len(perm), size):
            chunk = sorted(perm[m:m + size], key=self.lengths.__getitem__)
            batches += [chunk[b:b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[b]


@functools.cache
def cached_dpo_trainer_class():
    """``DPOTrainer`` (built once, cached) whose ``_precompute_ref_logps`` (run with ``precompute_ref_log_probs=True``)
    reads reference log-probs from :data:`REF_LOGPS_ARTIFACT` and computes only the missing ones; the reference is
    ``ref_model``, else ``ref_loader()`` (called only on a miss, dropped after), else the policy before training (with
    PEFT, the adapter disabled). Its ``_get_train_sampler`` is a :class:`LengthBatchSampler` when ``group_by_length`` is
    set (transformers' own cannot find lengths in a preference dataset).
    """
    from trl import DPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    class CachedRefDPOTrainer(DPOTrainer):
        def __init__(self, *args, ref_store=None, ref_fingerprint: str | None = None, ref_loader=None,
                     group_by_length: bool = False, pair_cut: str = "none", **kwargs):
            self._ref_store, self._ref_fp, self._ref_loader = ref_store, ref_fingerprint, ref_loader
            self._group_by_length, self._pair_cut = group_by_length, pair_cut
            self.ref_cache_stats = {"reused": 0, "computed": 0, "reference_loaded": False}
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            cut = PAIR_CUT_FUNCTIONS.get(self._pair_cut)
            return dataset if cut is None else dataset.map(cut)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if self._ref_store is None or self._ref_fp is None or self.accelerator.num_processes > 1:
                return super()._precompute_ref_logps(dataset, name, batch_size)  # TRL's (one writer per store)
            art = self._ref_store.artifact(REF_LOGPS_ARTIFACT)
            precision = "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "fp32"
            cols = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
            # On CPU each pair is its own forward pass: padded to a batch-mate's length its log-probs move in the
            # last bits (1e-5 on M0 v2), so a DPO run would depend on which pairs another stage left in the store.
            # A batch would be faster; the tiny world's pairs take seconds either way. GPUs batch (their kernels are
            # not bit-reproducible across shapes anyway). The key says which.
            per_pair = torch.device(self.accelerator.device).type == "cpu"
            keys = [ref_logps_key(self._ref_fp, row, self.args.max_length, self.args.truncation_mode, precision,
                                  per_pair) for row in cols]
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            missing = [i for k, i in first.items() if k not in art]  # each distinct missing pair once
            if missing:
                self._compute_missing(cols, keys, missing, 1 if per_pair else batch_size, art)
            self.ref_cache_stats["reused"] += len(keys) - len(missing)
            recs = [art.get(k) for k in keys]
            log.info("reference log-probs for %s: %d reused from the run store, %d computed", name,
                     len(keys) - len(missing), len(missing))
            return dataset.add_column("ref_chosen_logps", [r["ref_chosen_logps"] for r in recs]).add_column(
                "ref_rejected_logps", [r["ref_rejected_logps"] for r in recs])

        def _compute_missing(self, cols, keys, missing, batch_size, art):
            loaded = None
            model = self.ref_model
            if model is None and self._ref_loader is not None:
                loaded = self._ref_loader()
                loaded.to(self.accelerator.device).eval()
                add_fused_lm_head(loaded)
                model, self.ref_cache_stats["reference_loaded"] = loaded, True
            if model is None:
                model = self.model  # before training: the policy is the reference (PEFT: adapter disabled)
            lengths = _pair_lengths(cols.select(missing))
            order = [missing[i] for i in sorted(range(len(missing)), key=lengths.__getitem__)]
            device = self.accelerator.device
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                batch = self.data_collator([cols[i] for i in idx])
                batch = {k: v.to(device) for k, v in batch.items()}
                chosen, rejected = self.compute_ref_log_probs(model, batch)
                for i, c, r in zip(idx, chosen.tolist(), rejected.tolist()):
                    art.append({"key": keys[i], "ref": self._ref_fp, "ref_chosen_logps": c, "ref_rejected_logps": r})
            self.ref_cache_stats["computed"] += len(order)
            del loaded

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if not self._group_by_length or ds is None or "prompt_ids" not in ds.column_names:
                return super()._get_train_sampler(train_dataset)
            return LengthBatchSampler(_pair_lengths(ds), self.args.train_batch_size, seed=self.args.seed)

    return CachedRefDPOTrainer


def build_dpo_trainer(model, tokenizer, pairs: list[dict], cfg, out_dir, *, ref_model=None,
                      eval_pairs: list[dict] | None = None, ref_store=None, ref_fingerprint: str | None = None,
                      ref_loader=None, place=None):
    """The TRL ``DPOTrainer`` (:func:`cached_dpo_trainer_class`) that :func:`train_dpo` runs, built but not yet
    trained; with a ``ref_store`` its datasets already hold the reference log-probs. ``eval_pairs`` default to
    the probe (the first 64 pairs)."""
    from trl import DPOConfig

    cfg = for_method(cfg, "dpo")  # at dpo.dpo_learning_rate when it is set
    cached = ref_store is not None and ref_fingerprint is not None
    precompute = bool(cfg.precompute_ref or cached)
    args = DPOConfig(**_common_args(cfg, out_dir, place), beta=cfg.beta, loss_type=list(cfg.loss_type),
                     loss_weights=cfg.loss_weights, precompute_ref_log_probs=precompute)
    peft_config = lora_config(cfg) if cfg.lora else None
    if cfg.lora:
        ref_model = None  # the adapter-disabled base is the reference
    elif ref_model is None and not precompute:
        ref_model = copy.deepcopy(model)
    probe = eval_pairs or pairs[:PROBE_PAIRS]  # a fixed set: before/after on the same pairs, not batch noise
    trainer = cached_dpo_trainer_class()(
        model=model, ref_model=ref_model, args=args, train_dataset=to_dataset(pairs), eval_dataset=to_dataset(probe),
        processing_class=tokenizer, peft_config=peft_config, ref_store=ref_store if cached else None,
        ref_fingerprint=ref_fingerprint, ref_loader=None if cfg.lora else ref_loader,
        group_by_length=cfg.group_by_length, pair_cut=cfg.pair_cut)
    if precompute:
        trainer.ref_model = None  # every reference log-prob is in the datasets now: hold no reference model
    trainer.probe_pairs = len(probe)
    quiet_trainer(trainer)
    return trainer


def train_dpo(model, tokenizer, pairs: list[dict], cfg, out_dir, **trainer_kw) -> dict:
    """DPO on ``pairs`` (TRL conversational format) with a ``DPOStageConfig``; returns the trained model, TRL's log
    history, the pre-flight report and the wall time. ``trainer_kw`` are :func:`build_dpo_trainer`'s.

    The reference is ``ref_model``, else ``model`` as it is now: with ``dpo.precompute_ref`` or a ``ref_store`` its
    log-probs are computed once and no copy is kept, otherwise a frozen copy runs beside the policy; with ``dpo.lora``
    it is the adapter-disabled base and the adapter is merged into the returned model. With ``ref_store`` (a
    :class:`~rlrf_nb.store.RunStore`) and ``ref_fingerprint`` (the reference's weights) reference log-probs come from
    the store, and ``ref_loader()`` loads the reference only for missing pairs when it is not ``model`` (a cache hit
    loads nothing). ``place``: device and precision. TRL evaluates ``eval_pairs`` (default: the first 64 pairs, the
    *probe*) before and after training, which :func:`dpo_diagnostics` reads. ``ValueError`` without pairs; a
    :class:`~rlrf_nb.preflight.PreflightError` on malformed pairs.
    """
    if not pairs:
        raise ValueError("DPO has no pairs to train on (every candidate tied, failed to parse, or was rejected)")
    report = preflight(pairs, tokenizer, cfg.max_length)
    t0 = time.monotonic()
    trainer = build_dpo_trainer(model, tokenizer, pairs, cfg, out_dir, **trainer_kw)
    return {**fit(trainer, cfg.lora, t0, evaluate=True), "preflight": report, "method": "dpo",
            "probe_pairs": trainer.probe_pairs,
            "ref_cache": trainer.ref_cache_stats if trainer._ref_store is not None else None}


def rs_sft_rows(pool: list, min_reward: float = 1.0) -> list[dict]:
    """Rejection-sampling fine-tuning data: per prompt, the best candidate (right answer first, then reward)
    if its reward is at least ``min_reward`` and its answer is not known to be wrong; as TRL's conversational
    prompt-completion rows."""
    best = [max(cs, key=lambda c: (c.correct is True, c.reward))  # the first of ties
            for cs in group_by_prompt(c for c in pool if c.reward is not None).values()]
    return [{"prompt": [{"role": "user", "content": c.prompt}],
             "completion": [{"role": "assistant", "content": c.text}], "prompt_id": c.prompt_id,
             "candidate_id": c.candidate_id}
            for c in best if c.reward >= min_reward and c.correct is not False]


def train_rs_sft(model, tokenizer, rows: list[dict], cfg, out_dir, *, eval_rows: list[dict] | None = None,
                 place=None) -> dict:
    """The rejection-sampling baseline: TRL's ``SFTTrainer`` on ``rows`` (:func:`rs_sft_rows`), loss on the
    completion only, with the same optimiser settings as DPO (``eval_rows``: loss before and after)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    def ds(rs):
        return Dataset.from_list([{k: r[k] for k in ("prompt", "completion")} for r in rs])

    if not rows:
        raise ValueError("RS-SFT has no rows: no prompt has a candidate good enough to imitate")
    args = SFTConfig(**_common_args(cfg, out_dir, place), completion_only_loss=True)
    t0 = time.monotonic()
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=ds(rows),
                         eval_dataset=ds(eval_rows) if eval_rows else None,
                         peft_config=lora_config(cfg) if cfg.lora else None)
    quiet_trainer(trainer)
    return {**fit(trainer, cfg.lora, t0, evaluate=bool(eval_rows)), "method": "rs_sft"}


def train_stage(model, tokenizer, pool: list, pairs: list[dict], cfg, out_dir, *, place=None, **dpo_kw) -> dict:
    """``dpo.method``: DPO on ``pairs`` (``dpo_kw``: :func:`train_dpo`'s reference arguments), or RS-SFT on the best
    candidates of ``pool``; precision from ``place`` (:func:`rlrf_nb.models.placement`)."""
    if cfg.method == "rs_sft":
        return train_rs_sft(model, tokenizer, rs_sft_rows(pool), cfg, out_dir, place=place)
    return train_dpo(model, tokenizer, pairs, cfg, out_dir, place=place, **dpo_kw)


def stage_diagnostics(out: dict) -> dict:
    """Notes on a training stage's log for notebooks 03 and 04: :func:`dpo_diagnostics` for DPO; for RS-SFT
    (``dpo.method: rs_sft``), which has no reference model and no preference margin, its training loss."""
    if out["method"] == "dpo":
        return dpo_diagnostics(out["history"], out.get("eval"))
    losses = [h["loss"] for h in out["history"] if "loss" in h]
    what = f"{out['method']}: supervised fine-tuning on the best candidate of each prompt (no reference, no margins)"
    if not losses:
        return {"notes": [f"{what}; no training loss was logged ({out.get('steps', 0)} steps)"]}
    return {"notes": [f"{what}; training loss {losses[0]:.3f} -> {losses[-1]:.3f} over {out.get('steps', '?')} "
                      f"steps ({len(losses)} logged)"]}


def dpo_diagnostics(history: list[dict], probe: dict | None = None) -> dict:
    """What DPO's diagnostics say, in plain words: ``rewards/margins`` (beta x the policy-vs-reference log-ratio of
    chosen minus rejected), ``rewards/accuracies`` (share of positive margins), ``logps/chosen`` / ``logps/rejected``
    (summed completion log-probs under the policy). Changes are read on the ``probe`` (``{"before", "after"}``
    evaluations on one pair set, as :func:`train_dpo` returns), else on the first and last thirds of the training log
    (other batches: noisier).
    """
    keys = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")
    if probe and probe.get("before") and probe.get("after"):
        first = {k: probe["before"].get(f"eval_{k}") for k in keys}
        last = {k: probe["after"].get(f"eval_{k}") for k in keys}
        source = "on the fixed probe pairs, before vs after training"
    else:
        rows = [r for r in history if "loss" in r and "logps/chosen" in r and "train_runtime" not in r]  # steps
        if len(rows) < 3:
            return {"notes": ["fewer than three logged steps and no probe evaluation: no trend to read"]}
        third = max(1, len(rows) // 3)
        first = {k: mean([r[k] for r in rows[:third]]) for k in keys}
        last = {k: mean([r[k] for r in rows[-third:]]) for k in keys}
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
    models.save_policy(model, tokenizer, path, {k: v for k, v in info.items() if k != "model"})
    mark_complete(path, {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, type(None)))})
    return Path(path)


#: DPOStageConfig fields that change speed or memory, not the trained model: left out of checkpoint keys.
PERF_ONLY_FIELDS = ("cache_ref", "gradient_checkpointing")
# Fields of the stage config that do not set how a checkpoint is trained: dpo.control_prompts picks the positive
# controls' data, which their checkpoints' keys hold anyway.
NOT_TRAINING_FIELDS = ("control_prompts",)


def for_method(cfg, method: str | None = None):
    """The stage config as ``method`` (default: its own ``dpo.method``) trains: under ``dpo`` a set
    ``dpo.dpo_learning_rate`` is the learning rate; RS-SFT keeps ``learning_rate``. The result has
    ``dpo_learning_rate`` unset (and ``method`` set when given)."""
    if method is not None and method != cfg.method:
        cfg = dataclasses.replace(cfg, method=method)
    if getattr(cfg, "dpo_learning_rate", None) is None:
        return cfg
    lr = cfg.dpo_learning_rate if cfg.method == "dpo" else cfg.learning_rate
    return dataclasses.replace(cfg, learning_rate=lr, dpo_learning_rate=None)


def override_stage(cfg, **fields):
    """``dataclasses.replace`` for a script's overrides: a ``learning_rate`` given is the rate of DPO too, over a
    recipe's ``dpo.dpo_learning_rate``."""
    if "learning_rate" in fields:
        fields.setdefault("dpo_learning_rate", None)
    return dataclasses.replace(cfg, **fields)


def stage_config_key(cfg) -> dict:
    """The stage config as it enters a checkpoint key: as its method trains (:func:`for_method`: a DPO checkpoint at
    ``dpo_learning_rate`` x has the key of one at ``learning_rate`` x), without :data:`PERF_ONLY_FIELDS` and
    :data:`NOT_TRAINING_FIELDS`, and without
    ``group_by_length`` when it is off (the behaviour before it existed), so older checkpoints keep their keys."""
    out = {k: v for k, v in dataclasses.asdict(for_method(cfg)).items()
           if k not in PERF_ONLY_FIELDS + NOT_TRAINING_FIELDS}
    out.pop("dpo_learning_rate", None)  # folded into learning_rate by for_method
    if not out.get("group_by_length", True):
        out.pop("group_by_length")
    if out.get("pair_cut") == "none":
        out.pop("pair_cut")
    return out


def release_memory() -> None:
    """Give a finished trainer's GPU memory back (the model, its optimizer state and activations) before the next
    stage loads a model or wakes the vLLM engine."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def has_training_data(pool: list, pairs: list[dict], cfg) -> bool:
    """Whether ``dpo.method`` has anything to learn from: pairs for DPO, a good-enough candidate for RS-SFT. A judge
    that never parses leaves neither (every reward is None)."""
    return bool(rs_sft_rows(pool)) if cfg.method == "rs_sft" else bool(pairs)


def train_cached(store, name: str, start_path, pool: list, pairs: list[dict], cfg, *, ref_path=None,
                 place=None) -> dict:
    """:func:`train_stage` from ``start_path`` into ``<run>/checkpoints/<name>-<key>`` (key: start weights, stage
    config, data), so a rerun loads the checkpoint. The DPO reference is ``ref_path`` (default: the start policy); with
    ``dpo.cache_ref`` it is loaded only for pairs the store lacks. Policies load on ``place``'s device and precision
    (:func:`rlrf_nb.models.placement`; default CPU fp32), which also sets the trainer's. With no training data
    (:func:`has_training_data`, e.g. the judge never parsed) the start policy comes back untrained, ``info["method"]``
    saying why and ``trained`` False. Returns ``{"path", "model", "tokenizer", "info", "cached", "trained"}``."""
    if not has_training_data(pool, pairs, cfg):
        what = "no pairs" if cfg.method == "dpo" else "no candidate good enough for RS-SFT"
        log.info(f"{name}: {what}, so nothing is trained: the policy stays {start_path}")
        model, tok = models.load_policy(start_path, place=place)
        info = {"name": name, "method": f"none ({what})", "start_from": str(start_path), "pairs": 0, "steps": 0,
                "train_seconds": 0.0, "history": [], "preflight": {"pairs": 0},
                "diagnostics": {"notes": [f"{what}: nothing was trained (every candidate tied, failed to parse, or "
                                          "was rejected), so this policy is its starting point"]}}
        return {"path": Path(start_path), "model": model, "tokenizer": tok, "info": info, "cached": False,
                "trained": False}
    data = [p.get("key") or content_key({k: p[k] for k in ("prompt", "chosen", "rejected")}) for p in pairs]
    if cfg.method == "rs_sft":
        data = [content_key(r) for r in rs_sft_rows(pool)]
    start_fp = models.model_fingerprint(start_path)
    ref_fp = start_fp if cfg.lora or ref_path is None else models.model_fingerprint(ref_path)
    spec = {"start": start_fp, "ref": models.model_fingerprint(ref_path or start_path), "cfg": stage_config_key(cfg),
            "data": data}
    if place is not None and (place.device, place.train_dtype) != ("cpu", torch.float32):
        spec["place"] = place.describe()  # GPU / bf16 training gives other weights (CPU fp32 keys are unchanged)
    path = store.path("checkpoints", f"{name}-{content_key(spec)}")
    cached = is_complete(path)
    if not cached:
        log.info(f"training {name} ({cfg.method}) from {start_path} ...")
        model, tok = models.load_policy(start_path, place=place, train=True)
        kw, ref = {}, None  # a frozen reference beside the policy only for DPO without LoRA or precomputed log-probs
        if cfg.method == "dpo" and cfg.cache_ref:
            # reference log-probs from the run store; the reference is loaded only for pairs it lacks, and only
            # when it is not the starting policy itself (TRL then uses the policy before training)
            separate = not cfg.lora and ref_path is not None and ref_fp != start_fp
            kw = {"ref_store": store, "ref_fingerprint": ref_fp,
                  "ref_loader": (lambda: models.load_policy(ref_path, place=place, train=True)[0]) if separate
                  else None}
        elif cfg.method == "dpo" and not (cfg.lora or cfg.precompute_ref):
            ref = models.load_policy(ref_path or start_path, place=place, train=True)[0]
        out = train_stage(model, tok, pool, pairs, cfg, store.path("trainer_tmp", name), ref_model=ref, place=place,
                          **kw)
        info = {"name": name, "method": out["method"], "start_from": str(start_path),
                "reference": str(ref_path or start_path) if cfg.method == "dpo" else None,
                "pairs": len(pairs) if cfg.method == "dpo" else len(rs_sft_rows(pool)),
                "train_seconds": round(out["seconds"], 1), "steps": out["steps"], "history": out["history"],
                "preflight": {k: v for k, v in out.get("preflight", {}).items() if k != "decoded"},
                "probe": out.get("eval"), "ref_cache": out.get("ref_cache"),
                "placement": place.describe() if place is not None else None, "lora_merged": bool(cfg.lora),
                "diagnostics": stage_diagnostics(out)}
        save_checkpoint(out["model"], tok, path, info)
        del model, ref, out
        release_memory()
    model, tok = models.load_policy(path, place=place)
    info = models.training_log(path)
    if info is not None and info.get("diagnostics") is None:  # RS-SFT, cached before stage_diagnostics (stop 51)
        info["diagnostics"] = stage_diagnostics({"method": info.get("method", "rs_sft"),
                                                 "history": info.get("history", []), "eval": info.get("probe"),
                                                 "steps": info.get("steps")})
    return {"path": path, "model": model, "tokenizer": tok, "info": info, "cached": cached, "trained": True}


# ---------------------------------------------------------------------------------------------------------------
# Positive controls (notebook 03): training that must raise M0 before a null result of the method is read
# ---------------------------------------------------------------------------------------------------------------


def gold_candidates(examples: list) -> list:
    """Each example's reference solution as a perfect candidate (reward 1, right answer): SFT on these through the
    RS-SFT path (:func:`rs_sft_rows` picks exactly them) is the *gold SFT* control."""
    return [Candidate(f"{ex.id}/gold", ex.id, ex.prompt, ex.reference, "sample", 1.0, {}, correct=True)
            for ex in examples if ex.reference]


def gold_pairs(examples: list, pool: list) -> list[dict]:
    """The *gold DPO* control: per prompt, the reference solution (chosen) against the policy's lowest-reward
    wrong-answer candidate in ``pool`` (rejected); prompts where the policy has no wrong candidate give no pair.
    Rows are :func:`rlrf_nb.pairs.build_pairs` rows (policy ``best_vs_worst``, so a right-over-wrong pair)."""
    gold = {c.prompt_id: c for c in gold_candidates(examples)}
    worst = {pid: min(cs, key=lambda c: c.reward)  # the first of ties
             for pid, cs in group_by_prompt(c for c in pool if c.prompt_id in gold and c.correct is False
                                            and c.reward is not None).items()}
    return build_pairs([gold[pid] for pid in worst] + list(worst.values()), "best_vs_worst")
