"""Online RL on the fine-grained reward (issue 20): GRPO and RLOO through TRL's own trainers, as round variants.

Where RLRF searches offline (sample, judge, refine, pair, then DPO), GRPO (Shao et al. 2024, arXiv 2402.03300) and
RLOO (Ahmadian et al. 2024, arXiv 2402.14740) sample a group of ``online_rl.num_generations`` completions per prompt
with the policy being trained, score each one and move the policy towards the completions that beat their group's
baseline. Here the score is the paper's fine-grained feedback reduced to one number, exactly as the search pools
rank candidates: the kit's judge (the tiny world's verifier, or the LLM judge of ``feedback.judge``) scores each aspect
on its rubric, and :func:`rlrf_nb.feedback.scalar_reward` takes the ``feedback.weights``-weighted mean of the
normalised scores.

- :class:`JudgeReward` is the TRL reward function. A judgement that does not parse gives **no reward**: the function
  returns ``None`` for it, which TRL turns into NaN, leaves out of the group baseline and gives zero advantage
  (``GRPOTrainer._generate_and_score_completions``, ``RLOOTrainer`` likewise, TRL 1.16). It is never turned into a
  score; it is counted, with the judge's raw text and error, in :attr:`JudgeReward.failures`.
- :func:`train_online` builds TRL's ``GRPOConfig`` / ``RLOOConfig`` from the recipe's ``online_rl`` section and runs
  ``GRPOTrainer`` / ``RLOOTrainer``; it returns the trained model with the compute it spent (wall time, generated
  tokens, judge calls) so that variants can be compared per unit of compute.

No loss, sampler or advantage is written here: TRL does the training.
"""

from __future__ import annotations

import logging
import time

from rlrf_nb.feedback import scalar_reward, select_aspects
from rlrf_nb.prompts import chat

log = logging.getLogger(__name__)

ONLINE_METHODS = ("grpo", "rloo")
FAILURES_KEPT = 50  # parse failures kept with their raw text (all of them are counted)


class JudgeReward:
    """A TRL reward function (called as ``f(prompts=..., completions=..., example_id=[...], **kwargs)``, one reward
    per completion) that judges each completion with ``judge`` on its prompt's aspects
    (:func:`rlrf_nb.feedback.select_aspects`) and returns :func:`rlrf_nb.feedback.scalar_reward` in [0, 1], or
    ``None`` when the judgement did not parse. ``examples``: the training prompts, looked up by the dataset's
    ``example_id`` column (the verifier judges against their ground truth).

    Counts: ``judged`` completions, ``generated_tokens`` (from TRL's ``completion_ids``), ``failures`` (each parse
    failure's example id, response, error and raw judge text; the first :data:`FAILURES_KEPT`) and
    ``n_failures`` (all of them). With TRL's ``log_metric`` the share of failures per batch is logged as
    ``judge/parse_failure_rate`` beside TRL's own reward metrics."""

    __name__ = "judge_reward"  # TRL names reward functions by __name__ in its logs (reward/judge_reward/mean)

    def __init__(self, judge, rubrics, examples: list, weights: dict | None = None):
        self.judge, self.rubrics, self.weights = judge, rubrics, weights
        self.examples = {ex.id: ex for ex in examples}
        self.aspects = {ex.id: select_aspects(ex, rubrics)[0] for ex in examples}
        self.judged, self.n_failures, self.generated_tokens = 0, 0, 0
        self.failures: list[dict] = []

    def __call__(self, prompts, completions, example_id, completion_ids=None, log_metric=None, **kwargs):
        rewards, failed = [], 0
        for completion, eid in zip(completions, example_id):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            ex = self.examples[eid]
            fb = self.judge.judge(ex.prompt, text, self.aspects[eid], example=ex)
            reward = scalar_reward(fb, self.weights)
            if reward is None:  # a parse failure: no reward, never a score
                failed += 1
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append({"example_id": eid, "response": text, "judge_id": fb.judge_id,
                                          "error": "; ".join(a.error for a in fb.aspects if a.error) or "no aspects",
                                          "raw": fb.raw})
            rewards.append(reward)
        self.judged += len(rewards)
        self.n_failures += failed
        self.generated_tokens += sum(len(ids) for ids in completion_ids or [])
        if log_metric is not None and rewards:
            log_metric("judge/parse_failure_rate", failed / len(rewards))
        return rewards

    def stats(self) -> dict:
        """What the reward cost and how often it failed (recorded with the checkpoint)."""
        return {"judge_id": self.judge.id, "judged": self.judged, "parse_failures": self.n_failures,
                "parse_failure_rate": self.n_failures / self.judged if self.judged else None,
                "generated_tokens": self.generated_tokens, "failure_examples": self.failures}


