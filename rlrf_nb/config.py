"""Typed stage configs loaded from YAML recipes (one mapping per stage section, e.g. ``run: {name: tiny, seed: 0}``).

Each section maps to a config dataclass through :data:`SECTIONS`: to add a stage, define its dataclass (typed fields
with ``metadata={"help": ...}``, a ``__post_init__`` that calls :func:`check`) and add it there; :class:`Recipe`,
:func:`load_recipe` and :func:`recipe_to_dict` pick it up. Every error is a :class:`ConfigError` naming the file and the
dotted field (``recipes/tiny.yaml: unknown key 'run.sed' (did you mean 'seed'?)``).

Why not transformers' ``HfArgumentParser`` / TRL's ``TrlParser`` (checked against transformers 5.23, TRL 1.16): they
pass values to the dataclass unchecked (``seed: abc`` reaches ``__post_init__`` as text), name neither file nor field
for an unknown key, and ``TrlParser`` reads one flat namespace where sections share field names; built on them, 17 of
the 32 tests in tests/test_config.py fail. Why ``DPOStageConfig`` does not subclass TRL's ``DPOConfig``: its defaults
differ (learning rate 1e-6, seed 42, max_length 1024), a default ``DPOConfig`` raises on a CPU-only machine (bf16), its
enums do not dump to YAML, and ``rs_sft`` trains with ``SFTConfig``; ``rlrf_nb.training._common_args`` maps the section
onto both.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlrf_nb.paths import is_hub_dataset


class ConfigError(ValueError):
    """A recipe, section or field is invalid; the message names the file and the dotted field."""


def check(cond: bool, name: str, msg: str) -> None:
    """Raise ``ConfigError("<name> <msg>")`` unless ``cond``; keeps ``__post_init__`` checks one-liners."""
    if not cond:
        raise ConfigError(f"{name} {msg}")


def check_at_least(cfg: object, section: str, names: tuple[str, ...], low: int) -> None:
    """``check`` that each field in ``names`` is >= ``low``, naming ``<section>.<field>``."""
    for name in names:
        value = getattr(cfg, name)
        check(value >= low, f"{section}.{name}", f"must be >= {low}, got {value}")


# --------------------------------------------- Stage configs. One dataclass per section; field names are the YAML keys.


@dataclass
class RunConfig:
    """Where a run writes and how it is seeded."""

    name: str = field(default="tiny", metadata={"help": "Run name; the run directory is <runs_dir>/<name>."})
    seed: int = field(default=0, metadata={"help": "Seed for python, numpy and torch RNGs."})
    runs_dir: str = field(default="runs", metadata={"help": "Parent folder of all run directories."})
    device: str = field(default="auto", metadata={"help": "Where policies sample, are evaluated and train: auto "
                                                          "(cuda when a GPU is visible, else cpu), cuda or cpu."})
    dtype: str = field(default="auto", metadata={"help": "Weights' precision there: auto (bfloat16 on a GPU that "
                                                         "supports it, float16 on an older GPU, float32 on CPU), "
                                                         "float32, bfloat16 or float16."})

    def __post_init__(self):
        check(re.fullmatch(r"[A-Za-z0-9._-]+", self.name) is not None, "run.name",
              f"must match [A-Za-z0-9._-]+ (it names a folder), got {self.name!r}")
        check(self.seed >= 0, "run.seed", f"must be >= 0, got {self.seed}")
        check(self.device in ("auto", "cuda", "cpu"), "run.device", f"must be auto, cuda or cpu, got {self.device!r}")
        check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "run.dtype",
              f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class WorldConfig:
    """The tiny world (notebook 00): sizes of its splits and how hard and noisy it is."""

    seed: int = field(default=0, metadata={"help": "World seed; data/tiny_world/ is generated from seed 0."})
    min_steps: int = field(default=2, metadata={"help": "Fewest arithmetic steps in a math problem."})
    max_steps: int = field(default=4, metadata={"help": "Most arithmetic steps in a math problem."})
    max_value: int = field(default=20, metadata={"help": "Largest number in a problem or any intermediate result."})
    max_factor: int = field(default=4, metadata={"help": "Largest multiplier or divisor."})
    max_operand: int = field(default=5, metadata={"help": "Largest number added or subtracted in one step."})
    min_value: int = field(default=0, metadata={"help": "World v2: > 0 puts the start, every operand and every "
                                                        "result in [min_value, max_value] (0: world v1's chains)."})
    ops: str = field(default="+-*/", metadata={"help": "World v2: the operations a step may use (any of + - *)."})
    scratchpad: bool = field(default=False, metadata={"help": "World v2: every solution line works its sum column "
                                                              "by column before the annotation."})
    critique_quotes: bool = field(default=False, metadata={"help": "World v2: the verifier's critique of a wrong or "
                                                                   "missing step quotes the problem's sentence."})
    math_test: int = field(default=500, metadata={"help": "Held-out math test problems (fixed; >= 500 in the demo)."})
    math_dev: int = field(default=200, metadata={"help": "Held-out math dev problems, for per-round accuracy."})
    math_rl: int = field(default=1000, metadata={"help": "Math prompts reserved for the RLRF rounds."})
    math_train: int = field(default=20000, metadata={"help": "Math problems M0 may see in pre-training."})
    n_people: int = field(default=300, metadata={"help": "Fictional people in the knowledge base (>= 200)."})
    people_test: int = field(default=60, metadata={"help": "People whose bios are the test prompts."})
    people_dev: int = field(default=40, metadata={"help": "People whose bios are the dev prompts."})
    people_rl: int = field(default=60, metadata={"help": "People whose bios are RL prompts; the rest are SFT people."})
    docs_per_person: int = field(default=6, metadata={"help": "Noisy web documents per person in pre-training."})
    min_docs_per_person: int = field(default=0, metadata={"help": "World v2: >= 1 gives each person a log-uniform "
                                                                  "number of documents in [min, docs_per_person] (a "
                                                                  "popularity tail); 0: docs_per_person each."})
    bio_error_rate: float = field(default=0.1, metadata={"help": "Chance that a fact in a web document is wrong."})
    facts_per_person: int = field(default=6, metadata={"help": "Facts (KB attributes) per person, 6-12: the six of "
                                                               "worlds v1 and v2, then residence, instrument, sport, "
                                                               "pet, award, language. FActScore's length penalty "
                                                               "(gamma 10) caps a bio of 6 facts at 0.513; 10 or more "
                                                               "lift the cap."})

    def __post_init__(self):
        check(1 <= self.min_steps <= self.max_steps <= 8, "world.min_steps/max_steps",
              f"need 1 <= min_steps <= max_steps <= 8, got {self.min_steps}, {self.max_steps}")
        check(10 <= self.max_value <= 10_000, "world.max_value", f"must be in [10, 10000], got {self.max_value}")
        check(2 <= self.max_factor <= 12, "world.max_factor", f"must be in [2, 12], got {self.max_factor}")
        check(1 <= self.max_operand < self.max_value, "world.max_operand",
              f"must be in [1, max_value), got {self.max_operand}")
        check(0 <= self.min_value <= self.max_value // 3, "world.min_value",
              f"must be in [0, max_value // 3] (a step needs room above and below), got {self.min_value}")
        check(bool(self.ops) and set(self.ops) <= set("+-*/") and (not self.min_value or "/" not in self.ops),
              "world.ops", f"must be some of '+-*/' ('+-*' with min_value > 0), got {self.ops!r}")
        check(0 <= self.min_docs_per_person <= self.docs_per_person, "world.min_docs_per_person",
              f"must be in [0, docs_per_person], got {self.min_docs_per_person}")
        check(6 <= self.facts_per_person <= 12, "world.facts_per_person",
              f"must be in [6, 12], got {self.facts_per_person}")
        check_at_least(self, "world", ("math_test", "math_dev", "math_rl", "math_train", "people_test",
                                    "people_dev", "people_rl", "docs_per_person"), 1)
        people = self.people_test + self.people_dev + self.people_rl
        check(self.n_people > people, "world.n_people",
              f"must exceed people_test + people_dev + people_rl = {people} (the rest are SFT people), "
              f"got {self.n_people}")
        check(0.0 <= self.bio_error_rate < 0.5, "world.bio_error_rate",
              f"must be in [0, 0.5), got {self.bio_error_rate}")


@dataclass
class M0Config:
    """The M0 policy (notebook 00): where to load it from, or how to pre-train it from scratch on CPU."""

    pretrained: str = field(default="data/tiny_world/m0",
                            metadata={"help": "Local path or Hub id of M0, used when retrain is false."})
    retrain: bool = field(default=False, metadata={"help": "Pre-train M0 from scratch (cached by config hash)."})
    init_from: str = field(default="", metadata={"help": "Retrain: continue pre-training this checkpoint (its "
                                                         "tokenizer and weights) instead of a new model: a second "
                                                         "phase with another mix (world v2's M0)."})
    seed: int = field(default=0, metadata={"help": "Seed of weight init, data order and the training mix."})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size, special tokens included."})
    place_tags: bool = field(default=False, metadata={"help": "World v2: each digit is one token tagged with its "
                                                              "place in its number (rlrf_nb.models.PLACE_MARKS)."})
    hidden_size: int = field(default=96, metadata={"help": "Llama hidden size."})
    intermediate_size: int = field(default=256, metadata={"help": "Llama MLP size."})
    num_layers: int = field(default=4, metadata={"help": "Llama decoder layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads (no grouped-query attention)."})
    max_length: int = field(default=384,
                            metadata={"help": "Longest training sequence in tokens; longer ones are dropped."})
    n_math: int = field(default=14000, metadata={"help": "Worked math solutions in the mix."})
    n_math_refine: int = field(default=4000, metadata={"help": "Math refinement examples (draft + critique -> fix)."})
    n_bio_refine: int = field(default=500, metadata={"help": "Bio refinement examples."})
    scalar_refine_share: float = field(default=0.0, metadata={
        "help": "Share of math refinement examples whose feedback is the scalar-only message, so the scalar "
                "ablation's prompt is a format M0 knows."})
    n_drills: int = field(default=3000, metadata={"help": "Arithmetic drill documents (bare equations) in the mix."})
    drill_lines: int = field(default=12, metadata={"help": "Equations per drill document."})
    web_epochs: int = field(default=2, metadata={"help": "Passes over the noisy web documents."})
    bio_sft_epochs: int = field(default=2, metadata={"help": "Passes over the SFT people's bios."})
    prompt_loss: bool = field(default=True, metadata={"help": "Train on prompt tokens too (pre-training style)."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per optimizer step."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the whole mix."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate (cosine schedule)."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW's beta2 (the v2 pilot used 0.98)."})
    min_lr_rate: float = field(default=0.0, metadata={"help": "Cosine floor as a share of the peak rate (0: decay to "
                                                              "0; the v2 pilot used 0.1)."})
    logging_steps: int = field(default=25, metadata={"help": "Loss is logged every this many steps."})
    max_seconds: float = field(default=480.0, metadata={"help": "Pre-training past this many seconds logs a warning "
                                                                "(8 min budget); it never stops early, so a loaded "
                                                                "machine trains the same M0."})
    own_drafts: list[int] = field(default_factory=list, metadata={
        "help": "[start, stop] of the world's math train split: draft_model writes a greedy and a T = 1 solution "
                "for each of these problems, and each wrong one, with the verifier's critique, becomes a refinement "
                "example whose target is the gold solution, trained from the first line where the two differ "
                "(issue 16: M0 learns to read critiques of its own mistakes). Empty: none."})
    draft_model: str = field(default="", metadata={"help": "The checkpoint that writes own_drafts (default: "
                                                           "init_from)."})
    train_world: dict = field(default_factory=dict, metadata={
        "help": "World fields in which the world M0 was trained on differs from the recipe's, e.g. {max_steps: 4}: "
                "a retrain builds its training mix (train split, SFT people, own drafts) from the recipe's world with "
                "these fields replaced, so a recipe can evaluate a committed M0 on another world and still retrain "
                "that M0 (world v2-short: M0 trained on world v2's 2-4-step problems). Empty: the recipe's world."})
    math_steps_mix: list[int] = field(default_factory=list, metadata={
        "help": "Extra worked solutions by number of steps, from world.min_steps up: [n2, n3, n4] adds n2 2-step, "
                "n3 3-step and n4 4-step problems' gold solutions, a seeded sample of the train split beyond "
                "n_math (the own_drafts range excluded). Issue 16: M0 v2's natural mix left 3- and 4-step problems "
                "near 0 (phase 7 weights them). Empty: none."})
    n_critique_source: int = field(default=0, metadata={
        "help": "Math refinement examples in which the critique is the only source of the right number: the "
                "problem's sentence and the draft both carry one miscopied operand at the named step, the critique "
                "(against the true problem) states the right expression, and the target is the gold solution "
                "(issue 16: M0's refinements copy the draft or the problem, never the critique). 0: none."})
    critique_source_operand: str = field(default="digit", metadata={
        "help": "How n_critique_source miscopies the operand: 'digit' (one digit, trained from the first line the "
                "target changes: phase 9, which learnt to change a digit of the draft instead of reading the "
                "critique), 'far' (a number that differs in at least two digits, the whole target trained: phase 10) "
                "or 'far_from_step' (a far number, trained from the named step)."})

    def __post_init__(self):
        check(not self.own_drafts or (len(self.own_drafts) == 2 and 0 <= self.own_drafts[0] < self.own_drafts[1]),
              "m0.own_drafts", f"must be empty or [start, stop] with 0 <= start < stop, got {self.own_drafts!r}")
        check(not self.own_drafts or bool(self.draft_model or self.init_from), "m0.draft_model",
              "own_drafts needs a model to write them: set m0.draft_model or m0.init_from")
        check(all(n >= 0 for n in self.math_steps_mix), "m0.math_steps_mix",
              f"must be counts >= 0, one per number of steps from world.min_steps, got {self.math_steps_mix!r}")
        check_at_least(self, "m0", ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                                    "num_heads", "max_length", "batch_size", "logging_steps", "drill_lines"), 1)
        check(self.vocab_size >= 300, "m0.vocab_size",
              f"must be >= 300 (byte alphabet + specials), got {self.vocab_size}")
        check(self.hidden_size % self.num_heads == 0, "m0.hidden_size",
              f"must be divisible by num_heads={self.num_heads}, got {self.hidden_size}")
        check_at_least(self, "m0", ("n_math", "n_math_refine", "n_drills", "n_bio_refine", "web_epochs",
                                    "bio_sft_epochs", "warmup_steps", "n_critique_source"), 0)
        check(self.epochs > 0, "m0.epochs", f"must be > 0, got {self.epochs}")
        check(0 < self.adam_beta2 < 1, "m0.adam_beta2", f"must be in (0, 1), got {self.adam_beta2}")
        check(0 <= self.min_lr_rate < 1, "m0.min_lr_rate", f"must be in [0, 1), got {self.min_lr_rate}")
        check(self.critique_source_operand in ("digit", "far", "far_from_step"), "m0.critique_source_operand",
              f"must be 'digit', 'far' or 'far_from_step', got {self.critique_source_operand!r}")
        check(0 <= self.scalar_refine_share <= 1, "m0.scalar_refine_share",
              f"must be in [0, 1], got {self.scalar_refine_share}")
        check(0 < self.learning_rate < 1, "m0.learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        check(self.max_seconds > 0, "m0.max_seconds", f"must be > 0, got {self.max_seconds}")


@dataclass
class EvalConfig:
    """M0's quick checks in notebook 00: held-out math accuracy, refinement success, bio precision."""

    split: str = field(default="test", metadata={"help": "Held-out split to evaluate on: dev or test."})
    n_math: int = field(default=500, metadata={"help": "Math problems to evaluate (first n of the split)."})
    n_bios: int = field(default=60, metadata={"help": "Bio prompts to evaluate (first n of the split)."})
    max_new_tokens: int = field(default=160, metadata={"help": "Generation cap per response."})
    batch_size: int = field(default=100, metadata={"help": "Prompts per generate() call."})
    processes: int = field(default=1, metadata={
        "help": "Greedy evaluation processes on a CPU, one thread each (2 on a 2-core machine; notebooks 00, 03-05): "
                "the answers are the same for any value."})
    gsm8k_source: str | None = field(default=None, metadata={
        "help": "Notebook 05's math benchmark: None for the tiny world's held-out split, or GSM8K test for real "
                "runs: a local JSONL (the test file itself) or a Hub id (openai/gsm8k: its test split)."})
    gsm8k_train_source: str | None = field(default=None, metadata={
        "help": "Where the GSM8K few-shot exemplars come from: a local train JSONL, or a Hub id (its train split). "
                "None: gsm8k_source's train split when that is a Hub id. Shots never come from the test set."})
    gsm8k_k: int = field(default=0, metadata={"help": "Few-shot exemplars for GSM8K (8 for real chat models; the "
                                                      "tiny M0's 384-token context allows 0)."})
    n_refine: int | None = field(default=None, metadata={
        "help": "Notebook 00's refinement checks: M0 refines its first n wrong greedy answers and the first n of the "
                "problems with an injected wrong step (None: every one of the n_math)."})

    def __post_init__(self):
        check(self.split in ("dev", "test"), "eval.split", f"must be 'dev' or 'test', got {self.split!r}")
        check(self.n_refine is None or self.n_refine >= 1, "eval.n_refine",
              f"must be None (all) or >= 1, got {self.n_refine}")
        check(0 <= self.gsm8k_k <= 16, "eval.gsm8k_k", f"must be in [0, 16], got {self.gsm8k_k}")
        check_at_least(self, "eval", ("n_math", "max_new_tokens", "batch_size", "processes"), 1)
        check(self.n_bios >= 0, "eval.n_bios", f"must be >= 0 (0 in a real recipe: the bios are the tiny world's), "
                                               f"got {self.n_bios}")
        local_test = self.gsm8k_source is not None and not is_hub_dataset(self.gsm8k_source)
        check(not (local_test and self.gsm8k_k and self.gsm8k_train_source is None), "eval.gsm8k_train_source",
              f"is needed: eval.gsm8k_source {self.gsm8k_source!r} is a local file, the test set, and the "
              f"{self.gsm8k_k} few-shot exemplars must come from a train file")


