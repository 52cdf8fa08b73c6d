"""The M0 policy: a BPE tokenizer with a chat template, a small Llama, pre-training on CPU, and loading. M0 is a real
``transformers`` causal LM, so every later stage runs the same code path as a Hub instruct model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math as pymath
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlrf_nb.config import RunConfig
from rlrf_nb.store import content_key

# Trainer and its friends are imported inside pretrain(): they pull in accelerate and datasets (about 4 s), which
# every process that only loads and samples a policy (the stages, the judge, a killed-and-rerun step) would pay.

log = logging.getLogger(__name__)

SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

# The generation markers let transformers/TRL build assistant-only loss masks
# (``return_assistant_tokens_mask``); the EOS closes every turn, so generation stops there.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# World v2's place-value digit tokens, after Abacus embeddings (McLeish et al., 2024): the normalizer puts a mark of
# the digit's place in its number before every digit (ones, tens, hundreds, thousands and up), so "the ones digit of
# the first operand" is found by content, not by counting positions; the decoder drops the marks, so text in and text
# out are the kit's plain format. Built from stock `tokenizers` parts, it saves and loads as any fast tokenizer.
PLACE_MARKS = "\u2080\u2081\u2082\u2083"
# Applied in order, each rule reads the marks the previous ones wrote: the last digit of a number, then the digit
# before a ones mark, before a tens mark, and every digit left of a hundreds mark. Each rule rewrites a digit into
# mark + digit (one rule per digit value): an empty-width insertion at the start of a text panics in `tokenizers`.
_PLACE_RULES = [(r"(?![0-9\u2080-\u2083])", 0), (r"(?=\u2080[0-9])", 1), (r"(?=\u2081[0-9])", 2),
                (r"(?=[0-9\u2083]*\u2082)", 3)]


def build_tokenizer(texts: list[str], vocab_size: int, place_tags: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; digits are split one per token so arithmetic is learnable. With
    ``place_tags`` (world v2) each digit becomes one token tagged with its place (:data:`PLACE_MARKS`)."""
    tok = Tokenizer(models.BPE())
    if place_tags:
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(f"{d}{ahead}"), PLACE_MARKS[p] + str(d))
                                               for ahead, p in _PLACE_RULES for d in range(10)])
        digit = pre_tokenizers.Split(Regex(f"[{PLACE_MARKS}][0-9]"), behavior="isolated")
        tok.decoder = decoders.Sequence([decoders.ByteLevel()] + [decoders.Replace(m, "") for m in PLACE_MARKS])
    else:
        digit = pre_tokenizers.Digits(individual_digits=True)
        tok.decoder = decoders.ByteLevel()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        digit, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    specials = list(SPECIAL.values()) + ROLE_TOKENS
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL, additional_special_tokens=ROLE_TOKENS)
    hf.chat_template = CHAT_TEMPLATE
    hf.model_max_length = 1024
    return hf