def online_args(cfg, method: str, out_dir, place=None, seed: int = 0) -> dict:
    """TRL ``GRPOConfig`` / ``RLOOConfig`` keyword arguments from an ``online_rl`` section (:class:`OnlineRLConfig`):
    the group size, completion cap, sampling temperature, KL coefficient (``kl_coef``, TRL's ``beta``; None: TRL's
    default for ``method``), steps and optimiser, with the precision of ``place`` (fp32 on CPU: ``use_cpu``, TRL's bf16 default fails there)."""
    from rlrf_nb.training import device_precision, gradient_checkpointing

    if method not in ONLINE_METHODS:
        raise ValueError(f"online RL method must be one of {ONLINE_METHODS}, got {method!r}")
    args = {"output_dir": str(out_dir), **device_precision(place), "report_to": "none",
            "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
            "temperature": cfg.temperature, "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.epochs,
            "max_steps": cfg.max_steps, "lr_scheduler_type": "constant", "logging_steps": cfg.logging_steps,
            "save_strategy": "no", "seed": seed, "disable_tqdm": True,
            "activation_checkpointing": gradient_checkpointing(cfg, place)}
    if cfg.kl_coef is not None:
        args["beta"] = cfg.kl_coef
    return args


def prompt_dataset(examples: list):
    """The prompts as TRL's conversational prompt-only dataset, with each example's id for :class:`JudgeReward`."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": chat(ex.prompt), "example_id": ex.id} for ex in examples])


def train_online(model, tokenizer, examples: list, judge, rubrics, cfg, out_dir, *, method: str = "grpo",
                 weights: dict | None = None, place=None, seed: int = 0) -> dict:
    """GRPO or RLOO (``method``) of ``model`` on the prompts of ``examples``, rewarded by :class:`JudgeReward`
    (``judge``'s per-aspect scores, ``weights`` by aspect), with TRL's ``GRPOTrainer`` / ``RLOOTrainer`` configured by
    ``cfg`` (an ``online_rl`` section) and ``seed``. With ``cfg.kl_coef`` > 0 TRL builds the reference from the
    model's own path (``config._name_or_path``: the checkpoint it was loaded from), or with ``cfg.lora`` disables the
    adapter.

    Returns ``{"model", "history", "seconds", "steps", "method", "reward"}``: the trained model (a LoRA adapter
    merged), TRL's log history, wall time, optimiser steps and :meth:`JudgeReward.stats` (judge calls, parse failures
    with their raw text, generated tokens)."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlrf_nb.training import _lora_config, _quiet

    if not examples:
        raise ValueError(f"{method}: no prompts to train on")
    reward = JudgeReward(judge, rubrics, examples, weights)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if method == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**online_args(cfg, method, out_dir, place, seed))
    t0 = time.monotonic()
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=prompt_dataset(examples),
                          processing_class=tokenizer, peft_config=_lora_config(cfg) if cfg.lora else None)
    _quiet(trainer)
    trainer.train()
    seconds = time.monotonic() - t0
    trained = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    trained.eval()
    stats = reward.stats()
    log.info(f"{method}: {trainer.state.global_step} steps in {seconds:.0f} s, {stats['judged']} completions judged "
             f"({stats['parse_failures']} parse failures, no reward), {stats['generated_tokens']} tokens generated")
    return {"model": trained, "history": trainer.state.log_history, "seconds": seconds,
            "steps": trainer.state.global_step, "method": method, "reward": stats}
