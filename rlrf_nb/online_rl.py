"""Online RL on the fine-grained reward (issue 20): GRPO and RLOO through TRL's own trainers, as round variants.

GRPO (arXiv 2402.03300) and RLOO (arXiv 2402.14740) sample a group of ``online_rl.num_generations`` completions per
prompt with the policy being trained and move it towards those that beat their group's baseline. The score is the kit's
judge (the tiny world's verifier, or the LLM judge of ``feedback.judge``) reduced to one number exactly as the search
ranks candidates: :func:`rlrf_nb.feedback.scalar_reward`, the ``feedback.weights``-weighted mean of the normalised
aspect scores. :class:`JudgeReward` is the reward function (an unparsed judgement gives no reward, never a score),
:func:`reflective_rollout` makes GRPO groups of drafts and refinements, :func:`train_online` runs the trainer.

No loss or advantage is written here: TRL does the training.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import time

from rlrf_nb.config import ONLINE_VARIANTS
from rlrf_nb.feedback import scalar_reward, select_aspects
from rlrf_nb.generation import generate_ids, render_prompts
from rlrf_nb.models import load_policy, model_fingerprint, training_log
from rlrf_nb.prompts import chat
from rlrf_nb.reflection import notes_from_feedback
from rlrf_nb.store import content_key, is_complete
from rlrf_nb.training import fit, lora_config, quiet_trainer, release_memory, save_checkpoint, trainer_args

log = logging.getLogger(__name__)

FAILURES_KEPT = 50  # parse failures kept with their raw text (all of them are counted)


class JudgeReward:
    """A TRL reward function (``f(prompts=..., completions=..., example_id=[...], **kwargs)``, one reward per
    completion) that judges each completion with ``judge`` on its prompt's aspects
    (:func:`rlrf_nb.feedback.select_aspects`) and returns :func:`rlrf_nb.feedback.scalar_reward` in [0, 1], or ``None``
    when the judgement did not parse (TRL then gives it NaN reward, outside the group baseline, and zero advantage).
    ``examples``: the training prompts, looked up by the dataset's ``example_id`` column (the verifier judges against
    their ground truth).

    Counts ``completions``, ``judged`` (judge calls; identical completions of a batch share one judgement),
    ``generated_tokens`` (from TRL's ``completion_ids``), ``failures`` (example id, response, error and raw judge text
    of the first :data:`FAILURES_KEPT`) and ``n_failures`` (all); logs ``judge/parse_failure_rate`` per batch through
    TRL's ``log_metric``, and keeps rewards per ``kind`` column (draft / refinement) when there is one."""

    __name__ = "judge_reward"  # TRL names reward functions by __name__ in its logs (reward/judge_reward/mean)

    def __init__(self, judge, rubrics, examples: list, weights: dict | None = None):
        self.judge, self.rubrics, self.weights = judge, rubrics, weights
        self.examples = {ex.id: ex for ex in examples}
        self.aspects = {ex.id: select_aspects(ex, rubrics)[0] for ex in examples}
        self.completions, self.judged, self.n_failures, self.generated_tokens = 0, 0, 0, 0
        self.failures: list[dict] = []
        self.by_kind: dict[str, list] = {}  # reflective groups: rewards of drafts and of refinements
        self._memo: dict[tuple[str, str], object] = {}  # this batch's drafts, judged by the rollout already

    def feedback(self, example_id: str, text: str):
        """The judge's :class:`~rlrf_nb.feedback.Feedback` on ``text`` (one call per distinct draft of a batch: a
        reflective rollout judges its drafts to critique them, and their reward reuses that judgement)."""
        key = (example_id, text)
        if key not in self._memo:
            ex = self.examples[example_id]
            self._memo[key] = self.judge.judge(ex.prompt, text, self.aspects[example_id], example=ex)
            self.judged += 1
        return self._memo[key]

    def __call__(self, prompts, completions, example_id, completion_ids=None, log_metric=None, kind=None,
                 **kwargs):
        rewards, failed = [], 0
        for i, (completion, eid) in enumerate(zip(completions, example_id)):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            fb = self.feedback(eid, text)
            reward = scalar_reward(fb, self.weights)
            if reward is None:  # a parse failure: no reward, never a score
                failed += 1
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append({"example_id": eid, "response": text, "judge_id": fb.judge_id,
                                          "error": "; ".join(a.error for a in fb.aspects if a.error) or "no aspects",
                                          "raw": fb.raw})
            rewards.append(reward)
            if kind is not None:
                self.by_kind.setdefault(kind[i], []).append(reward)
        self._memo.clear()
        self.completions += len(rewards)
        self.n_failures += failed
        self.generated_tokens += sum(len(ids) for ids in completion_ids or [])
        if log_metric is not None and rewards:
            log_metric("judge/parse_failure_rate", failed / len(rewards))
        return rewards

    def stats(self) -> dict:
        """What the reward cost and how often it failed (recorded with the checkpoint)."""
        out = {"judge_id": self.judge.id, "completions": self.completions, "judged": self.judged,
               "parse_failures": self.n_failures,
               "parse_failure_rate": self.n_failures / self.completions if self.completions else None,
               "generated_tokens": self.generated_tokens, "failure_examples": self.failures}
        for k, rs in self.by_kind.items():
            scored = [r for r in rs if r is not None]
            out[f"{k}_reward_mean"] = sum(scored) / len(scored) if scored else None
        return out