def build_model(tokenizer, cfg) -> LlamaForCausalLM:
    """A small Llama (an ``M0Config``) sized to the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_length, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tokenize_item(item: dict, tokenizer, max_length: int, prompt_loss: bool = True) -> dict | None:
    """Token ids and labels for one mix item, or None when longer than ``max_length``. With ``prompt_loss`` False chat
    items train only on assistant turns (the prompt's labels are -100; plain text always trains on every token); an item
    with ``"mask_prompt": True`` (a prompt holding a deliberately flawed draft) never trains on its prompt, which would
    teach wrong arithmetic."""
    prompt_loss = prompt_loss and not item.get("mask_prompt", False)
    if "messages" in item:
        enc = tokenizer.apply_chat_template(item["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
        labels = [t if (m or prompt_loss) else -100 for t, m in zip(ids, mask)]
    else:
        ids = [tokenizer.bos_token_id] + tokenizer(item["text"], add_special_tokens=False)["input_ids"]
        ids.append(tokenizer.eos_token_id)
        labels = list(ids)
    if len(ids) > max_length:
        return None
    if item.get("draft"):  # an own-draft refinement: the lines the gold solution shares with the draft carry no loss
        target, draft = item["messages"][1]["content"].split("\n"), item["draft"].split("\n")
        k = next((i for i, (a, b) in enumerate(zip(target, draft)) if a != b), min(len(target), len(draft)))
        if k:
            kept = len(tokenizer("\n".join(target[:k]), add_special_tokens=False)["input_ids"]) - 1  # one spare
            first = next(i for i, lab in enumerate(labels) if lab != -100)
            labels = [-100 if first <= i < first + kept else lab for i, lab in enumerate(labels)]
    return {"input_ids": ids, "labels": labels}


def _time_budget(seconds: float):
    """A ``TrainerCallback`` that notes (``.hit``) when training runs past ``seconds`` of wall time. It never stops
    training: a wall-clock cap would train fewer steps on a loaded machine than on an idle one, and so another M0
    from the same recipe and seed (issue 15, E)."""
    from transformers import TrainerCallback

    class _TimeBudget(TrainerCallback):
        def __init__(self):
            self.seconds, self.t0, self.hit = seconds, None, False

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            if not self.hit and time.monotonic() - self.t0 > self.seconds:
                self.hit = True
                log.warning("pre-training has run past m0.max_seconds=%.0f s at step %d; it continues to the end of "
                            "its schedule (the same M0 on any machine)", self.seconds, state.global_step)

    return _TimeBudget()


def pretrain(model, tokenizer, items: list[dict], cfg, output_dir: str | Path) -> dict:
    """Train ``model`` on the mix with ``transformers.Trainer`` on CPU (fp32). Returns a summary with the
    loss history. The schedule is cosine over the whole mix and always runs to its end; ``max_seconds`` only
    warns when it is exceeded."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    rows = [r for r in (tokenize_item(it, tokenizer, cfg.max_length, cfg.prompt_loss) for it in items) if r is not None]
    n_skipped = len(items) - len(rows)
    ds = Dataset.from_list(rows)
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    log.info("pre-training on %d sequences, %d tokens (%d skipped as longer than %d)", len(rows), n_tokens,
             n_skipped, cfg.max_length)
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, adam_beta2=cfg.adam_beta2,
        lr_scheduler_type="cosine_with_min_lr" if cfg.min_lr_rate else "cosine",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_rate} if cfg.min_lr_rate else {},
        weight_decay=0.01, logging_steps=cfg.logging_steps, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, fp16=False, seed=cfg.seed, data_seed=cfg.seed,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, disable_tqdm=False,
    )
    budget = _time_budget(cfg.max_seconds)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[budget],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    t0 = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - t0

    history = [h for h in trainer.state.log_history if "loss" in h]
    return {"seconds": round(seconds, 1), "tokens": n_tokens, "sequences": len(rows), "skipped": n_skipped,
            "tokens_per_s": round(n_tokens * min(1.0, trainer.state.epoch / cfg.epochs) * cfg.epochs / seconds, 1),
            "steps": trainer.state.global_step, "over_time_budget": budget.hit,
            "final_loss": history[-1]["loss"] if history else pymath.nan, "history": history}


def save_policy(model, tokenizer, path: str | Path, train_summary: dict | None = None) -> Path:
    """``save_pretrained`` (safetensors) for model and tokenizer, plus the training log beside them."""
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    if train_summary is not None:
        (path / "training_log.json").write_text(json.dumps(train_summary, indent=1))
    return path


@dataclass(frozen=True)
class Placement:
    """Where policies sample, are evaluated and train, and in which precision: one choice per run
    (:func:`placement`), used by every stage that loads a policy and by the trainers' arguments."""

    device: str  # "cuda" or "cpu"
    dtype: torch.dtype  # the weights' precision for sampling and evaluation

    @property
    def train_dtype(self) -> torch.dtype:
        """Weights for training: bf16 stays bf16 (TRL trains bf16 models as loaded); fp16 trains as fp32 weights
        under fp16 autocast (fp16 weights cannot be trained with a gradient scaler)."""
        return torch.float32 if self.dtype == torch.float16 else self.dtype

    def trainer_args(self) -> dict:
        """``TrainingArguments`` precision for TRL's ``DPOConfig`` / ``SFTConfig``: ``use_cpu`` with fp32 on CPU
        (TRL's bf16 default fails there, and bf16 on CPU is ~6x slower), bf16 or fp16 mixed precision on a GPU."""
        if self.device == "cpu":
            return {"use_cpu": True, "bf16": self.dtype == torch.bfloat16, "fp16": False}
        return {"bf16": self.dtype == torch.bfloat16, "fp16": self.dtype == torch.float16}

    def describe(self) -> str:
        return f"{self.device}, {str(self.dtype).removeprefix('torch.')}"