@dataclass
class FeedbackConfig:
    """The fine-grained feedback model (notebook 01): which judge, its transport, consensus and reward weights."""

    judge: str = field(default="verifier", metadata={
        "help": "verifier (tiny world, exact), llm (judge_url, or judge_model in process), or learned (the trained "
                "judge at learned_judge, served by `transformers serve` on 127.0.0.1 for the process's lifetime)."})
    judge_model: str = field(default="data/tiny_world/m0",
                             metadata={"help": "LLM judge: local path or Hub id (local transport), or the served "
                                               "model name (HTTP transport)."})
    judge_url_env: str | None = field(default=None, metadata={
        "help": "Name of an environment variable holding the judge's base URL; read when the recipe loads, so a "
                "recipe can be shared without a host name in it. Overrides judge_url."})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL (e.g. "
                                                                   "http://127.0.0.1:8000/v1); None = local."})
    api_key_env: str = field(default="OPENAI_API_KEY",
                             metadata={"help": "Name of the env var holding the API key (never the key itself)."})
    timeout: float = field(default=60.0, metadata={"help": "Seconds per judge request (HTTP) before it counts as "
                                                           "failed and is retried."})
    max_retries: int = field(default=6, metadata={"help": "HTTP judge: retries of a failed request (server down, "
                                                          "timeout, 429, 5xx) before the run stops with an error "
                                                          "naming the URL; finished records stay in the store."})
    backoff: float = field(default=1.0, metadata={"help": "HTTP judge: seconds before the first retry; doubles "
                                                          "each retry (1, 2, 4, ... s)."})
    backoff_max: float = field(default=30.0, metadata={"help": "HTTP judge: longest wait between two retries."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Local LLM judge: run the Python code a Hub "
                                                                     "model ships (only for a model you trust)."})
    max_repairs: int = field(default=1, metadata={"help": "Re-asks after an unparseable judgement."})
    max_new_tokens: int = field(default=256, metadata={"help": "Judge output cap in tokens (max_tokens of an HTTP "
                                                               "judge's requests, max_new_tokens of a local one)."})
    consensus_k: int = field(default=1, metadata={"help": "Judge samples per response; median score per aspect."})
    concurrency: int = field(default=1, metadata={
        "help": "HTTP and learned judges: requests in flight at once (threads); the stored judgements are the same "
                "for any value. The learned judge is then served with continuous batching. A sampled consensus "
                "(consensus_k > 1) needs a server that seeds each request on its own (vLLM does; `transformers serve` "
                "seeds one global generator, so the learned judge allows it only with concurrency 1)."})
    weights: dict = field(default_factory=dict,
                          metadata={"help": "Aspect weights for the scalar reward, by aspect name (default 1)."})
    n_math: int = field(default=200, metadata={"help": "Notebook 01: dev math prompts to sample and judge."})
    n_bios: int = field(default=40, metadata={"help": "Notebook 01: dev bio prompts to sample and judge."})
    samples_per_prompt: int = field(default=3, metadata={"help": "Notebook 01: policy samples per prompt."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_response_tokens: int = field(default=160, metadata={"help": "Policy response cap."})
    n_llm_judged: int = field(default=6, metadata={"help": "Notebook 01: responses also judged by the LLM judge."})
    learned_judge: str | None = field(default=None, metadata={
        "help": "A trained judge LM (`rlrf-nb train-judge`'s output, judge_model.train_judge): notebook 01 "
                "serves it with `transformers serve` on 127.0.0.1 and measures it against the verifier. None: skip."})
    n_learned_judged: int = field(default=60, metadata={"help": "Notebook 01: responses the learned judge judges, "
                                                                "half math, half bios."})
    learned_consensus_k: int = field(default=3, metadata={"help": "Notebook 01: the learned judge's consensus of k "
                                                                  "samples, measured against its greedy judgement."})
    learned_max_new_tokens: int = field(default=768, metadata={"help": "The learned judge's output cap (bio "
                                                                       "critiques are long)."})

    def __post_init__(self):
        check(self.judge in ("verifier", "llm", "learned"), "feedback.judge",
              f"must be 'verifier', 'llm' or 'learned', got {self.judge!r}")
        check(self.judge != "learned" or bool(self.learned_judge), "feedback.learned_judge",
              "must name a trained judge (rlrf-nb train-judge's output) when feedback.judge is 'learned'")
        check(self.judge != "learned" or self.consensus_k == 1 or self.concurrency == 1, "feedback.concurrency",
              f"must be 1 for the learned judge's sampled consensus (consensus_k={self.consensus_k}), got "
              f"{self.concurrency}: `transformers serve` seeds one global generator per request, so concurrent "
              "sampled requests would draw different votes on every run")
        if self.judge_url_env:
            url = os.environ.get(self.judge_url_env)
            check(bool(url), "feedback.judge_url_env", f"names environment variable {self.judge_url_env!r}, which is "
                                                       "not set: export it to the judge server's base URL")
            check(url.startswith(("http://", "https://")), "feedback.judge_url_env",
                  f"${self.judge_url_env} must be an http(s) URL, got {url[:40]!r}")
            self.judge_url = url
        check(self.timeout > 0, "feedback.timeout", f"must be > 0, got {self.timeout}")
        check(self.backoff >= 0, "feedback.backoff", f"must be >= 0, got {self.backoff}")
        check(self.backoff_max >= self.backoff, "feedback.backoff_max",
              f"must be >= feedback.backoff ({self.backoff}), got {self.backoff_max}")
        check_at_least(self, "feedback", ("max_retries", "max_repairs", "n_math", "n_bios", "n_llm_judged",
                                          "n_learned_judged"), 0)
        check_at_least(self, "feedback", ("consensus_k", "concurrency", "samples_per_prompt", "max_new_tokens",
                                    "max_response_tokens", "learned_consensus_k", "learned_max_new_tokens"), 1)
        check(0 < self.temperature <= 5, "feedback.temperature", f"must be in (0, 5], got {self.temperature}")
        check(0 < self.top_p <= 1, "feedback.top_p", f"must be in (0, 1], got {self.top_p}")
        bad = {k: v for k, v in self.weights.items() if not isinstance(v, (int, float)) or v < 0}
        check(not bad, "feedback.weights", f"must map aspect names to numbers >= 0, got {bad}")


PRIORITIES = ("none", "variance", "low_best")
ONLINE_VARIANTS = ("grpo", "rloo", "grpo_reflect")
ROUND_VARIANTS = ("rlrf", "no_reflection", "scalar", "rs_sft", *ONLINE_VARIANTS)
PAIR_POLICIES = ("best_vs_worst", "refined_vs_original", "best_refined_vs_worst_sample", "no_reflection", "scalar",
                 "step_prefix")
VARIANT_LABELS = {"rlrf": "RLRF", "no_reflection": "no reflection", "scalar": "scalar reward", "rs_sft": "RS-SFT",
                  "grpo": "GRPO", "rloo": "RLOO", "grpo_reflect": "GRPO + reflection"}


def policy_rank(policy: str) -> int:
    """Sort key of a policy name in tables: M0, RLRF's rounds (``M<t>``), then each variant (``<label> M<t>``) in the
    order of :data:`VARIANT_LABELS`."""
    label = policy.rpartition(" ")[0]
    labels = list(VARIANT_LABELS.values())
    if not label:
        return 0 if policy == "M0" else 1
    return 1 + labels.index(label) if label in labels else 1 + len(labels)


@dataclass
class ReflectionConfig:
    """Fine-grained self-reflection search (paper §3.2, notebook 02). Defaults give the paper's budget of
    about 30 candidates per prompt: n + k*m = 10 + 4*5."""

    n_prompts: int = field(default=200, metadata={"help": "Math training (rl split) prompts to search on."})
    prompt_source: str | None = field(default=None, metadata={
        "help": "Where the math search prompts come from: None for the tiny world's rl split, or a GSM8K JSONL "
                "path / Hub id whose train split is used (real runs; the rounds take disjoint slices of it)."})
    n_bios: int = field(default=0, metadata={"help": "Bio training (rl split) prompts to search on as well."})
    n_samples: int = field(default=10, metadata={"help": "n: policy samples per prompt."})
    top_k: int = field(default=4, metadata={"help": "k: best candidates per prompt that get refined."})
    m_refinements: int = field(default=5, metadata={"help": "m: refinements per selected candidate."})
    max_rounds: int = field(default=1, metadata={"help": "Refinement rounds (stop-rule cap)."})
    threshold: int = field(default=5, metadata={"help": "Stop a prompt once a candidate has no aspect below this."})
    plateau: float = field(default=0.0, metadata={"help": "Stop a prompt when a round raises its best reward by "
                                                           "no more than this."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (samples and refinements)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_new_tokens: int = field(default=160, metadata={"help": "Response cap in tokens."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate() call."})
    processes: int = field(default=1, metadata={"help": "Sampling processes on a CPU, one thread each (2 on a "
                                                         "2-core machine); the samples are the same for any value."})
    priority: str = field(default="none", metadata={"help": "Order in which prompts get the refinement budget: "
                                                           "none (input order), variance (most varied sample "
                                                           "rewards first) or low_best (lowest best sample first)."})
    refine_budget: int = field(default=0, metadata={"help": "Cap on refinement generations over all rounds, spent "
                                                             "in priority order; 0 = no cap."})
    overall_score: bool = field(default=True, metadata={"help": "Also judge every candidate with one overall score "
                                                                 "(the scalar-reward ablation's input)."})
    backend: str = field(default="transformers", metadata={"help": "Sampling backend: transformers or vllm "
                                                                    "(GPU; imported only when chosen)."})

    def __post_init__(self):
        check(self.priority in PRIORITIES, "reflection.priority", f"must be one of {PRIORITIES}, got {self.priority!r}")
        check(self.backend in ("transformers", "vllm"), "reflection.backend",
              f"must be 'transformers' or 'vllm', got {self.backend!r}")
        check_at_least(self, "reflection", ("refine_budget", "n_bios", "max_rounds", "plateau"), 0)
        check_at_least(self, "reflection", ("n_prompts", "n_samples", "top_k", "m_refinements",
                                    "max_new_tokens", "batch_size", "processes"), 1)
        check(self.top_k <= self.n_samples, "reflection.top_k", f"must be <= n_samples, got {self.top_k}")
        check(1 <= self.threshold <= 10, "reflection.threshold", f"must be in [1, 10], got {self.threshold}")
        check(0 < self.temperature <= 5, "reflection.temperature", f"must be in (0, 5], got {self.temperature}")
        check(0 < self.top_p <= 1, "reflection.top_p", f"must be in (0, 1], got {self.top_p}")


@dataclass
class PairsConfig:
    """Preference pairs from the reflection pool (notebook 02): which pair policy feeds DPO, and the margin."""

    policy: str = field(default="best_vs_worst", metadata={"help": f"Pair policy, one of {PAIR_POLICIES}."})
    min_margin: float = field(default=0.0, metadata={"help": "Drop pairs whose reward gap is below this (a "
                                                              "right-over-wrong math pair always counts)."})
    gold_override: bool = field(default=True, metadata={
        "help": "A right final answer (math with a gold answer) outranks a wrong one whatever the judge says. "
                "false: the judge's reward alone ranks the candidates, so a loop with a learned judge measures "
                "that judge and not the gold answers."})
    per_prompt: int = field(default=1, metadata={"help": "Pairs per prompt for best_vs_worst, scalar and "
                                                         "no_reflection: the i-th best vs the i-th worst distinct "
                                                         "candidate, i < per_prompt."})
    decisions: str = field(default="decisions.jsonl", metadata={"help": "Human review decisions (accept, reject, "
                                                                         "swap, edit) in the run dir, honoured "
                                                                         "by every pair build."})
    right_chosen_only: bool = field(default=False, metadata={
        "help": "Keep only pairs whose chosen response has a right final answer (math with a gold answer; a chosen "
                "response without a gold answer, a bio, is kept). With dpo.loss_type's 'sft' term the chosen "
                "response is a training target, so otherwise a less-wrong solution is trained on as if right."})

    def __post_init__(self):
        check(self.policy in PAIR_POLICIES, "pairs.policy", f"must be one of {PAIR_POLICIES}, got {self.policy!r}")
        check(0 <= self.min_margin <= 1, "pairs.min_margin", f"must be in [0, 1], got {self.min_margin}")
        check(1 <= self.per_prompt <= 32, "pairs.per_prompt", f"must be in [1, 32], got {self.per_prompt}")
        check(self.gold_override or self.policy != "step_prefix", "pairs.policy",
              "step_prefix pairs by the verifier's steps; it cannot run with pairs.gold_override false (which "
              "measures a judge without the gold answers)")

    def build_kwargs(self) -> dict:
        """The keyword arguments of :func:`rlrf_nb.pairs.build_pairs` that this section sets (every pair build in
        the notebooks and the rounds passes them, so a new field reaches all of them)."""
        return {"min_margin": self.min_margin, "gold_override": self.gold_override, "per_prompt": self.per_prompt,
                "right_chosen_only": self.right_chosen_only}


PAIR_CUTS = ("none", "first_difference", "shared_prefix")
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DPOStageConfig:
    """Preference fine-tuning (notebook 03) through TRL: DPO with any of TRL's losses, or the rejection-sampling
    SFT baseline. Fields map onto TRL's ``DPOConfig`` / ``SFTConfig``; precision is chosen for the device."""

    method: str = field(default="dpo", metadata={"help": "dpo, or rs_sft: SFT on the best candidate per prompt "
                                                          "(rejection-sampling fine-tuning, the baseline)."})
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid", "sft"],
                                 metadata={"help": f"TRL DPO losses, combined with loss_weights; one of "
                                                   f"{DPO_LOSSES}. 'sft' adds an NLL term on the chosen response "
                                                   "(RPO, arXiv 2404.19733)."})
    loss_weights: list[float] | None = field(default=None, metadata={"help": "One weight per loss_type "
                                                                             "(default 1 each)."})
    beta: float = field(default=0.1, metadata={"help": "DPO beta: strength of the pull towards the reference."})
    learning_rate: float = field(default=3e-5, metadata={"help": "Peak learning rate (linear decay)."})
    dpo_learning_rate: float | None = field(default=None, metadata={
        "help": "Peak learning rate of DPO (method dpo, notebook 03's DPO variants and its gold-DPO control) when it "
                "differs from learning_rate, which RS-SFT and gold SFT then use: as TRL's SFTConfig and DPOConfig, "
                "supervised and preference training take their own step sizes. Unset: learning_rate for both. When "
                "it is set, an override of learning_rate alone does not change DPO's rate."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the pairs."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with linear warm-up."})
    max_length: int = field(default=384, metadata={"help": "Prompt + completion token cap; the pre-flight check "
                                                            "fails if a pair would be truncated."})
    reference: str = field(default="previous", metadata={"help": "Reference policy in round t: previous "
                                                                  "(pi_{t-1}) or initial (pi_0)."})
    precompute_ref: bool = field(default=False, metadata={"help": "Precompute reference log-probs once instead "
                                                                   "of keeping a reference copy in memory."})
    cache_ref: bool = field(default=True, metadata={"help": "Keep reference log-probs in the run store, one record "
                                                            "per (reference weights, tokenized pair, max_length): "
                                                            "reruns and other stages on the same pairs reuse them "
                                                            "and load no reference model (train_cached)."})
    group_by_length: bool = field(default=True, metadata={"help": "Batch pairs of similar token length "
                                                                   "(transformers' LengthGroupedSampler): less "
                                                                   "padding per step."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute activations in the backward pass (saves memory, costs about a third more compute). "
                "Default: on with a GPU (TRL's default), off on CPU."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft); the reference is then the "
                                                         "adapter-disabled base. Default for real models."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    logging_steps: int = field(default=5, metadata={"help": "Metrics are logged every this many steps."})
    seed: int = field(default=0, metadata={"help": "Seed of data order and init of new parameters."})
    pair_cut: str = field(default="none", metadata={
        "help": "none: DPO sees whole responses. first_difference: each pair's chosen and rejected are cut right "
                "after the first token where they differ (step-level pairs: the contrast is the step where they "
                "part, not the correct arithmetic that follows a wrong step, and no end of turn is trained). "
                "shared_prefix: the tokens chosen and rejected share at their start move into the prompt, so no "
                "loss term (APO-zero's, the NLL term's) pushes the shared right steps up or down; both keep the rest."})

    control_prompts: int | None = field(default=None, metadata={
        "help": "The positive controls' gold budget (notebook 03): unset, the search's own math prompts; N, the first "
                "N math prompts of the search's source, each gold DPO pair against one T = 1.0 sample of the policy "
                "that is wrong. Not a training setting: it is in no checkpoint key but the controls' data."})

    def __post_init__(self):
        check(self.pair_cut in PAIR_CUTS, "dpo.pair_cut", f"must be one of {PAIR_CUTS}, got {self.pair_cut!r}")
        check(self.method in ("dpo", "rs_sft"), "dpo.method", f"must be 'dpo' or 'rs_sft', got {self.method!r}")
        check(bool(self.loss_type) and all(t in DPO_LOSSES for t in self.loss_type), "dpo.loss_type",
              f"must be a non-empty list of {DPO_LOSSES}, got {self.loss_type!r}")
        check(self.loss_weights is None or len(self.loss_weights) == len(self.loss_type), "dpo.loss_weights",
              f"needs one weight per loss_type ({len(self.loss_type)}), got {self.loss_weights!r}")
        check(self.beta > 0, "dpo.beta", f"must be > 0, got {self.beta}")
        check(0 < self.learning_rate < 1, "dpo.learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        check(self.dpo_learning_rate is None or 0 < self.dpo_learning_rate < 1, "dpo.dpo_learning_rate",
              f"must be in (0, 1) or unset, got {self.dpo_learning_rate}")
        check(self.epochs > 0, "dpo.epochs", f"must be > 0, got {self.epochs}")
        check(self.control_prompts is None or self.control_prompts >= 1, "dpo.control_prompts",
              f"must be unset or >= 1, got {self.control_prompts}")
        check(0 <= self.warmup_ratio < 1, "dpo.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        check(self.reference in ("previous", "initial"), "dpo.reference",
              f"must be 'previous' or 'initial', got {self.reference!r}")
        check_at_least(self, "dpo", ("batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha",
                                     "logging_steps"), 1)
        check(0 <= self.lora_dropout < 1, "dpo.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")


@dataclass
class OnlineRLConfig:
    """Online RL round variants (issue 20; ``rounds.variants`` grpo / rloo / grpo_reflect, :mod:`rlrf_nb.online_rl`),
    rewarded by the judge's weighted per-aspect score. Fields map onto TRL's ``GRPOConfig`` / ``RLOOConfig``; defaults
    are TRL's except where the help says why. Round t's seed is ``run.seed + t``, like its search's."""

    num_generations: int = field(default=8, metadata={"help": "G: completions sampled per prompt, the group whose "
                                                               "mean (GRPO) or leave-one-out mean (RLOO) is the "
                                                               "baseline (TRL's default)."})
    batch_size: int = field(default=8, metadata={"help": "Completions per device per step (TRL's "
                                                         "per_device_train_batch_size); batch_size * grad_accum must "
                                                         "be a multiple of num_generations (whole groups)."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps (TRL: also the steps per "
                                                         "generation batch)."})
    max_completion_length: int = field(default=160, metadata={"help": "Completion cap in tokens (the tiny world's "
                                                                       "response cap; TRL's default is 512)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the groups."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Constant learning rate (TRL's default)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the round's prompts (unless max_steps)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps per round; -1: epochs decide."})
    kl_coef: float | None = field(default=None, metadata={
        "help": "TRL's beta: KL coefficient towards the round's starting policy; None: TRL's default (GRPO 0.0, no "
                "reference model; RLOO 0.05). Not called beta, so that a sweep's `beta` stays dpo.beta."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft), merged after the round."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute activations in the backward pass; default: on with a GPU, off on CPU."})
    logging_steps: int = field(default=1, metadata={"help": "Metrics are logged every this many steps."})
    vllm: bool = field(default=False, metadata={
        "help": "On a GPU, TRL samples the groups with vLLM in colocate mode (TRL's use_vllm); needs CUDA and vllm. "
                "grpo_reflect samples through its own rollout and does not use it."})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={
        "help": "The share of GPU memory vLLM may take beside the trained policy (TRL's colocate setting)."})

    def __post_init__(self):
        check(0 < self.vllm_gpu_memory_utilization <= 1, "online_rl.vllm_gpu_memory_utilization",
              f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        check(self.num_generations >= 2, "online_rl.num_generations",
              f"must be >= 2 (a group needs a baseline), got {self.num_generations}")
        check_at_least(self, "online_rl", ("batch_size", "grad_accum", "max_completion_length", "lora_r",
                                           "lora_alpha", "logging_steps"), 1)
        check(self.batch_size * self.grad_accum % self.num_generations == 0, "online_rl.batch_size",
              f"* online_rl.grad_accum ({self.batch_size} * {self.grad_accum}) must be a multiple of "
              f"online_rl.num_generations ({self.num_generations}): TRL samples whole groups")
        check(0 < self.temperature <= 5, "online_rl.temperature", f"must be in (0, 5], got {self.temperature}")
        check(0 < self.learning_rate < 1, "online_rl.learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        check(self.epochs > 0, "online_rl.epochs", f"must be > 0, got {self.epochs}")
        check(self.max_steps == -1 or self.max_steps >= 1, "online_rl.max_steps",
              f"must be -1 (epochs decide) or >= 1, got {self.max_steps}")
        check(self.kl_coef is None or self.kl_coef >= 0, "online_rl.kl_coef",
              f"must be >= 0 or None, got {self.kl_coef}")
        check(0 <= self.lora_dropout < 1, "online_rl.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")


@dataclass
class RoundsConfig:
    """Iterated RLRF (notebook 04): M0 -> M1 -> M2, each round searching fresh prompts with the current policy."""

    n_rounds: int = field(default=2, metadata={"help": "Rounds of search + pairs + DPO (M0 -> M<n>)."})
    prompts_per_round: int = field(default=200, metadata={"help": "Fresh math rl prompts per round (disjoint "
                                                                   "slices of the rl split)."})
    bios_per_round: int = field(default=0, metadata={"help": "Fresh bio rl prompts per round."})
    start_from: str = field(default="previous", metadata={"help": "Round t trains from previous (M_{t-1}) or "
                                                                   "initial (M0)."})
    carry_over: bool = field(default=False, metadata={"help": "Also train on the pairs of earlier rounds."})
    eval_n_math: int = field(default=200, metadata={"help": "Held-out dev math prompts evaluated after each "
                                                             "round."})
    eval_n_bios: int = field(default=40, metadata={"help": "Held-out dev bio prompts evaluated after each round."})
    variants: list[str] = field(default_factory=lambda: ["rlrf"], metadata={
        "help": "Round loops to run side by side from the same M0: rlrf (the recipe's pair policy and method), "
                "no_reflection (samples only, no refinement), scalar (pairs by one overall score), rs_sft "
                "(SFT on the best candidates), grpo / rloo (online RL on the judge's reward through TRL, no search; "
                "section online_rl), grpo_reflect (GRPO whose groups are half drafts, half refinements of the drafts "
                "from their critiques). Round 1's search is shared where the searcher is the same."})

    def __post_init__(self):
        check_at_least(self, "rounds", ("n_rounds", "prompts_per_round", "eval_n_math"), 1)
        bad = [v for v in self.variants if v not in ROUND_VARIANTS]
        check(not bad and len(set(self.variants)) == len(self.variants) and "rlrf" in self.variants,
              "rounds.variants", f"must be distinct names from {ROUND_VARIANTS} including 'rlrf', got {self.variants}")
        check_at_least(self, "rounds", ("bios_per_round", "eval_n_bios"), 0)
        check(self.start_from in ("previous", "initial"), "rounds.start_from",
              f"must be 'previous' or 'initial', got {self.start_from!r}")


@dataclass
class DiagnoseConfig:
    """The organism's properties (``rlrf-nb diagnose``, notebook 00): how many problems, samples and refinements."""

    split: str = field(default="test", metadata={"help": "Held-out split to diagnose on: dev or test."})
    n_math: int = field(default=500, metadata={"help": "Math problems (first n of the split)."})
    n_bios: int = field(default=60, metadata={"help": "Bio prompts (first n of the split)."})
    k: int = field(default=16, metadata={"help": "Samples per problem for pass@k and maj@k."})
    m: int = field(default=5, metadata={"help": "Refinements (and fresh samples) per greedy-wrong problem."})
    temperatures: list[float] = field(default_factory=lambda: [1.0, 0.7],
                                      metadata={"help": "Sampling temperatures (the first one states the targets)."})
    max_new_tokens: int = field(default=160, metadata={"help": "Response cap in tokens."})
    batch_size: int = field(default=256, metadata={"help": "Rows per generate() call."})
    processes: int = field(default=1, metadata={"help": "Generation processes on a CPU, one thread each (2 on a "
                                                         "2-core machine); the texts are the same for any value."})

    def __post_init__(self):
        check(self.split in ("dev", "test"), "diagnose.split", f"must be 'dev' or 'test', got {self.split!r}")
        check_at_least(self, "diagnose", ("n_math", "k", "m", "max_new_tokens", "batch_size", "processes"), 1)
        check(self.n_bios >= 0, "diagnose.n_bios", f"must be >= 0, got {self.n_bios}")
        check(bool(self.temperatures) and all(0 < t <= 5 for t in self.temperatures), "diagnose.temperatures",
              f"must be a non-empty list of temperatures in (0, 5], got {self.temperatures}")


@dataclass
class JudgeTrainConfig:
    """The trained feedback model (issue 19; ``rlrf-nb train-judge``, :func:`rlrf_nb.judge_model.judge_stage`): a
    judge LM fine-tuned with TRL's ``SFTTrainer`` on a teacher's stored per-aspect judgements, in the exact JSON that
    ``LLMJudge`` parses, then served by ``transformers serve`` and measured on held-out prompts."""

    base: str = field(default="data/tiny_world_v2/m0", metadata={
        "help": "The judge's starting model: a local path or a Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct with lora)."})
    teacher_run: str | None = field(default=None, metadata={
        "help": "Run directory holding the teacher's judgements (e.g. notebook 02's search, judged by the verifier "
                "or by a stronger judge at feedback.judge_url); None: this run."})
    teacher_artifacts: list[str] = field(default_factory=lambda: ["feedback.jsonl"], metadata={
        "help": "The judgement artifacts to learn from, in teacher_run."})
    teacher_judge: str | None = field(default=None, metadata={
        "help": "Keep only records whose judge_id starts with this (needed when the artifacts hold several judges)."})
    held_out_share: float = field(default=0.2, metadata={"help": "Share of prompts held out for the report."})
    rows: int = field(default=0, metadata={"help": "Training rows: a seeded sample of the train split; 0 = all."})
    balance: int = field(default=0, metadata={
        "help": "If > 0, train on this many rows per (task, teacher score) group instead (the teacher's scores are "
                "skewed; on the natural mix a small judge learns the majority score)."})
    phrases: bool = field(default=False, metadata={
        "help": "Give each fixed line of the judge prompt one token (for a judge whose context cannot hold the "
                "~3,000-token prompt: the tiny world's)."})
    worked: bool = field(default=False, metadata={
        "help": "Tiny world: math logic critiques show each step's check before the first wrong one "
                "(judge_model.worked_critique)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (linear decay)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training rows."})
    batch_size: int = field(default=8, metadata={"help": "Rows per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps with linear warm-up."})
    max_length: int = field(default=0, metadata={"help": "Prompt + completion token cap; 0 = the longest row."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft), merged before saving."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    seed: int = field(default=0, metadata={"help": "Seed of the row draw and of training."})
    n_eval: int = field(default=200, metadata={"help": "Held-out rows judged through the served judge (a seeded "
                                                        "sample: the teacher's natural mix of scores)."})
    eval_balance: int = field(default=0, metadata={
        "help": "Also judge up to this many held-out rows per (task, teacher score) group: the report's "
                "'stratified' part, where rare scores count as much as common ones."})
    max_new_tokens: int = field(default=768, metadata={"help": "The judge's output cap when measured."})
    logging_steps: int = field(default=10, metadata={"help": "Metrics are logged every this many steps."})

    def __post_init__(self):
        check(0 <= self.held_out_share < 1, "judge_train.held_out_share",
              f"must be in [0, 1), got {self.held_out_share}")
        check(bool(self.teacher_artifacts), "judge_train.teacher_artifacts", "must name at least one artifact")
        check(0 < self.learning_rate < 1, "judge_train.learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        check(self.epochs > 0, "judge_train.epochs", f"must be > 0, got {self.epochs}")
        check(0 <= self.warmup_ratio < 1, "judge_train.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        check(0 <= self.lora_dropout < 1, "judge_train.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        check_at_least(self, "judge_train", ("rows", "balance", "max_length", "n_eval", "eval_balance"), 0)
        check_at_least(self, "judge_train", ("batch_size", "grad_accum", "lora_r", "lora_alpha", "max_new_tokens",
                                             "logging_steps"), 1)

    def stage(self):
        """The optimiser and LoRA fields as the :class:`DPOStageConfig` that ``training.train_rs_sft`` reads."""
        return DPOStageConfig(method="rs_sft", learning_rate=self.learning_rate, epochs=self.epochs,
                              batch_size=self.batch_size, grad_accum=self.grad_accum, warmup_ratio=self.warmup_ratio,
                              max_length=max(self.max_length, 1), lora=self.lora, lora_r=self.lora_r,
                              lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                              logging_steps=self.logging_steps, seed=self.seed)


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "world": WorldConfig,
    "m0": M0Config,
    "eval": EvalConfig,
    "feedback": FeedbackConfig,
    "reflection": ReflectionConfig,
    "pairs": PairsConfig,
    "dpo": DPOStageConfig,
    "rounds": RoundsConfig,
    "online_rl": OnlineRLConfig,
    "diagnose": DiagnoseConfig,
    "judge_train": JudgeTrainConfig,
}


# -------------------------------------------------------------------------- The recipe: one config instance per section


class Recipe(types.SimpleNamespace):
    """One config per section of :data:`SECTIONS`, as attributes (``recipe.run.seed``); missing ones get defaults.
    Equality and ``Recipe(run=..., ...)`` repr are ``SimpleNamespace``'s."""

    def __init__(self, **sections: object):
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; expected some of {list(SECTIONS)}")
        super().__init__(**{name: sections[name] if name in sections else cls() for name, cls in SECTIONS.items()})

    @classmethod
    def from_dict(cls, d: object, source: str = "<dict>") -> Recipe:
        """Build and validate a recipe from ``{section: {key: value}}``; errors start with ``source``."""
        if d is None:  # an empty YAML file: all defaults
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of sections at the top level, "
                              f"got {type(d).__name__}")
        built = {}
        for section, values in d.items():
            if section not in SECTIONS:
                raise ConfigError(f"{source}: unknown section {section!r}{_suggest(section, SECTIONS)}")
            built[section] = _build_section(section, values, source)
        recipe = cls(**built)
        if recipe.m0.train_world:  # the training world must itself be a valid world section
            try:
                dataclasses.replace(recipe.world, **recipe.m0.train_world)
            except (ConfigError, TypeError) as e:
                raise ConfigError(f"{source}: m0.train_world {recipe.m0.train_world!r} gives no valid world: "
                                  f"{e}") from e
        if "rs_sft" in recipe.rounds.variants and recipe.dpo.method == "rs_sft":
            raise ConfigError(f"{source}: rounds.variants lists rs_sft, but dpo.method is rs_sft: RLRF's own step is "
                              "RS-SFT, so that baseline would be RLRF's rounds again; drop it from rounds.variants")
        return recipe


def _suggest(word: object, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build_section(section: str, values: object, source: str) -> object:
    """Type-check ``values`` against the section's dataclass and construct it."""
    cls = SECTIONS[section]
    if values is None:  # `world:` with nothing under it
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)  # every field's annotation
    try:
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"unknown key '{section}.{key}'{_suggest(key, hints)}")
            kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
        return cls(**kwargs)
    except ConfigError as e:  # an unknown key, a type, or a range check in __post_init__; the file goes first
        raise ConfigError(f"{source}: {e}") from None


def _coerce(value: object, tp: object, name: str) -> object:
    """Return ``value`` checked against annotation ``tp`` (int -> float is the only conversion)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(value, arg, name)
                except ConfigError:
                    pass
        ok = False
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)] if args else value
        ok = False
    elif tp is dict or origin is dict:
        ok = isinstance(value, dict)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads `1e-3` as text: accept scientific notation for float fields.
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            return float(value)
        ok = False
    elif tp is int:  # bool is an int subclass, but `seed: true` is a mistake
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp in (str, bool):
        ok = isinstance(value, tp)
    else:
        raise TypeError(f"field {name!r}: unsupported annotation {tp!r} in a config dataclass")
    if not ok:
        expected = tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else tp
        raise ConfigError(f"field {name!r} expects {expected}, got {type(value).__name__} ({value!r})")
    return value


# ------------------------------------------------------------------------------------------------ Loading and overrides


def parse_override(text: str) -> tuple[str, str]:
    """Split a CLI override ``"run.seed=3"`` into ``("run.seed", "3")`` (:class:`ConfigError` without ``=`` or a key);
    the value stays text, which :func:`load_recipe` parses as YAML against the field's type."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. run.seed=3")
    return key.strip(), value.strip()


def _override_value(key: str, value: object, source: str) -> object:
    """Check that dotted ``key`` names a field; YAML-parse a text ``value`` (``"3"`` -> 3)."""
    section, _, name = key.partition(".")
    where = f"{source}: override {key!r}"
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section {section!r}{_suggest(section, SECTIONS)}")
    hints = typing.get_type_hints(SECTIONS[section])
    if name not in hints:
        raise ConfigError(f"{where}: unknown key '{key}'{_suggest(name, hints)}")
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # leave it text; the type check reports it if the field is not a str
    # A str field (or str | None, not list[str]) keeps the text as typed: run.name=007 stays "007", not the int 7.
    tp = hints[name]
    if parsed is not None and not isinstance(parsed, str) and (
            tp is str or (typing.get_origin(tp) in (types.UnionType, typing.Union) and str in typing.get_args(tp))):
        return value
    return parsed


def load_recipe(path: str | os.PathLike, overrides: dict[str, object] | None = None) -> Recipe:
    """Load and validate a YAML recipe, then apply dotted ``overrides`` like ``{"run.seed": 3}``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {e.object[e.start]:#04x})") from None
    raw = {} if raw is None else raw
    source = str(path)
    if overrides and isinstance(raw, dict):  # else from_dict reports the bad top level
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            value = _override_value(key, value, source)
            if raw.get(section) is None:
                raw[section] = {}
            if isinstance(raw[section], dict):  # else from_dict reports the bad section
                raw[section][name] = value
        source = f"{path} (with overrides {', '.join(overrides)})"
    return Recipe.from_dict(raw, source=source)


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain ``{section: {key: value}}`` of every section (YAML- and JSON-safe)."""
    return {name: dataclasses.asdict(getattr(recipe, name)) for name in SECTIONS}