def reflective_rollout(reward: JudgeReward, tokenizer, rubrics, cfg):
    """A TRL ``rollout_func`` (``GRPOTrainer(rollout_func=...)``; TRL 1.16 calls it with the batch's prompts,
    ``num_generations`` consecutive copies of each, and the trainer) whose groups are *reflective*: the first
    ``G - G // 2`` members of a prompt's group are the policy's drafts, the other ``G // 2`` its refinements of the
    first drafts from their per-aspect critiques (:func:`rlrf_nb.prompts.refinement_prompt`), all trained as
    completions of the original prompt (in the spirit of Critique-GRPO, arXiv 2506.03106). TRL's one-iteration GRPO
    loss treats the off-policy refinements as sampled (no importance correction): the variant's assumption. Drafts are
    judged through ``reward.feedback`` (to critique them), and their reward reuses that judgement; members carry a
    ``kind`` column (draft / refinement)."""
    from rlrf_nb.prompts import refinement_prompt

    by_prompt = {ex.prompt: ex for ex in reward.examples.values()}
    gen = {"max_new_tokens": cfg.max_completion_length, "do_sample": True, "temperature": cfg.temperature}

    def rollout(prompts: list, trainer) -> dict:
        g = trainer.num_generations
        groups = prompts[::g]
        if [p for p in groups for _ in range(g)] != prompts:
            raise ValueError(f"reflective rollout: expected {g} consecutive copies of each prompt from TRL's sampler")
        n_drafts, n_refine = g - g // 2, g // 2
        model = trainer.accelerator.unwrap_model(trainer.model)
        training = model.training
        model.eval()
        drafts = generate_ids(model, tokenizer, groups, num_return_sequences=n_drafts, batch_size=len(groups), **gen)
        refine = []
        for conv, ds in zip(groups, drafts):
            ex = by_prompt[conv[-1]["content"]]
            for ids in ds[:n_refine]:
                text = tokenizer.decode(ids, skip_special_tokens=True)
                notes = notes_from_feedback(reward.feedback(ex.id, text).to_dict(), rubrics)
                refine.append(chat(refinement_prompt(ex.prompt, text, notes)))
        refined = generate_ids(model, tokenizer, refine, batch_size=max(1, len(refine)), **gen) if refine else []
        model.train(training)
        prompt_ids = tokenizer(render_prompts(tokenizer, groups), add_special_tokens=False)["input_ids"]
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "kind": []}
        for j, (p_ids, ds) in enumerate(zip(prompt_ids, drafts)):
            members = [(ids, "draft") for ids in ds] + [(r[0], "refinement")
                                                        for r in refined[j * n_refine:(j + 1) * n_refine]]
            for ids, kind in members:
                out["prompt_ids"].append(list(p_ids))
                out["completion_ids"].append(list(ids))
                out["kind"].append(kind)
        return out

    return rollout