def placement(run_cfg: RunConfig | None = None) -> Placement:
    """The device and precision of a run, from ``run.device`` and ``run.dtype`` (``auto``: cuda with bf16 on a GPU
    that supports it, fp16 on an older GPU, fp32 on CPU). The one place this is decided: sampling, evaluation
    (:func:`load_policy`'s ``place``) and training (:meth:`Placement.trainer_args`) follow it."""
    run_cfg = run_cfg or RunConfig()
    device, dtype = run_cfg.device, run_cfg.dtype
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device is 'cuda' but torch sees no GPU (torch.cuda.is_available() is False)")
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if device == "cuda" else "float32"
    if device == "cpu" and dtype != "float32":
        log.warning("run.dtype %s on CPU: slower than float32 there (about 6x for bf16)", dtype)
    return Placement(device, getattr(torch, dtype))


def load_policy(name_or_path: str | Path, *, trust_remote_code: bool = False, dtype=torch.float32,
                place: Placement | None = None, train: bool = False):
    """Load a policy and tokenizer from a local path or a Hub id, safetensors only, in ``place``'s precision and device
    (``train``: its training precision) or on the CPU in ``dtype``. A path that is neither a directory nor an
    ``owner/name`` id raises FileNotFoundError naming it, instead of a confusing Hub lookup.
    """
    s = str(name_or_path)
    if not Path(s).expanduser().is_dir() and not is_hub_id(s):
        raise FileNotFoundError(f"checkpoint path '{s}' is not a directory, and not a Hub id (owner/name)")
    if place is not None:
        dtype = place.train_dtype if train else place.dtype
    tokenizer = AutoTokenizer.from_pretrained(s, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(s, trust_remote_code=trust_remote_code, use_safetensors=True,
                                                 dtype=dtype)
    if place is not None:
        model.to(place.device)
    model.eval()
    return model, tokenizer


def is_hub_id(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a Hub model (``owner/name``) rather than a local directory."""
    s = str(name_or_path)
    return not Path(s).expanduser().is_dir() and not s.startswith((".", "/", "~")) and s.count("/") == 1 \
        and not Path(s).exists()


def hub_revision(repo_id: str) -> tuple[str, Path]:
    """``(commit hash, snapshot directory)`` that ``repo_id`` resolves to in the local Hugging Face cache
    (``$HF_HUB_CACHE``: ``models--owner--name/refs/main`` -> ``snapshots/<commit>``), read without the network; the
    model was downloaded there when it was first loaded. Online and not yet cached, its config is downloaded
    first. Raises FileNotFoundError naming the id and the cache when it cannot be resolved."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"model {repo_id!r} is not in the local Hugging Face cache "
                                    f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: load it once online "
                                    "(or point HF_HUB_CACHE at a cache that has it)")
        found = hf_hub_download(repo_id, "config.json")
    snapshot = Path(found).parent
    return snapshot.name, snapshot


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(name_or_path: str | Path) -> str:
    """16 hex chars that identify a model's weights, in every store key that depends on a model: for a local directory
    the sha256 of its ``*.safetensors``; for a Hub id the id, its cached commit (:func:`hub_revision`) and its
    ``config.json`` (the commit pins the weights without reading gigabytes). Two models, or two revisions of one, never
    share records, checkpoints or reference log-probs. A directory without ``*.safetensors`` is a FileNotFoundError;
    its hash is cached per process by file path, size and mtime.
    """
    s = str(name_or_path)
    if is_hub_id(s):
        revision, snapshot = hub_revision(s)
        config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
        return content_key({"hub_id": s, "revision": revision, "config": config})
    files = sorted(Path(s).expanduser().glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"model '{s}' has no *.safetensors weights to fingerprint (and is not a Hub id)")
    stamp = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _FINGERPRINTS:  # the same weights are fingerprinted by several stages of one process
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        _FINGERPRINTS[stamp] = h.hexdigest()[:16]
    return _FINGERPRINTS[stamp]


def training_log(path: str | Path) -> dict | None:
    p = Path(path) / "training_log.json"
    return json.loads(p.read_text()) if p.exists() else None