def online_args(cfg, method: str, out_dir, place=None, seed: int = 0) -> dict:
    """TRL ``GRPOConfig`` / ``RLOOConfig`` keyword arguments from an ``online_rl`` section (:class:`OnlineRLConfig`),
    with the precision of ``place`` (fp32 on CPU via ``use_cpu``: TRL's bf16 default fails there). ``kl_coef`` is TRL's
    ``beta`` (None: TRL's default for ``method``); ``vllm`` turns on TRL's colocated vLLM sampling on a GPU (an error
    elsewhere)."""
    if method not in ONLINE_VARIANTS:  # grpo, rloo, grpo_reflect: the round variants are the methods
        raise ValueError(f"online RL method must be one of {ONLINE_VARIANTS}, got {method!r}")
    args = {**trainer_args(cfg, out_dir, place, seed), "num_generations": cfg.num_generations,
            "max_completion_length": cfg.max_completion_length, "temperature": cfg.temperature,
            "max_steps": cfg.max_steps, "lr_scheduler_type": "constant"}
    if cfg.kl_coef is not None:
        args["beta"] = cfg.kl_coef
    if cfg.vllm and method != "grpo_reflect":  # the reflective rollout samples with the kit's generate_ids
        device, has_vllm = str(place.device if place is not None else "cpu"), importlib.util.find_spec("vllm")
        if not device.startswith("cuda") or has_vllm is None:
            raise ValueError(f"online_rl.vllm: TRL's vLLM generation needs a CUDA device and the vllm package; this "
                             f"run is on {device} and vllm is {'' if has_vllm else 'not '}installed. Set "
                             "online_rl.vllm: false to sample with transformers.")
        args |= {"use_vllm": True, "vllm_mode": "colocate",
                 "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization}
    return args


def train_online(model, tokenizer, examples: list, judge, rubrics, cfg, out_dir, *, method: str = "grpo",
                 weights: dict | None = None, place=None, seed: int = 0) -> dict:
    """GRPO, RLOO or reflective GRPO (``method``: grpo, rloo, grpo_reflect) of ``model`` on ``examples``' prompts,
    rewarded by :class:`JudgeReward` (``judge``'s per-aspect scores, ``weights`` by aspect), with TRL's ``GRPOTrainer``
    / ``RLOOTrainer`` configured by ``cfg`` (an ``online_rl`` section) and ``seed``. With ``cfg.kl_coef`` > 0 TRL builds
    the reference from the model's own path (``config._name_or_path``: the checkpoint it was loaded from), or with
    ``cfg.lora`` disables the adapter.

    Returns :func:`rlrf_nb.training.fit`'s dict (the trained model, a LoRA adapter merged; TRL's log history; wall time;
    optimiser steps; no evaluation) with ``method`` and ``reward``: :meth:`JudgeReward.stats` (judge calls, parse
    failures, generated tokens)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    if not examples:
        raise ValueError(f"{method}: no prompts to train on")
    reward = JudgeReward(judge, rubrics, examples, weights)
    config_cls, trainer_cls = (RLOOConfig, RLOOTrainer) if method == "rloo" else (GRPOConfig, GRPOTrainer)
    args = config_cls(**online_args(cfg, method, out_dir, place, seed))
    extra = {"rollout_func": reflective_rollout(reward, tokenizer, rubrics, cfg)} if method == "grpo_reflect" else {}
    t0 = time.monotonic()
    # TRL's conversational prompt-only dataset, with each example's id for JudgeReward
    prompts = Dataset.from_list([{"prompt": chat(ex.prompt), "example_id": ex.id} for ex in examples])
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=prompts,
                          processing_class=tokenizer, peft_config=lora_config(cfg) if cfg.lora else None, **extra)
    quiet_trainer(trainer)
    out = fit(trainer, cfg.lora, t0)
    stats = reward.stats()
    log.info(f"{method}: {out['steps']} steps in {out['seconds']:.0f} s, {stats['completions']} completions "
             f"rewarded ({stats['judged']} judge calls, {stats['parse_failures']} parse failures: no reward), "
             f"{stats['generated_tokens']} tokens generated")
    return {**out, "method": method, "reward": stats}


def run_online(start_path, examples: list, judge, rubrics, recipe, method: str, out_dir, *, seed: int,
               place=None) -> dict:
    """:func:`train_online` from the policy at ``start_path`` with the recipe's ``online_rl`` section and
    ``feedback.weights``. Returns ``{"model", "tokenizer", "info"}``; ``info`` is what the checkpoint records: method,
    start, reference, prompts, steps, wall time, generated tokens, judge calls, parse failures (the first with raw
    text) and TRL's log history."""
    cfg = recipe.online_rl
    model, tok = load_policy(start_path, place=place, train=True)
    out = train_online(model, tok, examples, judge, rubrics, cfg, out_dir, method=method,
                       weights=recipe.feedback.weights, place=place, seed=seed)
    kl = cfg.kl_coef
    if kl is None:  # TRL's own default KL coefficient of the method, read from its config class (not copied)
        from trl import GRPOConfig, RLOOConfig

        kl = next(f.default for f in dataclasses.fields(RLOOConfig if method == "rloo" else GRPOConfig)
                  if f.name == "beta")
    info = {"method": method, "start_from": str(start_path), "reference": str(start_path) if kl else None,
            "kl_coef": kl, "prompts": len(examples), "steps": out["steps"], "train_seconds": round(out["seconds"], 1),
            **{k: out["reward"][k] for k in ("generated_tokens", "completions", "judged", "parse_failures",
                                              "parse_failure_rate", "judge_id", "failure_examples")},
            "seed": seed, "history": out["history"],
            "placement": place.describe() if place is not None else None, "lora_merged": bool(cfg.lora)}
    return {"model": out["model"], "tokenizer": tok, "info": info}


def train_online_cached(store, name: str, start_path, examples: list, judge, rubrics, recipe, method: str, *,
                        seed: int, place=None) -> dict:
    """:func:`run_online` into ``<run>/checkpoints/<name>-<key>`` (the key hashes start weights, method, section,
    prompts, judge, rubrics, weights and seed): a rerun loads the finished checkpoint, like
    :func:`rlrf_nb.training.train_cached`. Returns ``{"path", "model", "tokenizer", "info", "cached", "trained"}``."""
    spec = {"start": model_fingerprint(start_path), "method": method, "cfg": dataclasses.asdict(recipe.online_rl),
            "prompts": [[ex.id, ex.prompt] for ex in examples], "judge": judge.id, "rubrics": rubrics.version,
            "weights": recipe.feedback.weights, "seed": seed}
    if place is not None and place.device != "cpu":
        spec["place"] = place.describe()
    path = store.path("checkpoints", f"{name}-{content_key(spec)}")
    cached = is_complete(path)
    if not cached:
        log.info(f"training {name} ({method}) from {start_path} on {len(examples)} prompts ...")
        out = run_online(start_path, examples, judge, rubrics, recipe, method, store.path("trainer_tmp", name),
                         seed=seed, place=place)
        save_checkpoint(out["model"], out["tokenizer"], path, {"name": name, **out["info"]})
        del out
        release_memory()
    model, tok = load_policy(path, place=place)
    return {"path": path, "model": model, "tokenizer": tok, "info": training_log(path), "cached": cached,
            "trained": True}
